"""``layerprobe-eval``: answer a benchmark with one inference method, then refresh the comparison of
every method and benchmark found in the eval directory (paired against vanilla).

    layerprobe-eval -m method=vanilla,contrastive,dola,vicrop           # the organism, four methods
    layerprobe-eval method=contrastive method.scale=0.25 eval_dir=runs/scale_sweep/0.25
    layerprobe-eval model=llava15_7b profile=llava15_7b data=textvqa data.root=/data/textvqa
    layerprobe-eval profile_file=runs/sweep/organism/organism/image_text/profile.yaml

Writes ``<eval_dir>/<benchmark>/<method>/results.jsonl`` (per sample), and from all of them
``<eval_dir>/comparison.{csv,md,png,pdf}``, ``flips.csv``, ``<benchmark>/flips_<method>.png``,
and for contrastive attention ``pre_layers.png`` and ``<run>/heatmap_<sample>.png``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig

from layerprobe import __version__
from layerprobe.cli.common import load_data_from, load_model_from, plain, run_cli
from layerprobe.io.hashing import config_hash
from layerprobe.io.paths import CONF_DIR

log = logging.getLogger("layerprobe.eval")


def _profile(cfg, loaded):
    from layerprobe.analysis.profiles import method_profile

    given = cfg.get("profile") or cfg.get("profile_file")
    return method_profile(plain(given) if given is not None and not isinstance(given, str) else given, loaded)


def evaluate(cfg) -> None:
    from layerprobe.evaluation.run import run_method
    from layerprobe.methods.registry import make_method

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    loaded = load_model_from(cfg.model)
    data = load_data_from(cfg.data)
    options = plain(cfg.method)
    name = options.pop("name")
    profile = _profile(cfg, loaded)
    method = make_method(name, profile=profile, **options)
    method.check(loaded)
    identity = {"model": plain(cfg.model), "data": plain(cfg.data), "method": plain(cfg.method), "profile": profile}
    header = {"config_hash": config_hash(identity), "model": loaded.describe(), "data": plain(cfg.data),
              "method": plain(cfg.method), "profile": profile, "metric": data.metric,
              "layerprobe_version": __version__}
    log.info("%s on %s (%d samples) with %s, run dir %s", name, data.name, len(data.samples), loaded.name, run_dir)
    run_method(loaded, data, method, run_dir, header, batch_size=cfg.batch_size,
               on_error=cfg.data.get("on_error", "raise"), memory_pass=cfg.memory_pass,
               maps_samples=cfg.maps_samples, progress=cfg.progress, label=cfg.label)
    report(Path(cfg.eval_dir), run_dir, loaded, data, method, cfg)


def report(eval_dir: Path, run_dir: Path, loaded, data, method, cfg) -> None:
    from layerprobe.evaluation.report import write_galleries, write_tables

    comparison, table = write_tables(eval_dir, title=f"{loaded.name}: methods vs vanilla")
    write_galleries(table, data, eval_dir / data.name, cfg.gallery_examples)
    method.draw(run_dir, loaded, data, cfg.heatmaps)
    log.info("comparison:\n%s", comparison.to_string(index=False))


@hydra.main(config_path=str(CONF_DIR), config_name="eval", version_base="1.3")
def _main(cfg) -> None:
    run_cli(evaluate, cfg)


def main() -> None:
    _main()


if __name__ == "__main__":
    main()
