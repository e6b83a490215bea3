"""Masking curves: accuracy (with 95% CI) and latency against the knocked-out layer.

    fig = plot_masking_curves(summary)              # summary from layerprobe.sweep.summary.summarise
    save_figure(fig, run_dir / "masking_curves")
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

LAYER_AXIS = "knocked-out decoder layer (0-based)"


def plot_accuracy(summary: pd.DataFrame, ax, label: str | None = None, color=None):
    """Knockout accuracy per layer with its CI band; the baseline as a dashed line."""
    ko = summary[summary["condition"] != "baseline"].sort_values("layer")
    base = summary[summary["condition"] == "baseline"]
    x = ko["layer"].astype(int).to_numpy()
    line, = ax.plot(x, ko["accuracy"], marker="o", ms=3, lw=1.4, label=label or "knockout", color=color)
    ax.fill_between(x, ko["ci_low"].astype(float), ko["ci_high"].astype(float), alpha=0.2, color=line.get_color())
    if len(base):
        b = base.iloc[0]
        ax.axhline(b["accuracy"], ls="--", lw=1, color=line.get_color() if label else "0.3",
                   label=f"baseline{' ' + label if label else ''} ({b['accuracy']:.3f})")
        ax.axhspan(b["ci_low"], b["ci_high"], color="0.5", alpha=0.08)
    ax.set_ylabel("accuracy")
    ax.set_xlabel(LAYER_AXIS)
    return ax


def plot_latency(summary: pd.DataFrame, ax, note: str | None = None):
    ko = summary[summary["condition"] != "baseline"].sort_values("layer")
    base = summary[summary["condition"] == "baseline"]
    x = ko["layer"].astype(int).to_numpy()
    ax.plot(x, ko["latency_s"] * 1e3, marker="o", ms=3, lw=1.2, label="total")
    ax.plot(x, ko["prefill_s"] * 1e3, marker="s", ms=3, lw=1.0, label="prefill")
    if len(base):
        ax.axhline(base.iloc[0]["latency_s"] * 1e3, ls="--", lw=1, color="0.3", label="baseline total")
    ax.set_ylabel("latency per sample (ms)")
    ax.set_xlabel(LAYER_AXIS)
    if note:
        ax.set_title(note, fontsize=8, loc="left")
    return ax


def plot_masking_curves(summary: pd.DataFrame, title: str | None = None, latency_note: str | None = None):
    benches = list(dict.fromkeys(summary["benchmark"]))
    fig, (ax_acc, ax_lat) = plt.subplots(2, 1, figsize=(7.5, 5.5), sharex=True,
                                         gridspec_kw={"height_ratios": [3, 2]})
    for bench in benches:
        part = summary[summary["benchmark"] == bench]
        plot_accuracy(part, ax_acc, label=bench if len(benches) > 1 else None)
    plot_latency(summary[summary["benchmark"] == benches[0]], ax_lat, latency_note)
    ax_acc.set_xlabel("")
    ax_acc.legend(fontsize=8, frameon=False)
    ax_lat.legend(fontsize=8, frameon=False, ncol=3)
    for ax in (ax_acc, ax_lat):
        ax.grid(alpha=0.3, lw=0.5)
        ax.spines[["top", "right"]].set_visible(False)
    if title:
        ax_acc.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
