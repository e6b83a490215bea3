"""``layerprobe-discover``: a knockout sweep in, a layer profile out.

    layerprobe-discover run=runs/organism
    layerprobe-discover 'run=[runs/vqav2_shard0,runs/vqav2_shard1]' out=conf/profile/my_model.yaml alpha=0.01

Finding no review layer (or no layer at all) is a result: the profile is written with
``review_layer: null``, the summary says so once, and the command exits 0. A profile at ``out``
that layerprobe-discover did not write, or that was edited since, is replaced only with
``overwrite=true``; ``discovery.csv`` and the figure always go into the (first) run.

From Python, without Hydra: ``run_discover({"run": "runs/organism"})`` (same keys as
``conf/discover.yaml``), or ``layerprobe.analysis.discovery.discover_runs`` directly.
"""

from __future__ import annotations

from typing import Any, Mapping

import hydra
from omegaconf import DictConfig

from layerprobe.cli.hydra_errors import run_app
from layerprobe.cli.common import run_cli, run_options
from layerprobe.cli.report import holds_runs, write_page
from layerprobe.analysis.discovery import DEFAULTS, DiscoverOutput, discover_runs
from layerprobe.io.paths import CONF_DIR

OPTIONS = set(DEFAULTS) | {"num_layers", "review_layer", "post_integrated_layer"}


def run_discover(cfg: Mapping[str, Any] | DictConfig) -> DiscoverOutput:
    """Discover and write the outputs; prints the summary, and what was not found."""
    cfg, runs = run_options(cfg, OPTIONS | {"out", "figure", "overwrite"})
    options = {k: v for k, v in cfg.items() if k in OPTIONS}
    result = discover_runs(runs, out=cfg.get("out"), figure=cfg.get("figure", True),
                           overwrite=bool(cfg.get("overwrite", False)), **options)
    print(result.discovery.summary())
    if result.missing:
        print(f"note: {result.missing}")
    print("wrote " + ", ".join(str(p) for p in result.written))
    # the evidence is in the first run; out= may be a folder holding runs too (a multirun's): refresh
    # the page of each such folder, never write one where only the profile went (conf/profile/)
    for folder in dict.fromkeys(path.parent for path in result.written):
        if holds_runs(folder):
            write_page(folder)
    return result


@hydra.main(config_path=str(CONF_DIR), config_name="discover", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    run_cli(run_discover, cfg)


def main() -> None:
    run_app(_app, "discover")


if __name__ == "__main__":
    main()
