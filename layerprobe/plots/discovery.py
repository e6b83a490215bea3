"""The masking curve with the discovered layers marked.

    found = discover(run_dir)
    ax = plot_discovery(found.evidence, found)          # accuracy vs 0-based layer, per benchmark
    save_figure(ax.figure, run_dir / "discovery")       # discovery.png + discovery.pdf

Each benchmark's line is its accuracy with that one layer knocked out; the band is
``baseline - CI(drop)``, the paired 95% CI of the drop carried onto the accuracy scale, so a band
that stays clear of the dashed baseline line is a drop the bootstrap also sees. Fusion layers
(triangles) and the review layer (diamond) carry error bars of the same CI and their index on
top; the grey span is the late part of the stack, where the review layer is looked for.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

NEEDED = {"benchmark", "layer", "baseline_acc", "knockout_acc", "ci_low", "ci_high"}


def _mark(ax, rows: pd.DataFrame, color, marker: str, dodge: float) -> None:
    below = (rows["knockout_acc"] - (rows["baseline_acc"] - rows["ci_high"])).clip(lower=0)
    above = ((rows["baseline_acc"] - rows["ci_low"]) - rows["knockout_acc"]).clip(lower=0)
    ax.errorbar(rows["layer"] + dodge, rows["knockout_acc"], yerr=[below.fillna(0), above.fillna(0)],
                fmt=marker, color=color, markersize=7, markeredgecolor="black", markeredgewidth=0.6,
                capsize=2.5, elinewidth=1, zorder=5)


def plot_discovery(evidence: pd.DataFrame, discovery=None, ax=None, title: str | None = None):
    """Masking curves from ``evidence`` (``paired_effects`` rows, e.g. ``Discovery.evidence``),
    with the layers of ``discovery`` (a Discovery) marked when given. Returns the Axes."""
    missing = NEEDED - set(evidence.columns)
    if missing:
        raise ValueError(f"plot_discovery needs evidence columns {sorted(missing)}")
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.8))
    benchmarks = sorted(evidence["benchmark"].unique())
    palette = sns.color_palette("colorblind", len(benchmarks))
    fusion = set(discovery.fusion_layers) if discovery is not None else set()
    review = discovery.review_layer if discovery is not None else None
    num_layers = discovery.num_layers if discovery is not None else int(evidence["layer"].max()) + 1
    handles = []
    for i, (benchmark, color) in enumerate(zip(benchmarks, palette)):
        rows = evidence[evidence["benchmark"] == benchmark].sort_values("layer")
        handles += ax.plot(rows["layer"], rows["knockout_acc"], "-o", color=color, markersize=3, lw=1.4,
                           label=benchmark if len(benchmarks) > 1 else "knockout at layer")
        ax.fill_between(rows["layer"], rows["baseline_acc"] - rows["ci_high"],
                        rows["baseline_acc"] - rows["ci_low"], color=color, alpha=0.18, lw=0)
        ax.axhline(rows["baseline_acc"].mean(), color=color, ls="--", lw=1)
        # markers of several benchmarks at one layer side by side, not on top of each other
        dodge = (i - (len(benchmarks) - 1) / 2) * 0.2
        _mark(ax, rows[rows["layer"].isin(fusion)], color, "^", dodge)
        _mark(ax, rows[rows["layer"] == review], color, "D", dodge)
    handles.append(Line2D([], [], color="0.3", ls="--", lw=1, label="baseline (no knockout)"))
    if discovery is not None:
        ax.axvspan(discovery.late_start - 0.5, num_layers - 0.5, color="0.93", zorder=0)
        handles.append(Patch(color="0.93", label="late part"))
        marked = {layer: "fusion" for layer in fusion} | ({review: "review"} if review is not None else {})
        for layer in sorted(marked):
            ax.axvline(layer, color="0.6", lw=0.6, ls=":", zorder=1)
            ax.text(layer, 1.01, str(layer), transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                    fontsize=7, color="0.25")
        handles += [Line2D([], [], ls="", marker="^", color="0.6", markeredgecolor="black", label="fusion layer"),
                    Line2D([], [], ls="", marker="D", color="0.6", markeredgecolor="black", label="review layer")]
    ax.set_xlabel("decoder layer (0-based)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(-0.5, num_layers - 0.5)
    ax.set_ylim(bottom=min(0, ax.get_ylim()[0]))
    sns.despine(ax=ax)
    ax.legend(handles=handles, frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    if title:
        ax.set_title(title, pad=14)
    return ax
