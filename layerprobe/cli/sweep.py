"""``layerprobe-sweep``: the baseline plus a knockout at each decoder layer, on any model and
benchmark; defaults to the model organism and its synthetic test set.

    layerprobe-sweep                                          # organism, all 32 layers
    layerprobe-sweep model=llava15_7b data=textvqa data.root=/data/textvqa layers=[0,1,2]
    layerprobe-sweep -m hydra/launcher=local data=vqav2,gqa 'data.root=/data/${data.name}' data.num_shards=2 data.shard=0,1
    layerprobe-sweep adaptive=true design.looks=[0.25,0.5]      # stage-wise: decided layers stop early
    layerprobe-sweep control=text_keys                          # + a specificity control at every layer
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig

from layerprobe import __version__
from layerprobe.cli import run_names  # noqa: F401  (registers the run_dir resolver)
from layerprobe.cli.common import (identity as config_identity, load_data_from, load_model_from, run_cli, run_header,
                                   to_python, writer_options)
from layerprobe.cli.hydra_errors import run_app
from layerprobe.cli.report import write_page
from layerprobe.errors import ConfigError
from layerprobe.io.hashing import config_hash
from layerprobe.io.paths import CONF_DIR
from layerprobe.sweep.heap import keep_freed_memory

log = logging.getLogger("layerprobe.sweep")
WAYS_OUT = "give run_dir=<a new folder> (a multirun: hydra.sweep.dir=<a new folder>) for a new run"


def adaptive_design(cfg):
    """(Design or None, shard_runs, wait_s) from ``adaptive`` and ``design.*``."""
    from layerprobe.analysis.discovery import DEFAULTS
    from layerprobe.analysis.sequential import Design

    if not cfg.get("adaptive"):
        return None, None, 0.0
    d = dict(to_python(cfg.design))
    shard_runs, wait_s = d.pop("shard_runs", None), float(d.pop("wait_s", 0) or 0)
    unknown = set(d) - set(Design.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"design: unknown key(s) {sorted(unknown)}; valid: {', '.join(Design.__dataclass_fields__)}")
    d["effect"] = d.get("effect") or DEFAULTS["effect"]
    return Design(**{**d, "looks": tuple(d.get("looks") or ())}), shard_runs, wait_s


def sweep(cfg) -> None:
    from layerprobe.core.controls import control_edges
    from layerprobe.sweep.loop import run_sweep

    run_dir = Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path(cfg.run_dir)
    design, shard_runs, wait_s = adaptive_design(cfg)   # a bad design fails before anything loads
    control = cfg.get("control")
    if control is not None:   # so does a bad control
        control_edges(cfg.mask.edges, control, cfg.get("control_seed", 0))
    data = load_data_from(cfg.data)   # first: a bad data.root should not wait for a 7B checkpoint to load
    loaded = load_model_from(cfg.model)
    if cfg.keep_heap and loaded.device.type == "cpu":
        log.info("keep_heap: freed memory stays in the heap: %s", keep_freed_memory())
    mask = to_python(cfg.mask)
    layers = to_python(cfg.layers)
    identity = {"model": config_identity(cfg.model), "data": config_identity(cfg.data), "mask": mask, "layers": layers}
    if control is not None:   # as with adaptive, a sweep without a control keeps its hash
        identity["control"] = {"name": control, "seed": cfg.get("control_seed", 0)}
    if design is not None:   # a full sweep's hash stays what it was
        identity["adaptive"] = design.record()
    header = {
        **run_header(loaded, data, config_hash(identity)), "model": loaded.describe(), "data": to_python(cfg.data),
        "edges": mask["edges"], "window": mask.get("window", 1), "metric": data.metric,
        "layerprobe_version": __version__, **({"adaptive": design.record()} if design else {}),
        **({"control": identity["control"]} if control is not None else {}),
    }
    log.info("model %s (%d layers), %s: %d samples (%d skipped on load), run dir %s",
             loaded.name, loaded.num_layers, data.name, len(data.samples), len(data.skipped), run_dir)
    summary = run_sweep(
        loaded, data, run_dir, layers=layers, edges=mask["edges"], window=mask.get("window", 1),
        batch_size=cfg.batch_size, engine=cfg.engine, header=header, on_error=cfg.data.get("on_error", "raise"),
        progress=cfg.progress, title=f"{loaded.name} on {data.name}: {mask['edges']} knockout",
        engine_opts={"variants_per_batch": cfg.variants_per_batch,
                     "memory_budget_gb": cfg.get("memory_budget_gb")}, timing_samples=cfg.timing_samples,
        adaptive=design, shard_runs=shard_runs, wait_s=wait_s, control=control,
        control_seed=cfg.get("control_seed", 0),
        writer_opts=writer_options(cfg, WAYS_OUT),
    )
    if summary is None:
        log.warning("stopped at a look that waits for other shards; rerun this command once they finish")
        return
    base = summary[summary["condition"] == "baseline"]
    if len(base):
        log.info("baseline accuracy %.3f; lowest knockout %s", base["accuracy"].iloc[0],
                 summary[summary["condition"] == "knockout"].nsmallest(3, "accuracy")[["layer", "accuracy"]]
                 .to_dict("records"))
    log.info("wrote %s", run_dir)
    write_page(run_dir)


@hydra.main(config_path=str(CONF_DIR), config_name="sweep", version_base="1.3")
def _main(cfg) -> None:
    run_cli(sweep, cfg)


def main() -> None:
    run_app(_main, "sweep")


if __name__ == "__main__":
    main()
