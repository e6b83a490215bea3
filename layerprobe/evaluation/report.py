"""Tables and figures of an eval directory, from its results tables (and, for the galleries and
heatmaps, the benchmark's images): what ``layerprobe-eval`` refreshes after every job.

    comparison, table = write_tables("runs/eval/organism")     # comparison.*, flips.csv, pre_layers, attention_mass.csv,
                                                               # curves.csv and curve_<method>_<option>.{png,pdf}
    write_galleries(table, data, Path("runs/eval/organism/organism"), n_examples=8)
    method.draw(run_dir, loaded, data, n=4)                     # the method's own per-sample figures
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from layerprobe.analysis.stats import scored_rows
from layerprobe.errors import DataError
from layerprobe.evaluation.compare import REFERENCE_METHOD, attention_mass, collect, compare, flips, paired
from layerprobe.evaluation.curves import option_curves
from layerprobe.io.filenames import safe_name
from layerprobe.io.results import write_atomic
from layerprobe.plots.methods import comparison_figure, flips_gallery, plot_pre_layers
from layerprobe.plots.option_curves import option_curve_figure
from layerprobe.plots.save import save_figure


def _markdown(table: pd.DataFrame) -> str:
    try:
        return table.to_markdown(index=False, floatfmt=".4g") + "\n"
    except ImportError:  # tabulate is optional
        return table.to_string(index=False) + "\n"


def write_tables(eval_dir, title: str | None = None, table: pd.DataFrame | None = None
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(comparison, all rows) of ``eval_dir``, written as tables and figures there; ``table``: its
    rows when already collected. An eval directory without a scored row is a DataError."""
    eval_dir = Path(eval_dir)
    table = collect(eval_dir) if table is None else table
    if scored_rows(table).empty:
        raise DataError(f"{eval_dir}: no scored results (results.jsonl) below it")
    comparison = compare(table)
    write_atomic(eval_dir / "comparison.csv", comparison.to_csv(index=False))
    write_atomic(eval_dir / "comparison.md", _markdown(comparison))
    write_atomic(eval_dir / "flips.csv", flips(table).to_csv(index=False))
    mass = attention_mass(table)
    if len(mass):
        write_atomic(eval_dir / "attention_mass.csv", mass.to_csv(index=False))
    save_figure(comparison_figure(comparison, title=title), eval_dir / "comparison")
    if "pre_layer" in table and table["pre_layer"].notna().any():
        fig, ax = plt.subplots(figsize=(6, 3.5))
        plot_pre_layers(table, ax)
        save_figure(fig, eval_dir / "pre_layers")
    write_curves(eval_dir, table, comparison)
    return comparison, table


def write_curves(eval_dir: Path, table: pd.DataFrame, comparison: pd.DataFrame) -> list[Path]:
    """``curves.csv`` and ``curve_<method>_<option>.{png,pdf}`` for every option some runs of a
    method were swept over; nothing when none was."""
    curves = option_curves(table, comparison)
    if curves.empty:
        return []
    write_atomic(eval_dir / "curves.csv", curves.to_csv(index=False))
    written = []
    for (method, option), curve in curves.groupby(["method", "option"], sort=False):
        written += save_figure(option_curve_figure(curve), eval_dir / f"curve_{safe_name(method)}_{safe_name(option)}")
    return written


def write_galleries(table: pd.DataFrame, data, bench_dir, n_examples: int) -> None:
    """``flips_<method>.png`` per method: up to n/2 fixed and n/2 broken samples of ``data``."""
    t = table[table["benchmark"] == data.name]
    by_id = {str(s.sample_id): s for s in data.samples}
    for method in sorted(set(t["condition"]) - {REFERENCE_METHOD}):
        pairs = paired(t, data.name, method)
        picked = []
        for kind, sel in (("fixed", pairs["other"] > pairs["base"]), ("broken", pairs["other"] < pairs["base"])):
            for sid, row in pairs[sel].head(max(n_examples // 2, 1)).iterrows():
                if sid in by_id:
                    s = by_id[sid]
                    picked.append({"image": s.load_image(), "question": s.question, "answers": s.answers,
                                   "vanilla": row["base_prediction"], "method": row["prediction"],
                                   "method_name": method, "kind": kind})
        if picked:
            save_figure(flips_gallery(picked, title=f"{method} vs vanilla on {data.name}: fixed and broken"),
                        Path(bench_dir) / f"flips_{safe_name(method)}")
