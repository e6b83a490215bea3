"""``summary.csv`` and the masking curves of sweep runs, from their results tables alone: what a
sweep writes when it ends and what ``layerprobe-plot`` redraws, one or several runs at a time.

    write_summary("runs/sweep/organism/organism/image_text")          # one run, in place
    replot(["runs/vqav2_shard0", "runs/vqav2_shard1"], out="figures") # merged by merge_runs
    replot(["runs/a"], effect="logprob")        # the curves of another effect, with its CI

Latency comes from ``timing.csv`` (standalone masked generations, per benchmark the first run that
measured them) where present, else from the sweep's own batches; both are seconds per sample.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from layerprobe.analysis.effects import get_effect
from layerprobe.analysis.evidence import gather_evidence
from layerprobe.errors import ConfigError
from layerprobe.io.results import read_header, read_results, write_atomic
from layerprobe.io.runs import merge_runs
from layerprobe.plots.masking import plot_masking_curves
from layerprobe.plots.save import save_figure
from layerprobe.sweep.summary import summarise
from layerprobe.sweep.timing import apply_timing, read_timing


def _latency_note(timing: pd.DataFrame | None) -> str:
    if timing is None:
        return "latency per sample: sweep batches, warm-up excluded"
    t = timing.iloc[0]
    repeats = int(t["repeats"]) if "repeats" in timing else 1
    return (f"latency per sample: standalone masked generation, {int(t['n_samples'])} samples in batches of "
            f"{int(t['batch_size'])}, mean of {repeats} interleaved repeats, warm-up excluded")


def _effect_evidence(table: pd.DataFrame, effect: str | None):
    """(Effect, its per-layer evidence with the control's columns) or (None, None) for accuracy."""
    if effect is None or effect == "accuracy":
        return None, None
    eff = get_effect(effect)
    return eff, gather_evidence(table, eff, None, False, min_effect=eff.min_effect, fdr_method="bh", alpha=0.05)[0]


def _summary(table: pd.DataFrame, timing: dict[str, pd.DataFrame]) -> pd.DataFrame:
    parts = [apply_timing(part, timing[bench]) if bench in timing else part
             for bench, part in summarise(table).groupby("benchmark", sort=False)]
    return pd.concat(parts, ignore_index=True) if parts else summarise(table)


def _figure(table: pd.DataFrame, summary: pd.DataFrame, timing: dict[str, pd.DataFrame], title: str | None,
            effect: str | None = None):
    """The masking curves (accuracy, or ``effect`` with its CI), or None when the summary has no
    knockout to draw."""
    if not (summary["condition"] != "baseline").any():
        return None
    note = _latency_note(next(iter(timing.values()), None))
    eff, evidence = _effect_evidence(table, effect)
    return plot_masking_curves(summary, title=title, latency_note=note, effect=eff, evidence=evidence)


def _write(table: pd.DataFrame, timing: dict[str, pd.DataFrame], out: Path, title: str | None,
           effect: str | None = None) -> tuple[pd.DataFrame, list[Path]]:
    summary = _summary(table, timing)
    write_atomic(out / "summary.csv", summary.to_csv(index=False))
    written = [out / "summary.csv"]
    fig = _figure(table, summary, timing, title, effect)
    if fig is not None:
        written += save_figure(fig, out / "masking_curves")
    return summary, written


def _timing_by_benchmark(run_dirs: Sequence[Path]) -> dict[str, pd.DataFrame]:
    found = {}
    for run in run_dirs:
        bench = (read_header(run / "results.jsonl").get("data") or {}).get("name")
        timing = read_timing(run)
        if bench not in found and timing is not None and len(timing):
            found[bench] = timing
    return found


def _title(run_dirs: Sequence[Path], table: pd.DataFrame) -> str:
    header = read_header(Path(run_dirs[0]) / "results.jsonl")
    model = (header.get("model") or {}).get("name", "model")
    benches = ", ".join(dict.fromkeys(table["benchmark"])) if len(table) else "?"
    return f"{model} on {benches}: {header.get('edges', 'image->text')} knockout"


def write_summary(run_dir, title: str | None = None, effect: str | None = None) -> pd.DataFrame:
    """One run's summary.csv and masking curves (accuracy, or ``effect``), in the run directory;
    returns the summary."""
    run_dir = Path(run_dir)
    table = read_results(run_dir / "results.jsonl")
    return _write(table, _timing_by_benchmark([run_dir]), run_dir, title or _title([run_dir], table), effect)[0]


def curves_of(run_dirs: Sequence[str | Path], title: str | None = None, effect: str | None = None):
    """(summary, masking-curves figure or None) of one run, or of several merged by
    ``merge_runs`` (which may refuse them), written nowhere: what a report page shows."""
    run_dirs = [Path(r) for r in run_dirs]
    table = merge_runs(run_dirs)[0] if len(run_dirs) > 1 else read_results(run_dirs[0] / "results.jsonl")
    timing = _timing_by_benchmark(run_dirs)
    summary = _summary(table, timing)
    return summary, _figure(table, summary, timing, title or _title(run_dirs, table), effect)


def default_out(run_dirs: Sequence[Path]) -> Path:
    """The runs' deepest common folder; the first run when they share none but the root."""
    common = Path(os.path.commonpath([str(Path(r).resolve()) for r in run_dirs]))
    return common if common != Path(common.anchor) else Path(run_dirs[0])


def replot(run_dirs: Sequence[str | Path], out: str | Path | None = None, title: str | None = None,
           effect: str | None = None) -> list[Path]:
    """Every run's own summary and curves, and with several runs their merge in ``out`` (default:
    their common folder); returns the summary files written. A refused merge writes nothing.
    ``effect`` (``layerprobe.analysis.effects``; None: accuracy) is what the curves draw."""
    if effect is not None:
        get_effect(effect)   # a typo fails before anything is written
    run_dirs = [Path(r) for r in run_dirs]
    if not run_dirs:
        raise ConfigError("run: give at least one sweep run directory")
    missing = [str(r) for r in run_dirs if not (r / "results.jsonl").is_file()]
    if missing:
        raise ConfigError(f"run: no results.jsonl in {', '.join(missing)}")
    table = merge_runs(run_dirs)[0] if len(run_dirs) > 1 else None
    written = []
    for run in run_dirs:
        write_summary(run, title=title, effect=effect)
        written.append(run / "summary.csv")
    if table is None:
        return written
    out = Path(out) if out else default_out(run_dirs)
    if (out / "results.jsonl").is_file():
        raise ConfigError(f"out={out}: holds a run of its own (results.jsonl); choose another folder for the merge")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"out={out}: cannot create the folder: {err.strerror}") from None
    _, merged = _write(table, _timing_by_benchmark(run_dirs), out, title or _title(run_dirs, table), effect)
    return written + merged
