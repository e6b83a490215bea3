"""``layerprobe-plot``: summaries and masking curves redrawn from results tables alone.

    layerprobe-plot run=runs/sweep/organism/organism/image_text
    layerprobe-plot 'run=[runs/multirun/sweep/m/vqav2/image_text/shard0of2,runs/multirun/sweep/m/vqav2/image_text/shard1of2]'
    layerprobe-plot 'run=[runs/vqav2,runs/gqa]' out=figures/both
    layerprobe-plot run=runs/sweep/organism/organism/image_text effect=logprob   # another effect, with its CI
    layerprobe-plot run=runs/multirun/sweep                 # a folder of runs: its report.html

Every run directory gets its ``summary.csv``, ``masking_curves.{png,pdf}`` and ``report.html``
rewritten (``report=false``: no page). With several, their results are merged by
``layerprobe.io.runs.merge_runs`` (shards of a benchmark concatenated, benchmarks side by side,
refused exactly where ``layerprobe-discover`` refuses them) into ``<out>/summary.csv``,
``<out>/masking_curves.{png,pdf}`` and ``<out>/report.html``. A folder that holds runs below it but
no ``results.jsonl`` of its own (a multirun's sweep folder, an eval directory) gets only its
``report.html`` over all of them (``layerprobe.report.write_report``). From Python, without Hydra:
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
from layerprobe.cli.report import holds_runs, write_page
from layerprobe.io.paths import CONF_DIR
from layerprobe.sweep.report import replot


def run_plot(cfg: Mapping[str, Any] | DictConfig) -> list[Path]:
    cfg, runs = run_options(cfg, {"out", "title", "effect", "report"})
    # a folder with runs below it but none of its own (a multirun, an eval directory): its page only
    folders = [r for r in runs if not (Path(r) / "results.jsonl").is_file() and holds_runs(Path(r))]
    runs = [r for r in runs if r not in folders]
    written = (replot(runs, out=cfg.get("out"), title=cfg.get("title"), effect=cfg.get("effect"))
               if runs else [])
    if cfg.get("report", True):
        pages = [p.parent for p in written if p.name == "summary.csv"] + [Path(f) for f in folders]
        written += [write_page(page) for page in pages]
    print("wrote " + ", ".join(str(p) for p in written))
    return written


@hydra.main(config_path=str(CONF_DIR), config_name="plot", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    run_cli(run_plot, cfg)


def main() -> None:
    run_app(_app, "plot")


if __name__ == "__main__":
    main()
