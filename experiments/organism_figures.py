"""The figures in figures/: the organism's masking curves and its discovered layers, produced by
the same library calls as `layerprobe-sweep` + `layerprobe-discover`, with the wall time of each.

    python experiments/organism_figures.py                 # writes figures/organism_*.png/.pdf
    python experiments/organism_figures.py --run-dir runs/figures --engine naive
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import layerprobe
import layerprobe.organism as organism
from layerprobe.data.registry import load_benchmark
from layerprobe.analysis.discovery import discover_runs
from layerprobe.sweep.loop import run_sweep

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", default="runs/figures/organism")
    ap.add_argument("--engine", default="fast", choices=["fast", "naive"])
    args = ap.parse_args()
    run_dir = Path(args.run_dir)

    start = time.perf_counter()
    loaded = organism.load()
    data = load_benchmark("organism")
    header = {"config_hash": f"figures-{args.engine}", "model": loaded.describe(), "edges": "image->text",
              "layerprobe_version": layerprobe.__version__}
    summary = run_sweep(loaded, data, run_dir, engine=args.engine, batch_size=64, header=header,
                        title="organism (planted 2, 4, 8, 11, 12, 13 | 29): image->text knockout")
    swept = time.perf_counter()
    found = discover_runs([run_dir], out=run_dir / "profile.yaml")
    done = time.perf_counter()

    FIGURES.mkdir(exist_ok=True)
    for name, target in (("masking_curves", "organism_masking_curves"), ("discovery", "organism_discovery")):
        for ext in ("png", "pdf"):
            shutil.copyfile(run_dir / f"{name}.{ext}", FIGURES / f"{target}.{ext}")
    base = summary[summary["condition"] == "baseline"]["accuracy"].iloc[0]
    print(f"baseline accuracy {base:.3f} on {len(data.samples)} samples")
    print(f"sweep {swept - start:.1f} s, discover {done - swept:.1f} s, total {done - start:.1f} s")
    print(found.discovery.summary())


if __name__ == "__main__":
    main()
