"""``layerprobe-eval``: answer a benchmark with one inference method, then refresh the comparison of
every method and benchmark found in the eval directory (paired against vanilla).

    layerprobe-eval                                                     # contrastive vs vanilla, organism
    layerprobe-eval -m method=vanilla,contrastive,dola,vicrop           # the organism, four methods
    layerprobe-eval -m method.percentile=5,10,20,30,50                  # + curve_contrastive_percentile.png
    layerprobe-eval +experiment=contrastive_percentile                  # the same sweep, one config
    layerprobe-eval model=llava15_7b profile=llava15_7b data=textvqa data.root=/data/textvqa
    layerprobe-eval profile_file=runs/sweep/organism/organism/image_text/profile.yaml

Writes ``<eval_dir>/<benchmark>/<label>/results.jsonl`` (per sample; the label is the method's name
plus each option that differs from ``conf/method/<name>.yaml``, e.g. ``contrastive_percentile-5``,
plus the profile of a method that reads one: ``layerprobe.cli.run_names``).
With ``baseline: vanilla`` (default) a missing vanilla run of the same model, data and samples is
run first into ``<eval_dir>/<benchmark>/vanilla``. From all runs below ``eval_dir``:
``comparison.{csv,md,png,pdf}``, ``flips.csv``, ``<benchmark>/flips_<label>.png``, for swept
options ``curves.csv`` and ``curve_<method>_<option>.{png,pdf}``, and for contrastive attention
``pre_layers.png`` and ``<run>/heatmap_<sample>.png``; last, ``<eval_dir>/report.html`` over all of it.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from layerprobe import __version__
from layerprobe.cli.common import (identity as config_identity, load_data_from, load_model_from, run_cli, run_header,
                                   to_python, writer_options)
from layerprobe.cli.hydra_errors import run_app
from layerprobe.cli.report import write_page
from layerprobe.cli.run_names import method_label, preset  # noqa: F401  (method_label: the label resolver)
from layerprobe.errors import ConfigError
from layerprobe.io.hashing import config_hash
from layerprobe.io.paths import CONF_DIR

log = logging.getLogger("layerprobe.eval")
# eval.yaml adds the working folder's conf/ to Hydra's search path (presets saved there by
# layerprobe-discover out=conf/profile/x.yaml); most folders have none, which is no news
warnings.filterwarnings("ignore", message=r"provider=hydra\.searchpath in main, path=conf is not available")
WAYS_OUT = "give label=<a new name> (or run_dir=<a folder inside eval_dir>) for a new run"


def _profile(cfg, loaded):
    from layerprobe.analysis.profiles import method_profile

    given = cfg.get("profile") or cfg.get("profile_file")
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    name = choices.get("profile") or "(composed preset)" if cfg.get("profile") else str(given)
    return method_profile(to_python(given) if given is not None and not isinstance(given, str) else given, loaded,
                          check=cfg.get("profile_check", True) is not False, name=name)


def _run_dir(cfg) -> Path:
    """This job's directory (Hydra's output directory), refused up front when the report would not
    find it: the comparison is built from the runs below ``eval_dir``."""
    hydra_cfg = HydraConfig.get()
    out = Path(hydra_cfg.runtime.output_dir)
    eval_dir = Path(cfg.eval_dir).resolve()
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    same_as_run_dir = Path(cfg.run_dir).resolve() == out.resolve()
    if multirun and not same_as_run_dir:
        raise ConfigError(f"run_dir={cfg.run_dir}: a multirun job writes to hydra.sweep.dir/hydra.sweep.subdir "
                          f"({out}); vary label or eval_dir instead")
    if not out.resolve().is_relative_to(eval_dir):
        key = "hydra.sweep.dir" if multirun else "run_dir" if same_as_run_dir else "hydra.run.dir"
        raise ConfigError(f"{key}={out}: results would be written there, but the report looks for the runs it "
                          f"compares in eval_dir={cfg.eval_dir}; give eval_dir={out} to keep everything there, "
                          f"or a {key} inside {cfg.eval_dir}")
    return out


def _header(cfg, loaded, data, method_options: dict, profile) -> dict:
    """A run's results header; its hash is the run's identity (model, data and samples, method and
    options, the profile for a method that reads one), so a rerun resumes and another config is refused."""
    from layerprobe.methods.registry import takes_profile

    profile = profile if takes_profile(method_options["name"]) else None
    identity = {"model": config_identity(cfg.model), "data": config_identity(cfg.data), "method": method_options,
                "profile": profile}
    transfer = {"profile_check": False} if profile is not None and cfg.get("profile_check", True) is False else {}
    return {**run_header(loaded, data, config_hash(identity)), "model": loaded.describe(), "data": to_python(cfg.data),
            "method": method_options, "profile": profile, **transfer, "metric": data.metric,
            "layerprobe_version": __version__}


def _run_options(cfg) -> dict:
    return {"batch_size": cfg.batch_size, "on_error": cfg.data.get("on_error", "raise"),
            "memory_pass": cfg.memory_pass, "progress": cfg.progress, "writer_opts": writer_options(cfg, WAYS_OUT)}


def _baseline_run(eval_dir: Path, bench: str, header: dict) -> tuple[Path, set[str]]:
    """Where the vanilla run this comparison needs is, or goes (a vanilla run below ``eval_dir``
    with its exact identity, else ``<eval_dir>/<benchmark>/vanilla``), and the samples it holds."""
    from layerprobe.evaluation.compare import REFERENCE_METHOD, collect
    from layerprobe.io.results import read_header

    table = collect(eval_dir)
    rows = table[(table["benchmark"] == bench) & (table["condition"] == REFERENCE_METHOD)] if len(table) else table
    for run_dir, run in rows.groupby("run_dir", sort=True) if len(rows) else ():
        if read_header(Path(run_dir) / "results.jsonl").get("config_hash") == header["config_hash"]:
            return Path(run_dir), set(run["sample_id"].astype(str))
    path = eval_dir / bench / REFERENCE_METHOD / "results.jsonl"
    if path.is_file() and read_header(path).get("config_hash") != header["config_hash"]:
        raise ConfigError(f"{path}: holds a vanilla run with another config (model, data or samples), and the "
                          f"comparison needs vanilla on this run's samples; use another eval_dir, or baseline=none")
    return path.parent, set()


def run_baseline(cfg, loaded, data, eval_dir: Path) -> None:
    """Run vanilla on the same model, data and samples into ``eval_dir`` unless it is there
    (resumed where it is partly there)."""
    from layerprobe.evaluation.compare import REFERENCE_METHOD as name
    from layerprobe.evaluation.run import run_method
    from layerprobe.methods.registry import make_method

    header = _header(cfg, loaded, data, preset("method", name), None)
    run_dir, present = _baseline_run(eval_dir, data.name, header)
    wanted = {str(s.sample_id) for s in data.samples} | {str(sid) for sid, _ in data.skipped}
    present &= wanted
    if present == wanted:
        log.info("baseline %s on %s: all %d samples already in %s", name, data.name, len(wanted), run_dir)
        return
    log.info("baseline %s on %s first (%d of %d samples missing) -> %s", name, data.name, len(wanted - present),
             len(wanted), run_dir)
    run_method(loaded, data, make_method(name), run_dir, header, label=name, **_run_options(cfg))


def evaluate(cfg) -> None:
    from layerprobe.evaluation.compare import REFERENCE_METHOD
    from layerprobe.evaluation.run import run_method
    from layerprobe.methods.registry import make_method

    run_dir = _run_dir(cfg)
    baseline = cfg.get("baseline") or "none"
    if baseline not in (REFERENCE_METHOD, "none"):
        raise ConfigError(f"baseline={baseline!r}: choose {REFERENCE_METHOD} (run it first where it is missing) "
                          "or none")
    loaded = load_model_from(cfg.model)
    data = load_data_from(cfg.data)
    options = to_python(cfg.method)
    name = options.pop("name")
    profile = _profile(cfg, loaded)
    method = make_method(name, profile=profile, **options)
    method.check(loaded)
    header = _header(cfg, loaded, data, to_python(cfg.method), profile)
    if baseline != "none" and name != baseline:
        run_baseline(cfg, loaded, data, Path(cfg.eval_dir))
    log.info("%s on %s (%d samples) with %s, run dir %s", cfg.label, data.name, len(data.samples), loaded.name,
             run_dir)
    run_method(loaded, data, method, run_dir, header, maps_samples=cfg.maps_samples, label=cfg.label,
               **_run_options(cfg))
    if name != REFERENCE_METHOD:
        time_against_vanilla(cfg, loaded, data, method, run_dir)
    report(Path(cfg.eval_dir), run_dir, loaded, data, method, cfg)


def time_against_vanilla(cfg, loaded, data, method, run_dir: Path) -> None:
    """``<run_dir>/timing.json``: the method and vanilla timed side by side on ``timing_samples``
    samples (once per run; 0 turns it off)."""
    from layerprobe.evaluation.compare import REFERENCE_METHOD
    from layerprobe.evaluation.paired_latency import paired_latency, read_paired_latency, write_paired_latency
    from layerprobe.methods.registry import make_method

    n = cfg.get("timing_samples", 0)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"timing_samples={n!r}: must be an integer >= 0")
    if n == 0 or read_paired_latency(run_dir) is not None:
        return
    timing = paired_latency(loaded, data, method, make_method(REFERENCE_METHOD), n_samples=n, batch_size=cfg.batch_size)
    if timing:
        write_paired_latency(run_dir, timing)
        log.info("side by side with vanilla on %d samples: latency x%.3f, prefill x%.3f", timing["n_samples"],
                 timing["latency_ratio"], timing["prefill_ratio"])


def report(eval_dir: Path, run_dir: Path, loaded, data, method, cfg) -> None:
    from layerprobe.analysis.stats import scored_rows
    from layerprobe.evaluation.compare import collect
    from layerprobe.evaluation.report import write_galleries, write_tables

    table = collect(eval_dir)
    if scored_rows(table).empty:
        raise ConfigError(f"results were written to {run_dir}, but the report looked in eval_dir={eval_dir} and "
                          f"found no scored results there (every sample skipped?)")
    comparison, table = write_tables(eval_dir, title=f"{loaded.name}: methods vs vanilla", table=table)
    write_galleries(table, data, eval_dir / data.name, cfg.gallery_examples)
    method.draw(run_dir, loaded, data, cfg.heatmaps)
    log.info("comparison:\n%s", comparison.to_string(index=False))
    write_page(eval_dir)


@hydra.main(config_path=str(CONF_DIR), config_name="eval", version_base="1.3")
def _main(cfg) -> None:
    run_cli(evaluate, cfg)


def main() -> None:
    run_app(_main, "eval")


if __name__ == "__main__":
    main()
