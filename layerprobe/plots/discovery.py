"""The masking curve of the chosen effect, with the discovered layers marked.

    found = discover(run_dir)
    ax = plot_discovery(found.evidence, found, get_effect(found.settings["effect"]))   # effect vs layer
    save_figure(ax.figure, run_dir / "discovery")       # discovery.png + discovery.pdf

With ``effect=accuracy`` each benchmark's line is its accuracy with that one layer knocked out and
the band is ``baseline - CI(drop)``, the paired 95% CI of the drop carried onto the accuracy
scale, so a band that stays clear of the dashed baseline line is a drop the bootstrap also sees.
With any other effect the line is the effect itself (mean paired change, in its unit) with its
CI, against a dashed zero line, and a dotted line marks ``min_effect`` on the harmful side. Where
the evidence has a control condition (``control_effect``), the control's curve is drawn beside the
knockout's, dashed, with its own band. Fusion layers (triangles) and the review layer (diamond)
carry error bars of the same CI and their index on top; the grey span is the late part of the
stack, where the review layer is looked for.
"""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

NEEDED = {"benchmark", "layer", "baseline_acc", "knockout_acc", "ci_low", "ci_high"}


def curve(rows: pd.DataFrame, effect: str, prefix: str = "") -> tuple[pd.Series, pd.Series, pd.Series]:
    """(value, band low, band high) to draw for the knockout (``prefix=""``) or the control
    (``prefix="control_"``): accuracy on the accuracy scale, any other effect as itself."""
    value, low, high = rows[f"{prefix}effect"], rows[f"{prefix}ci_low"], rows[f"{prefix}ci_high"]
    if effect == "accuracy":
        return rows["baseline_acc"] - value, rows["baseline_acc"] - high, rows["baseline_acc"] - low
    return value, low, high


def _mark(ax, rows: pd.DataFrame, effect: str, color, marker: str, dodge: float) -> None:
    value, low, high = curve(rows, effect)
    ax.errorbar(rows["layer"] + dodge, value, yerr=[(value - low).clip(lower=0).fillna(0),
                                                    (high - value).clip(lower=0).fillna(0)],
                fmt=marker, color=color, markersize=7, markeredgecolor="black", markeredgewidth=0.6,
                capsize=2.5, elinewidth=1, zorder=5)


def _reference(ax, rows, effect: str, harm: int, color, floor) -> None:
    if effect == "accuracy":
        ax.axhline(rows["baseline_acc"].mean(), color=color, ls="--", lw=1)
        return
    ax.axhline(0, color="0.3", ls="--", lw=1)
    if floor:
        ax.axhline(harm * floor, color="0.45", ls=":", lw=1)


def plot_discovery(evidence: pd.DataFrame, discovery=None, effect=None, ax=None, title: str | None = None):
    """Masking curves from ``evidence`` (``Discovery.evidence``, or ``layer_effects`` rows), with
    the layers of ``discovery`` (a Discovery) marked when given; ``effect``: the effect drawn
    (``layerprobe.analysis.effects.get_effect``; None: accuracy). Returns the Axes."""
    missing = NEEDED - set(evidence.columns)
    if missing:
        raise ValueError(f"plot_discovery needs evidence columns {sorted(missing)}")
    if "effect" not in evidence:   # accuracy evidence from before effects were named
        evidence = evidence.assign(effect=evidence["drop"])
    name, label, harm = (effect.name, effect.label, effect.harm) if effect is not None else ("accuracy", "accuracy", 1)
    if name == "accuracy":
        label = "accuracy"
    effect = name
    floor = discovery.settings.get("min_effect") if discovery is not None else None
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.8))
    benchmarks = sorted(evidence["benchmark"].unique())
    palette = sns.color_palette("colorblind", len(benchmarks))
    fusion = set(discovery.fusion_layers) if discovery is not None else set()
    review = discovery.review_layer if discovery is not None else None
    num_layers = discovery.num_layers if discovery is not None else int(evidence["layer"].max()) + 1
    control = "control_effect" in evidence
    handles = []
    for i, (benchmark, color) in enumerate(zip(benchmarks, palette)):
        rows = evidence[evidence["benchmark"] == benchmark].sort_values("layer")
        value, low, high = curve(rows, effect)
        handles += ax.plot(rows["layer"], value, "-o", color=color, markersize=3, lw=1.4,
                           label=benchmark if len(benchmarks) > 1 else "knockout at layer")
        ax.fill_between(rows["layer"], low, high, color=color, alpha=0.18, lw=0)
        if control:   # grey with one benchmark, its colour with several; dashed, x markers
            value, low, high = curve(rows, effect, "control_")
            shade = color if len(benchmarks) > 1 else "0.35"
            handles += ax.plot(rows["layer"], value, "--x", color=shade, lw=1.1, markersize=4,
                               label=f"control{' ' + benchmark if len(benchmarks) > 1 else ''}")
            ax.fill_between(rows["layer"], low, high, color=shade, alpha=0.12, lw=0)
        _reference(ax, rows, effect, harm, color, floor)
        # markers of several benchmarks at one layer side by side, not on top of each other
        dodge = (i - (len(benchmarks) - 1) / 2) * 0.2
        _mark(ax, rows[rows["layer"].isin(fusion)], effect, color, "^", dodge)
        _mark(ax, rows[rows["layer"] == review], effect, color, "D", dodge)
    if effect == "accuracy":
        handles.append(Line2D([], [], color="0.3", ls="--", lw=1, label="baseline (no knockout)"))
    elif floor:
        handles.append(Line2D([], [], color="0.45", ls=":", lw=1, label=f"min_effect ({floor:g})"))
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
    ax.set_ylabel(textwrap.fill(f"{label} (95% CI)", 30))
    ax.set_xlim(-0.5, num_layers - 0.5)
    if effect == "accuracy":
        ax.set_ylim(bottom=min(0, ax.get_ylim()[0]))
    sns.despine(ax=ax)
    ax.legend(handles=handles, frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    if title:
        ax.set_title(title, pad=14)
    return ax
