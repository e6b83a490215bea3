"""The package's layering and its extension points, read from its source and held against
docs/architecture.md: no import cycle anywhere, each part imports only what the doc's table lets
it, only the command-line apps import Hydra, no private name crosses a subpackage, no module
outside the adapters names a model component, no module or function grows past its size limit,
and every registered family, benchmark, method and edge set has the files the doc's extension
table names. Every import counts, including those inside functions: a lazy import still ties two
modules together."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "layerprobe"
DOC = ROOT / "docs" / "architecture.md"


def _table(heading: str) -> list[list[str]]:
    """The rows (cells) of the first table under ``## heading`` in docs/architecture.md."""
    section = DOC.read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]  # after header, rule


def _allowed() -> dict[str, set[str]]:
    """What each part may import, from the doc's subpackage table."""
    out = {}
    for package, _, may in _table("Subpackages"):
        name = re.sub(r"`|/|\.py", "", package)
        out[name] = {"*"} if may == "anything" else set() if may == "nothing" else set(re.findall(r"`(\w+)`", may))
    return out


ALLOWED = _allowed()


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # "from pkg import mod" imports the module pkg.mod when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t == "layerprobe" or t.startswith("layerprobe."))
    return found - {name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_cycle(graph):
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt in graph and not state.get(nxt):
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if not state.get(module):
            visit(module, [module])


def test_each_part_imports_only_the_layers_below_it(graph):
    wrong = []
    for module, targets in sorted(graph.items()):
        part = _part(module)
        if part == "" or "*" in ALLOWED.get(part, set()):
            continue
        assert part in ALLOWED, f"{module}: part {part!r} has no entry in the layering table"
        for target in sorted(targets):
            other = _part(target)
            if other and other != part and other not in ALLOWED[part]:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "layering violated:\n" + "\n".join(wrong)


def test_only_the_cli_imports_hydra():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "cli" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] in ("hydra", "omegaconf") for n in names):
                offenders.append(str(path.relative_to(PACKAGE.parent)))
    assert not offenders, f"Hydra imported outside layerprobe/cli: {offenders}"


def test_no_test_module_imports_through_the_tests_package():
    """Helpers are imported by their own names (pytest puts ``tests/`` on the path): a site-packages
    that already holds a top-level ``tests`` package would otherwise shadow every ``tests.x``."""
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno}" for n in names
                          if n == "tests" or n.startswith("tests.")]
    assert not offenders, f"import helpers by module name, not through tests.: {offenders}"


def test_the_walker_sees_a_cycle_and_a_lazy_import(tmp_path):
    """The checks above are only as good as the import reader: it must catch imports inside
    functions and relative ones."""
    pkg = tmp_path / "layerprobe" / "core"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from layerprobe.sweep import loop\n")
    (pkg / "b.py").write_text("from . import a\n")
    modules = {"layerprobe.core.a": pkg / "a.py", "layerprobe.core.b": pkg / "b.py",
               "layerprobe.sweep.loop": pkg / "a.py"}
    assert _imports(pkg / "a.py", "layerprobe.core.a", modules) == {"layerprobe.sweep.loop"}
    assert _imports(pkg / "b.py", "layerprobe.core.b", modules) == {"layerprobe.core.a"}


def test_the_layering_table_names_every_part_and_only_parts():
    parts = {_part(m) for m in _modules()} - {""}
    assert set(ALLOWED) == parts
    named = set().union(*ALLOWED.values()) - {"*"}
    assert named <= parts, f"the table names parts that do not exist: {named - parts}"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_private_name_crosses_a_module_or_subpackage():
    """A private module (``_io``) is imported only inside its own package; a private name
    (``_BY_MODEL``) from no other module at all."""
    modules, wrong = _modules(), []
    for name, path in sorted(modules.items()):
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not node.module or not node.module.startswith("layerprobe"):
                continue
            parts = node.module.split(".")
            for i, part in enumerate(parts):
                if _private(part) and not package.startswith(".".join(parts[:i])):
                    wrong.append(f"{name} imports the private module {node.module}")
            wrong += [f"{name} imports {node.module}.{a.name}" for a in node.names if _private(a.name)]
    assert not wrong, "\n".join(wrong)


