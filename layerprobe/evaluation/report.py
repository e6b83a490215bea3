"""Tables and figures of an eval directory, from its results tables (and, for the galleries and
heatmaps, the benchmark's images): what ``layerprobe-eval`` refreshes after every job.

    comparison, table = write_tables("runs/eval/organism")     # comparison.*, flips.csv, pre_layers, attention_mass.csv
    write_galleries(table, data, Path("runs/eval/organism/organism"), n_examples=8)
    method.draw(run_dir, loaded, data, n=4)                     # the method's own per-sample figures
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from layerprobe.evaluation.compare import BASELINE, attention_mass, collect, compare, flips, paired
from layerprobe.plots.methods import attention_heatmap, comparison_figure, flips_gallery, plot_pre_layers
from layerprobe.plots.save import save_figure
from layerprobe.io.results import write_atomic

def _markdown(table: pd.DataFrame) -> str:
    try:
        return table.to_markdown(index=False, floatfmt=".4g") + "\n"
    except ImportError:  # tabulate is optional
        return table.to_string(index=False) + "\n"


def write_tables(eval_dir, title: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(comparison, all rows) of ``eval_dir``, written as tables and figures there."""
    eval_dir = Path(eval_dir)
    table = collect(eval_dir)
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
    return comparison, table


def write_galleries(table: pd.DataFrame, data, bench_dir, n_examples: int) -> None:
    """``flips_<method>.png`` per method: up to n/2 fixed and n/2 broken samples of ``data``."""
    t = table[table["benchmark"] == data.name]
    by_id = {str(s.sample_id): s for s in data.samples}
    for method in sorted(set(t["condition"]) - {BASELINE}):
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
                        Path(bench_dir) / f"flips_{method}")
