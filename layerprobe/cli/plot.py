"""``layerprobe-plot``: summaries and masking curves redrawn from results tables alone.

    layerprobe-plot run=runs/sweep/organism/organism/image_text
    layerprobe-plot 'run=[runs/multirun/sweep/m/vqav2/image_text/shard0of2,runs/multirun/sweep/m/vqav2/image_text/shard1of2]'
    layerprobe-plot 'run=[runs/vqav2,runs/gqa]' out=figures/both

Every run directory gets its ``summary.csv`` and ``masking_curves.{png,pdf}`` rewritten. With
several, their results are merged by ``layerprobe.io.runs.merge_runs`` (shards of a benchmark
concatenated, benchmarks side by side, refused exactly where ``layerprobe-discover`` refuses them)
into ``<out>/summary.csv`` and ``<out>/masking_curves.{png,pdf}``. From Python, without Hydra:
``layerprobe.sweep.report.replot(["runs/a", "runs/b"], out="figures")``, or
``layerprobe.io.runs.merge_runs([...])`` for the merged table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import hydra
from omegaconf import DictConfig

from layerprobe.cli.hydra_errors import run_app
from layerprobe.cli.common import run_cli, run_options
from layerprobe.io.paths import CONF_DIR
from layerprobe.sweep.report import replot


def run_plot(cfg: Mapping[str, Any] | DictConfig) -> list[Path]:
    cfg, runs = run_options(cfg, {"out", "title"})
    written = replot(runs, out=cfg.get("out"), title=cfg.get("title"))
    print("wrote " + ", ".join(str(p) for p in written))
    return written


@hydra.main(config_path=str(CONF_DIR), config_name="plot", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    run_cli(run_plot, cfg)


def main() -> None:
    run_app(_app, "plot")


if __name__ == "__main__":
    main()
