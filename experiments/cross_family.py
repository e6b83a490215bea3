"""Masking curves of several model families on one axis of relative depth (layer / number of
decoder layers), so fusion and review layers of decoders of different depths line up.

    python experiments/cross_family.py runs/sweep/qwen25_vl_7b/vqav2/image_text runs/sweep/gemma3_4b/vqav2/image_text
    python experiments/cross_family.py --demo                     # tiny random models, CPU, ~minutes
    python experiments/cross_family.py --demo --families qwen2_vl,gemma3 --layers 8 --samples 4

Each run directory is a ``layerprobe-sweep`` output; its header names the model, family and
depth. The y axis is the knockout accuracy minus the run's baseline accuracy (with the knockout's
95% CI shifted by the same baseline), so models with different baselines share one scale. Layer
l (0-based) of an L-layer decoder sits at l / L. ``--demo`` first sweeps tiny random models of
each family on the VQAv2 test fixture: the curves are noise; the figure shows the plumbing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from layerprobe.plots.save import save_figure  # noqa: E402
from layerprobe.io.results import read_header, read_results  # noqa: E402
from layerprobe.sweep.summary import summarise  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO_FAMILIES = ["llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "internvl",
                 "idefics3", "smolvlm", "gemma3"]
DEPTH_AXIS = "relative depth: knocked-out layer / decoder layers (layer 0-based)"


def relative_curves(run_dirs: list[Path]) -> pd.DataFrame:
    """One row per (run, benchmark, knocked-out layer): relative depth and accuracy change."""
    parts = []
    for run_dir in run_dirs:
        model = read_header(run_dir / "results.jsonl").get("model", {})
        summary = summarise(read_results(run_dir))
        for bench, part in summary.groupby("benchmark", sort=False):
            base = part[part["condition"] == "baseline"]["accuracy"]
            if base.empty:
                raise SystemExit(f"{run_dir}: no baseline rows for {bench}; rerun the sweep with its baseline")
            ko = part[part["condition"] != "baseline"].copy()
            b, n = float(base.iloc[0]), int(model["num_layers"])
            ko = ko.assign(
                run=str(run_dir), model=model.get("name", run_dir.name), family=model.get("family", "?"),
                num_layers=n, relative_depth=ko["layer"].astype(int) / n, baseline=b,
                delta=ko["accuracy"] - b, delta_low=ko["ci_low"] - b, delta_high=ko["ci_high"] - b,
            )
            parts.append(ko)
    return pd.concat(parts, ignore_index=True)


def plot_relative_depth(curves: pd.DataFrame, ax):
    """Accuracy change against relative depth, one line (and CI band) per model and benchmark."""
    for (model, bench), part in curves.groupby(["model", "benchmark"], sort=False):
        part = part.sort_values("relative_depth")
        label = f"{model} ({part['family'].iloc[0]}, {part['num_layers'].iloc[0]} layers)"
        if curves["benchmark"].nunique() > 1:
            label += f", {bench}"
        line, = ax.plot(part["relative_depth"], part["delta"], marker="o", ms=2.5, lw=1.2, label=label)
        ax.fill_between(part["relative_depth"], part["delta_low"].astype(float), part["delta_high"].astype(float),
                        alpha=0.12, color=line.get_color())
    ax.axhline(0, ls="--", lw=0.8, color="0.3")
    ax.set_xlim(0, 1)
    ax.set_xlabel(DEPTH_AXIS)
    ax.set_ylabel("accuracy change vs baseline")
    ax.grid(alpha=0.3, lw=0.5)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=7, frameon=False)
    return ax


def run_demo(out_dir: Path, families: list[str], layers: int, samples: int) -> list[Path]:
    """Sweep tiny random models of each family on the VQAv2 fixture; return their run dirs."""
    from layerprobe.data.registry import load_benchmark
    from layerprobe.models.loading import load_model
    from layerprobe.sweep.loop import run_sweep

    data = load_benchmark("vqav2", root=ROOT / "tests/fixtures/benchmarks/vqav2/official", limit=samples)
    run_dirs = []
    for family in families:
        loaded = load_model(f"tiny:{family}:{layers}", device="cpu")
        run_dir = out_dir / family
        header = {"model": loaded.describe(), "data": {"name": "vqav2", "limit": samples}, "demo": True}
        run_sweep(loaded, data, run_dir, engine="fast", header=header, progress=False, timing_samples=0,
                  title=f"tiny {family}")
        run_dirs.append(run_dir)
    return run_dirs


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="layerprobe-sweep run directories")
    parser.add_argument("--out", type=Path, default=None, help="figure stem (PNG + PDF)")
    parser.add_argument("--demo", action="store_true", help="sweep tiny random models of each family first")
    parser.add_argument("--families", default=",".join(DEMO_FAMILIES))
    parser.add_argument("--layers", type=int, default=12, help="--demo: decoder depth of the tiny models")
    parser.add_argument("--samples", type=int, default=4, help="--demo: VQAv2 fixture samples")
    parser.add_argument("--demo-dir", type=Path, default=ROOT / "runs" / "cross_family_demo")
    args = parser.parse_args(argv)
    runs = list(args.runs)
    if args.demo:
        runs += run_demo(args.demo_dir, args.families.split(","), args.layers, args.samples)
    if not runs:
        parser.error("give sweep run directories, or --demo")
    curves = relative_curves(runs)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    plot_relative_depth(curves, ax)
    ax.set_title("Visual knockout across model families" + (" (tiny random models: plumbing only)"
                                                           if args.demo and not args.runs else ""), fontsize=10)
    stem = args.out or ((args.demo_dir if args.demo else runs[0].parent) / "cross_family")
    for path in save_figure(fig, stem):
        print(path)
    curves.to_csv(Path(stem).with_suffix(".csv"), index=False)


if __name__ == "__main__":
    main()
