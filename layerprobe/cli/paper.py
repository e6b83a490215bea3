"""``layerprobe-paper``: the contrastive-attention paper's pipeline on one checkpoint, in one command
(``conf/paper.yaml``; the protocol is in docs/paper.md).

    layerprobe-paper                                   # LLaVA-1.5-7B on the six benchmarks
    layerprobe-paper paper=llava16                     # LLaVA-1.6-Vicuna-7B
    layerprobe-paper launcher=slurm num_shards=4 +launcher_options.partition=gpu
    layerprobe-paper model=tiny_llava15 data.limit=3   # the plumbing, on a tiny random model

Each stage is an existing command run as one multirun through the chosen Hydra launcher
(``layerprobe-sweep`` on every benchmark and shard, discovery across all of those sweeps through
``discover_runs``, ``layerprobe-eval`` for every method, benchmark and shard), then the table of
our numbers beside the paper's (``layerprobe.evaluation.paper``) and the report page. Every stage
resumes, so the same command again finishes what a crash, a timeout or a cancelled job left.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from layerprobe.cli.common import run_cli, to_python
from layerprobe.cli.hydra_errors import run_app
from layerprobe.errors import ConfigError, LayerprobeError, ProfileError
from layerprobe.io.paths import CONF_DIR

log = logging.getLogger("layerprobe.paper")
LAUNCHERS = ("basic", "local", "slurm", "joblib", "submitit_local", "submitit_slurm")


def hydra_value(value) -> str:
    """``value`` written in Hydra's override grammar (strings quoted, so paths and ids stay strings)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    for quote in ("'", '"'):
        if quote not in text:
            return f"{quote}{text}{quote}"
    raise ConfigError(f"{text!r}: a value with both kinds of quotes cannot be passed on to a stage")


def as_overrides(options: dict, prefix: str = "") -> list[str]:
    """``{engine: naive, data: {split: val}}`` as ``engine='naive'``, ``data.split='val'``."""
    out = []
    for key, value in (options or {}).items():
        if isinstance(value, dict) and value:
            out += as_overrides(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={hydra_value(value)}")
    return out


def _stage_limits(stage: str, given, cap, benchmarks: list[str]) -> dict:
    """Samples per benchmark for a stage: ``given`` (a number, null or {benchmark: number}) capped by
    ``cap``; entries of benchmarks not run are ignored, names that are no benchmark refused."""
    from layerprobe.data.registry import BENCHMARKS

    per = given if isinstance(given, dict) else {b: given for b in benchmarks}
    unknown = sorted(set(per) - set(BENCHMARKS))
    if unknown:
        raise ConfigError(f"{stage}.limit: {unknown} are not benchmarks; known: {', '.join(sorted(BENCHMARKS))}")
    out = {}
    for bench in benchmarks:
        value = per.get(bench)
        for name, v in ((f"{stage}.limit.{bench}", value), ("data.limit", cap)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name}={v!r}: must be a positive integer or null (the whole split)")
        out[bench] = cap if value is None else value if cap is None else min(value, cap)
    return out


def check(cfg) -> None:
    """Everything that can be wrong in the paper's own options, before any stage starts."""
    from layerprobe.data.registry import get_benchmark
    from layerprobe.methods.registry import METHODS

    if not cfg.benchmarks:
        raise ConfigError("benchmarks: give at least one, e.g. [vqav2, gqa]")
    for bench in cfg.benchmarks:
        get_benchmark(bench)
    for method in cfg.methods:
        if method not in METHODS:
            raise ConfigError(f"methods: {method!r} is unknown; known: {', '.join(METHODS)}")
    if "vanilla" not in cfg.methods:
        raise ConfigError(f"methods={list(cfg.methods)}: include vanilla, the baseline of every delta")
    if isinstance(cfg.num_shards, bool) or not isinstance(cfg.num_shards, int) or cfg.num_shards < 1:
        raise ConfigError(f"num_shards={cfg.num_shards!r}: must be a positive integer")
    if cfg.launcher not in LAUNCHERS:
        raise ConfigError(f"launcher={cfg.launcher!r}: choose one of {', '.join(LAUNCHERS)}")
    for stage in ("sweep", "eval"):
        _stage_limits(stage, to_python(cfg[stage].limit), cfg.data.limit, list(cfg.benchmarks))
    if not (CONF_DIR / "mask" / f"{cfg.sweep.mask}.yaml").is_file():
        raise ConfigError(f"sweep.mask={cfg.sweep.mask!r}: not a knockout in conf/mask/")
    if cfg.data.root is not None and not Path(cfg.data.root).expanduser().is_dir():
        raise ConfigError(f"data.root={cfg.data.root}: no such folder (it holds one folder per benchmark)")
    _profile_given(cfg)


def _profile_given(cfg) -> str | None:
    """The eval override for a profile given by hand (a preset or a YAML path); None for ``discovered``."""
    given = str(cfg.method_profile)
    if given == "discovered":
        return None
    if given.endswith((".yaml", ".yml")) or "/" in given:
        path = Path(given).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"method_profile={given}: no such profile file")
        return f"profile_file={hydra_value(str(path))}"
    if not (CONF_DIR / "profile" / f"{given}.yaml").is_file():
        raise ConfigError(f"method_profile={given!r}: not 'discovered', a preset in conf/profile/ or a YAML file")
    return f"profile={given}"


