"""``layerprobe-discover``: a knockout sweep in, a layer profile out.

    layerprobe-discover run=runs/organism
    layerprobe-discover 'run=[runs/vqav2_shard0,runs/vqav2_shard1]' out=conf/profile/my_model.yaml alpha=0.01

From Python, without Hydra: ``run_discover({"run": "runs/organism"})`` (same keys as
``conf/discover.yaml``), or ``layerprobe.analysis.discovery.discover_runs`` directly.
"""

from __future__ import annotations

from typing import Any, Mapping

import hydra
from omegaconf import DictConfig

from layerprobe.cli.common import run_cli, run_options
from layerprobe.cli.report import holds_runs, write_page
from layerprobe.analysis.discovery import DEFAULTS, DiscoverOutput, discover_runs
from layerprobe.errors import ProfileError
from layerprobe.io.paths import CONF_DIR

OPTIONS = set(DEFAULTS) | {"num_layers", "review_layer", "post_integrated_layer"}


def run_discover(cfg: Mapping[str, Any] | DictConfig) -> DiscoverOutput:
    """Discover and write the outputs; prints the summary. Raises ProfileError (after writing the
    evidence and figure) when the result cannot be a profile."""
    cfg, runs = run_options(cfg, OPTIONS | {"out", "figure"})
    options = {k: v for k, v in cfg.items() if k in OPTIONS}
    result = discover_runs(runs, out=cfg.get("out"), figure=cfg.get("figure", True), **options)
    print(result.discovery.summary())
    print("wrote " + ", ".join(str(p) for p in result.written))
    folder = result.written[0].parent
    if holds_runs(folder):  # the discovery went into a run's folder (or one above runs): refresh its page
        write_page(folder)
    if result.profile_error:
        raise ProfileError(result.profile_error)
    return result


@hydra.main(config_path=str(CONF_DIR), config_name="discover", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    run_cli(run_discover, cfg)


def main() -> None:
    _app()


if __name__ == "__main__":
    main()
