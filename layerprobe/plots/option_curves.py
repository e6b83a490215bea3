"""A method's accuracy and latency against one of its options: the figure of
``layerprobe.evaluation.curves.option_curves``.

    fig = option_curve_figure(curves[(curves["method"] == "contrastive") & (curves["option"] == "percentile")])

Left: accuracy with its 95% bootstrap CI, one line per benchmark (and per setting of the other
options when several were swept), vanilla's accuracy on that benchmark dashed in the same colour.
Right: latency per sample as a multiple of vanilla's, vanilla at 1: measured side by side with
vanilla where every point has that measurement (``latency_ratio_paired``), else the ratio of the
runs' own timings.
"""

from __future__ import annotations

import numbers

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd


def _positions(values: pd.Series) -> tuple[np.ndarray, list | None]:
    """x positions of the option's values, and tick labels when they are not all numbers."""
    numeric = all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in values)
    if numeric:
        return values.astype(float).to_numpy(), None
    names = list(dict.fromkeys(str(v) for v in values))
    return np.array([names.index(str(v)) for v in values], dtype=float), names


def option_curve_figure(curve: pd.DataFrame, title: str | None = None):
    """``curve``: the rows of one (method, option) of ``option_curves``, in its order."""
    option = curve["option"].iloc[0]
    x, ticks = _positions(curve["value"])
    curve = curve.assign(x=x)
    paired = curve["latency_ratio_paired"].notna().all()
    latency = "latency_ratio_paired" if paired else "latency_ratio"
    fig, (acc_ax, lat_ax) = plt.subplots(1, 2, figsize=(11, 4))
    colour_of_bench = {}
    for i, (line, pts) in enumerate(curve.groupby("line", sort=False)):
        colour = f"C{i % 10}"
        colour_of_bench.setdefault(pts["benchmark"].iloc[0], colour)
        err = np.vstack([pts["accuracy"] - pts["acc_low"], pts["acc_high"] - pts["accuracy"]])
        acc_ax.errorbar(pts["x"], pts["accuracy"], yerr=np.nan_to_num(err), marker="o", capsize=3, color=colour,
                        label=f"{line} (n={pts['n'].max()})")
        lat_ax.plot(pts["x"], pts[latency], marker="o", color=colour, label=line)
    for bench, colour in colour_of_bench.items():
        base = curve.loc[curve["benchmark"] == bench, "vanilla_accuracy"].iloc[0]
        if pd.notna(base):
            acc_ax.axhline(base, color=colour, ls="--", lw=1, label=f"vanilla ({bench})")
    lat_ax.axhline(1.0, color="0.4", ls="--", lw=1, label="vanilla")
    acc_ax.set_ylabel("accuracy (95% CI)")
    lat_ax.set_ylabel("latency per sample, x vanilla" + (" (side by side)" if paired else " (separate runs)"))
    for ax in (acc_ax, lat_ax):
        ax.set_xlabel(option)
        if ticks is not None:
            ax.set_xticks(range(len(ticks)), ticks)
        ax.legend(fontsize=7)
    fig.suptitle(title or f"{curve['method'].iloc[0]}: accuracy and latency against {option}")
    fig.tight_layout()
    return fig