def _model_overrides(cfg) -> list[str]:
    """The same checkpoint for every stage: the preset, then each of its values as given here."""
    model = to_python(cfg.model)
    choice = HydraConfig.get().runtime.choices["model"]
    return [f"model={choice}", *(f"model.{key}={hydra_value(value)}" for key, value in model.items())]


def _stage_overrides(cfg, stage: str) -> list[str]:
    """What the sweep and eval stages share: model, benchmarks and their samples, shards, launcher."""
    benchmarks = list(cfg.benchmarks)
    limits = _stage_limits(stage, to_python(cfg[stage].limit), cfg.data.limit, benchmarks)
    shards = ",".join(str(k) for k in range(cfg.num_shards))
    out = [*_model_overrides(cfg), f"data={','.join(benchmarks)}", f"+paper_limits={hydra_value(limits)}",
           "data.limit='${paper_limits.${data.name}}'", f"data.num_shards={cfg.num_shards}", f"data.shard={shards}",
           f"batch_size={cfg[stage].batch_size}", f"progress={hydra_value(cfg.progress)}"]
    if cfg.data.root is not None:
        out.append(f"data.root={hydra_value(str(Path(cfg.data.root).expanduser().resolve()) + '/${data.name}')}")
    if cfg.launcher != "basic":
        out.append(f"hydra/launcher={cfg.launcher}")
    return out + as_overrides(to_python(cfg.launcher_options), "hydra.launcher.") + as_overrides(to_python(cfg[stage].options))


def run_stage(name: str, module: str, overrides: list[str]) -> None:
    """One multirun of ``layerprobe.cli.<module>`` in a child process; its output is the user's."""
    cmd = [sys.executable, "-m", f"layerprobe.cli.{module}", "-m", *overrides]
    log.info("%s stage: %s", name, shlex.join(["python", *cmd[1:]]))
    code = subprocess.run(cmd).returncode
    if code != 0:
        raise LayerprobeError(f"the {name} stage ended with exit code {code} (its error is above); what its "
                              "finished jobs wrote is kept: rerun the same command to resume")


def prefetch(cfg) -> None:
    """The checkpoint and every benchmark's split into the Hugging Face cache, once, before jobs
    that may run where there is no network start."""
    from layerprobe.data.hub import fetch_benchmark, has_mirror
    from layerprobe.data.registry import get_benchmark
    from layerprobe.models.loading import checkpoint_folder

    model = to_python(cfg.model)
    checkpoint_folder(model.get("path") or model["name"], model.get("download", True))
    if cfg.data.root is None:
        for bench in map(get_benchmark, cfg.benchmarks):
            if has_mirror(bench):
                fetch_benchmark(bench, bench.DEFAULT_SPLIT)


def sweep_dirs(cfg, out: Path) -> list[Path]:
    """Where the sweep stage's runs are (conf/sweep.yaml's hydra.sweep.subdir)."""
    mask = OmegaConf.load(CONF_DIR / "mask" / f"{cfg.sweep.mask}.yaml").name
    n = cfg.num_shards
    return [out / "sweep" / cfg.model.name / bench / mask / f"shard{k}of{n}" for bench in cfg.benchmarks for k in range(n)]


