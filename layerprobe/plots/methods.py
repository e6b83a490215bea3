"""Figures of a method comparison: accuracy and paired deltas, a gallery of flipped answers, the
paper's Figure-1-style attention heatmap, and the histogram of chosen pre-integrated layers.

    fig = comparison_figure(compare(collect(eval_dir)))
    fig = flips_gallery(examples)            # [{"image", "question", "answers", "vanilla", "method", "kind"}]
    fig = attention_heatmap(image, maps, side=24, region=(0, 0, 336, 336))   # maps: a contrastive record's "maps"
    plot_pre_layers(contrastive_rows, ax)
"""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd



def plot_accuracy_bars(comparison: pd.DataFrame, ax):
    t = comparison[comparison["benchmark"] != "average"]
    table = t.pivot(index="benchmark", columns="method", values="accuracy")
    methods = sorted(table.columns, key=lambda m: (m != "vanilla", m))
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(table))
    for i, method in enumerate(methods):
        ax.bar(x + i * width - 0.4 + width / 2, table[method], width, label=method)
    ax.set_xticks(x, table.index, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7)
    return ax


def plot_deltas(comparison: pd.DataFrame, ax):
    """Paired accuracy difference to vanilla with its 95% bootstrap CI, per benchmark and method."""
    t = comparison[(comparison["benchmark"] != "average") & comparison["delta"].notna()]
    labels = [f"{m}\n{b}" for b, m in zip(t["benchmark"], t["method"])]
    y = np.arange(len(t))
    err = np.vstack([t["delta"] - t["ci_low"], t["ci_high"] - t["delta"]])
    ax.errorbar(t["delta"], y, xerr=np.nan_to_num(err), fmt="o", capsize=3)
    ax.axvline(0, color="0.4", lw=1, ls="--")
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlabel("accuracy - vanilla (paired, 95% CI)")
    for yi, (d, p) in enumerate(zip(t["delta"], t["p"])):
        ax.annotate(f"{d:+.3f} (p={p:.2g})", (d, yi), textcoords="offset points", xytext=(4, 6), fontsize=6)
    return ax


def plot_cost(comparison: pd.DataFrame, ax):
    t = comparison[comparison["benchmark"] == "average"]
    x = np.arange(len(t))
    ax.bar(x - 0.2, t["latency_ratio"], 0.4, label="latency")
    ax.bar(x + 0.2, t["peak_mem_ratio"], 0.4, label="peak memory")
    ax.axhline(1.0, color="0.4", lw=1, ls="--")
    ax.set_xticks(x, t["method"], rotation=20)
    ax.set_ylabel("x vanilla")
    ax.legend(fontsize=7)
    return ax


def comparison_figure(comparison: pd.DataFrame, title: str | None = None):
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), gridspec_kw={"width_ratios": [1.2, 1.2, 0.8]})
    plot_accuracy_bars(comparison, axes[0])
    plot_deltas(comparison, axes[1])
    plot_cost(comparison, axes[2])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def flips_gallery(examples: list[dict], title: str | None = None, columns: int = 4):
    """Thumbnails of samples a method fixed or broke, with the question and both answers."""
    n = max(len(examples), 1)
    columns = min(columns, n)
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, ex in zip(axes.flat, examples):
        ax.imshow(ex["image"])
        colour = "tab:green" if ex["kind"] == "fixed" else "tab:red"
        gold = ", ".join(dict.fromkeys(ex["answers"]))[:40]
        text = (f"{ex['kind'].upper()}: {textwrap.shorten(ex['question'], 60)}\n"
                f"vanilla: {ex['vanilla']!r}\n{ex['method_name']}: {ex['method']!r}\ngold: {gold}")
        ax.set_title(text, fontsize=7, color=colour, loc="left")
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.9 if title else 1))  # room for the suptitle above the captions
    return fig


def _overlay(ax, image, values: np.ndarray, side: int, region: tuple, title: str, marks=None):
    x0, y0, w, h = region
    ax.imshow(image, alpha=0.35)  # faint, so the map reads on colourful images too
    grid = values[: side * side].reshape(side, side)
    extent = (x0 - 0.5, x0 + w - 0.5, y0 + h - 0.5, y0 - 0.5)  # pixel edges, as imshow places the image
    ax.imshow(grid, extent=extent, cmap="magma", alpha=0.75, interpolation="nearest")
    if marks is not None:
        rows, cols = np.nonzero(marks[: side * side].reshape(side, side))
        ax.scatter(x0 - 0.5 + (cols + 0.5) * w / side, y0 - 0.5 + (rows + 0.5) * h / side, marker="x", s=14,
                   c="cyan", linewidths=1.0, label="suppressed")
        ax.legend(fontsize=6, loc="lower right")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def attention_heatmap(image, maps: dict, side: int, region: tuple[int, int, int, int], pre_layer: int,
                      post_layer: int, question: str = ""):
    """Image, then pre-integrated, post-integrated and contrastive attention over it; the
    suppressed visual tokens are marked on the contrastive panel (the paper's Figure 1). ``region``
    (x0, y0, width, height) is the part of the image the ``side`` x ``side`` grid covers."""
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6))
    axes[0].imshow(image)
    axes[0].set_title(textwrap.shorten(question, 50), fontsize=8)
    axes[0].axis("off")
    _overlay(axes[1], image, np.asarray(maps["pre"]), side, region, f"pre-integrated (layer {pre_layer})")
    _overlay(axes[2], image, np.asarray(maps["post"]), side, region, f"post-integrated (layer {post_layer})")
    _overlay(axes[3], image, np.asarray(maps["contrast"]), side, region, "|post - pre|",
             marks=np.asarray(maps["suppressed"], dtype=bool))
    fig.tight_layout()
    return fig


def plot_pre_layers(rows: pd.DataFrame, ax):
    """How often each fusion layer was chosen as the pre-integrated layer, per benchmark and
    contrastive variant (the pre-layer does not depend on the scale, so variants agree)."""
    t = rows[rows["pre_layer"].notna()]
    t = t.assign(run=t["benchmark"] + " / " + t["condition"])
    counts = t.groupby(["pre_layer", "run"]).size().unstack(fill_value=0)
    counts.index = counts.index.astype(int)
    counts.plot.bar(ax=ax, rot=0)
    ax.set_xlabel("pre-integrated layer chosen (0-based decoder index)")
    ax.set_ylabel("samples")
    return ax