# names of model components: outside the adapters (and compat, for the cache) no module may use one
STRUCTURE = [r"\.language_model", r"\.norm\b", r"\.scaling", r"\bq_proj", r"\bk_proj", r"\bv_proj", r"\bo_proj",
             r"down_proj", r"self_attn", r"vision_config", r"vision_tower", r"rotary_emb", r"cache\.layers"]


def test_model_structure_is_named_only_in_the_adapters():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "models" or rel.name == "compat.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            found += [f"{rel}:{n}: {line.strip()}" for pattern in STRUCTURE if re.search(pattern, line)]
    assert not found, "model structure read outside layerprobe/models (ask the adapter):\n" + "\n".join(found)


def test_no_module_over_400_lines_no_function_over_80():
    big = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > 400:
            big.append(f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                big.append(f"{path.relative_to(ROOT)}: {node.name} is {node.end_lineno - node.lineno + 1} lines")
    assert not big, "\n".join(big)


# ---- the extension table ------------------------------------------------------------------------
def _extension_files() -> dict[str, list[str]]:
    return {what: re.findall(r"`([\w./<>-]+\.(?:py|yaml))`", files) for what, files in _table("Extending layerprobe")}


def test_every_file_the_extension_table_names_exists():
    table = _extension_files()
    assert set(table) == {"a model family", "a benchmark", "a method", "an edge set"}
    for what, files in table.items():
        for name in files:
            path = ROOT / name
            assert (path.parent if "<" in name else path).exists(), f"{what}: {name} does not exist"


def _defined_in(obj) -> str:
    return str(Path(inspect.getfile(obj)).resolve().relative_to(ROOT))


def test_every_family_has_the_files_of_its_row():
    from layerprobe.models import registry
    from layerprobe.models.tiny import BUILDERS
    from layerprobe_testing import DOCUMENT

    tiny_configs = {yaml.safe_load(p.read_text())["path"].split(":")[1]: p
                    for p in (ROOT / "conf" / "model").glob("tiny_*.yaml")}
    for cls in registry.FAMILY_ADAPTERS:
        assert _defined_in(cls).startswith("layerprobe/models/"), cls
        assert cls.family in BUILDERS and _defined_in(BUILDERS[cls.family]) in (
            "layerprobe/models/tiny_families.py", "layerprobe/models/tiny_llava.py"), cls.family
        assert cls.family in tiny_configs and cls.family in DOCUMENT, cls.family
    assert set(tiny_configs) == {cls.family for cls in registry.FAMILY_ADAPTERS}


def test_every_benchmark_and_method_has_the_files_of_its_row():
    from layerprobe.data import registry as data
    from layerprobe.methods.registry import METHODS

    data.get_benchmark("organism")  # registers itself on import
    for name, bench in data.BENCHMARKS.items():
        assert _defined_in(bench).startswith("layerprobe/data/"), name
        assert (ROOT / "conf" / "data" / f"{name}.yaml").is_file(), name
    assert {p.stem for p in (ROOT / "conf" / "data").glob("*.yaml")} == set(data.BENCHMARKS)
    contract = DOC.read_text().split("- **A benchmark**", 1)[1].split("- **", 1)[0]
    assert all(f"`{n}" in contract for n in data.CONTRACT), "the doc's benchmark contract lacks a name"
    for name, cls in METHODS.items():
        assert _defined_in(cls) == f"layerprobe/methods/{name}.py", name
        assert (ROOT / "conf" / "method" / f"{name}.yaml").is_file(), name
    assert {p.stem for p in (ROOT / "conf" / "method").glob("*.yaml")} == set(METHODS)