def discover_stage(cfg, out: Path) -> str:
    """Discovery across every benchmark's sweep; the eval override of the profile the methods read."""
    from layerprobe.analysis.discovery import discover_runs
    from layerprobe.cli.discover import OPTIONS

    options = to_python(cfg.discovery) or {}
    unknown = set(options) - OPTIONS
    if unknown:
        raise ConfigError(f"discovery: unknown option(s) {sorted(unknown)}; valid: {', '.join(sorted(OPTIONS))}")
    # the paper's discovery is its own: profile and evidence both in <out>/discovery
    result = discover_runs(sweep_dirs(cfg, out), out=out / "discovery" / "profile.yaml",
                           evidence_dir=out / "discovery", **options)
    print(result.discovery.summary())
    given = _profile_given(cfg)
    if given is not None:
        return given
    if result.missing:   # the profile records what was not found; the methods that need the layers would refuse it
        raise ProfileError(f"{result.missing}; or evaluate with a profile given by hand: "
                           "method_profile=<preset or YAML> (the evidence is in discovery/discovery.csv)")
    return f"profile_file={hydra_value(str(out / 'discovery' / 'profile.yaml'))}"


def eval_overrides(cfg, out: Path, profile: str) -> list[str]:
    """Every method on every benchmark and shard, each shard in its own run directory below eval/;
    the label is the method's name (the table's rows), not eval's default, which adds the profile."""
    shard = "shard${data.shard}of${data.num_shards}"
    return [*_stage_overrides(cfg, "eval"), f"method={','.join(cfg.methods)}", profile, "baseline=none",
            f"eval_dir={hydra_value(str(out / 'eval'))}", "label='${method.name}'",
            f"run_dir='${{eval_dir}}/${{data.name}}/${{label}}/{shard}'",
            f"hydra.sweep.subdir='${{data.name}}/${{label}}/{shard}'"]


def table_stage(cfg, out: Path) -> Path:
    from layerprobe.evaluation.compare import collect
    from layerprobe.evaluation.paper import paper_table, write_paper_table

    reference = to_python(cfg.paper)
    rows = paper_table(collect(out / "eval"), reference, list(cfg.benchmarks), list(cfg.methods))
    _, md_path, markdown = write_paper_table(rows, out, reference, title=f"{cfg.paper.name} ({cfg.model.name})")
    print(markdown)
    write_paper_report(out, rows, markdown, title=f"layerprobe-paper: {cfg.paper.name} ({cfg.model.name})")
    return md_path


def write_paper_report(out: Path, rows, markdown: str, title: str) -> Path | None:
    """``<out>/report.html``: the paper table first, then what ``out`` holds (the sweeps, the
    discovery, the method comparison), through ``layerprobe.report``'s writer."""
    try:
        from layerprobe.report import write_report
    except ModuleNotFoundError as err:
        if err.name not in ("layerprobe.report", "layerprobe.report.write"):
            raise
        log.warning("report.html not written: this installation has no layerprobe.report")
        return None
    path = write_report(out, extra=[("Paper table", rows), ("Paper table (Markdown)", markdown)], title=title)
    log.info("report: %s", path)
    return path


def paper(cfg) -> None:
    check(cfg)
    out = Path(cfg.out).expanduser().resolve()
    if cfg.prefetch:
        prefetch(cfg)
    sweep = [*_stage_overrides(cfg, "sweep"), f"mask={cfg.sweep.mask}", f"layers={hydra_value(to_python(cfg.sweep.layers))}",
             f"hydra.sweep.dir={hydra_value(str(out / 'sweep'))}"]
    run_stage("sweep", "sweep", sweep)
    profile = discover_stage(cfg, out)
    run_stage("eval", "eval", eval_overrides(cfg, out, profile))
    log.info("wrote %s", table_stage(cfg, out))


@hydra.main(config_path=str(CONF_DIR), config_name="paper", version_base="1.3")
def _main(cfg) -> None:
    run_cli(paper, cfg)


def main() -> None:
    run_app(_main, "paper")


if __name__ == "__main__":
    main()
