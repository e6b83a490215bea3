"""The package's layering, read from its source: no import cycle anywhere, the core imports nothing
above it, and only the command-line apps import Hydra. Every import counts, including those
inside functions: a lazy import still ties two modules together."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "layerprobe"

# what each part of the package may import besides itself; anything else is a layering error
ALLOWED = {
    "errors": set(),
    "compat": {"errors"},
    "core": {"errors", "compat"},
    "io": {"errors", "data", "core"},
    "data": {"errors", "io"},
    "models": {"errors", "compat", "core", "data", "io"},
    "analysis": {"errors", "core", "io", "plots"},
    "plots": {"errors", "io"},
    "methods": {"errors", "compat", "core", "analysis", "io", "plots", "models"},
    "sweep": {"errors", "compat", "core", "io", "data", "analysis", "plots"},
    "evaluation": {"errors", "core", "io", "data", "analysis", "plots", "sweep", "methods"},
    "report": {"errors", "io", "plots", "sweep", "evaluation"},
    "organism": {"errors", "compat", "core", "io", "data", "models"},
    "lmms": {"errors", "core", "io", "data", "models", "methods", "analysis"},
    "cli": {"*"},
}


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
