"""Masking curves: accuracy (with 95% CI), or another effect with its CI, and latency against the
knocked-out layer.

    fig = plot_masking_curves(summary)              # summary from layerprobe.sweep.summary.summarise
    fig = plot_masking_curves(summary, effect=get_effect("logprob"), evidence=evidence)   # gather_evidence rows
    save_figure(fig, run_dir / "masking_curves")
"""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import pandas as pd

from layerprobe.plots.discovery import curve

LAYER_AXIS = "knocked-out decoder layer (0-based)"


def _rows(summary: pd.DataFrame, condition: str) -> pd.DataFrame:
    return summary[summary["condition"] == condition].sort_values("layer")


def plot_accuracy(summary: pd.DataFrame, ax, label: str | None = None, color=None):
    """Knockout accuracy per layer with its CI band, the control's beside it (dashed, where the
    sweep ran one); the baseline as a dashed line."""
    ko, control = _rows(summary, "knockout"), _rows(summary, "control")
    base = summary[summary["condition"] == "baseline"]
    x = ko["layer"].astype(int).to_numpy()
    line, = ax.plot(x, ko["accuracy"], marker="o", ms=3, lw=1.4, label=label or "knockout", color=color)
    ax.fill_between(x, ko["ci_low"].astype(float), ko["ci_high"].astype(float), alpha=0.2, color=line.get_color())
    if len(control):
        shade = line.get_color() if label else "0.35"
        xc = control["layer"].astype(int).to_numpy()
        ax.plot(xc, control["accuracy"], ls="--", marker="x", ms=4, lw=1.1, color=shade,
                label=f"control{' ' + label if label else ''}")
        ax.fill_between(xc, control["ci_low"].astype(float), control["ci_high"].astype(float), alpha=0.12,
                        color=shade, lw=0)
    if len(base):
        b = base.iloc[0]
        ax.axhline(b["accuracy"], ls="--", lw=1, color=line.get_color() if label else "0.3",
                   label=f"baseline{' ' + label if label else ''} ({b['accuracy']:.3f})")
        ax.axhspan(b["ci_low"], b["ci_high"], color="0.5", alpha=0.08)
    ax.set_ylabel("accuracy")
    ax.set_xlabel(LAYER_AXIS)
    return ax


def plot_effect(evidence: pd.DataFrame, effect, ax, label: str | None = None, color=None):
    """The effect per knocked-out layer with its CI band, a dashed zero line, and the control's
    curve (dashed, its own band) where the evidence has one."""
    rows = evidence.sort_values("layer")
    value, low, high = curve(rows, effect.name)
    line, = ax.plot(rows["layer"], value, marker="o", ms=3, lw=1.4, label=label or "knockout", color=color)
    ax.fill_between(rows["layer"], low, high, alpha=0.2, color=line.get_color())
    if "control_effect" in rows:
        value, low, high = curve(rows, effect.name, "control_")
        shade = line.get_color() if label else "0.35"
        ax.plot(rows["layer"], value, ls="--", marker="x", ms=4, lw=1.1, color=shade,
                label=f"control{' ' + label if label else ''}")
        ax.fill_between(rows["layer"], low, high, alpha=0.12, color=shade, lw=0)
    ax.axhline(0, ls="--", lw=1, color="0.3")
    ax.set_ylabel(textwrap.fill(f"{effect.label} (95% CI)", 30))
    ax.set_xlabel(LAYER_AXIS)
    return ax


def plot_latency(summary: pd.DataFrame, ax, note: str | None = None):
    ko, control = _rows(summary, "knockout"), _rows(summary, "control")
    base = summary[summary["condition"] == "baseline"]
    x = ko["layer"].astype(int).to_numpy()
    ax.plot(x, ko["latency_s"] * 1e3, marker="o", ms=3, lw=1.2, label="total")
    ax.plot(x, ko["prefill_s"] * 1e3, marker="s", ms=3, lw=1.0, label="prefill")
    if len(control):
        ax.plot(control["layer"].astype(int), control["latency_s"] * 1e3, ls="--", marker="x", ms=4, lw=1.0,
                label="control total")
    if len(base):
        ax.axhline(base.iloc[0]["latency_s"] * 1e3, ls="--", lw=1, color="0.3", label="baseline total")
    ax.set_ylabel("latency per sample (ms)")
    ax.set_xlabel(LAYER_AXIS)
    if note:
        ax.set_title(note, fontsize=8, loc="left")
    return ax


def plot_masking_curves(summary: pd.DataFrame, title: str | None = None, latency_note: str | None = None,
                        effect=None, evidence: pd.DataFrame | None = None):
    """Accuracy (or, given ``effect`` and its ``evidence``, that effect) and latency per layer."""
    benches = list(dict.fromkeys(summary["benchmark"]))
    fig, (ax_acc, ax_lat) = plt.subplots(2, 1, figsize=(7.5, 5.5), sharex=True,
                                         gridspec_kw={"height_ratios": [3, 2]})
    for bench in benches:
        label = bench if len(benches) > 1 else None
        if effect is not None and effect.name != "accuracy":
            plot_effect(evidence[evidence["benchmark"] == bench], effect, ax_acc, label=label)
        else:
            plot_accuracy(summary[summary["benchmark"] == bench], ax_acc, label=label)
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
