"""``layerprobe-plot``: summaries and masking curves redrawn from results tables alone.

    layerprobe-plot run=runs/sweep/organism/organism/image_text
    layerprobe-plot 'run=[runs/multirun/sweep/m/vqav2/image_text/shard0of2,runs/multirun/sweep/m/vqav2/image_text/shard1of2]'
    layerprobe-plot 'run=[runs/vqav2,runs/gqa]' out=figures/both

Every run directory gets its ``summary.csv`` and ``masking_curves.{png,pdf}`` rewritten. With
several, their results are merged by ``layerprobe.io.runs.merge_runs`` (shards of a benchmark
concatenated, benchmarks side by side, refused exactly where ``layerprobe-discover`` refuses them)
into ``<out>/summary.csv`` and ``<out>/masking_curves.{png,pdf}``. From Python, without Hydra:
``replot(["runs/a", "runs/b"], out="figures")``, or ``layerprobe.io.runs.merge_runs([...])`` for the
merged table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import hydra
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from layerprobe.cli.common import run_cli
from layerprobe.errors import ConfigError
from layerprobe.io.runs import merge_runs
from layerprobe.io.paths import CONF_DIR

def _header(run_dir: Path) -> dict[str, Any]:
    from layerprobe.io.results import read_header

    return read_header(run_dir / "results.jsonl")


def _title(headers: list[dict], benchmarks: list[str]) -> str:
    model = (headers[0].get("model") or {}).get("name", "model")
    return f"{model} on {', '.join(benchmarks)}: {headers[0].get('edges', 'image->text')} knockout"


def _merged_timing(run_dirs: list[Path], headers: list[dict]):
    """Per benchmark, the standalone latencies of its first run that measured them."""
    from layerprobe.sweep.timing import read_timing

    parts = {}
    for run, header in zip(run_dirs, headers):
        bench = (header.get("data") or {}).get("name")
        timing = read_timing(run)
        if bench not in parts and timing is not None and len(timing):
            parts[bench] = timing
    return parts


def default_out(run_dirs: Sequence[Path]) -> Path:
    """The runs' deepest common folder; the first run when they share none but the root."""
    common = Path(os.path.commonpath([str(Path(r).resolve()) for r in run_dirs]))
    return common if common != Path(common.anchor) else Path(run_dirs[0])


def replot(run_dirs: Sequence[str | Path], out: str | Path | None = None, title: str | None = None) -> list[Path]:
    """What ``layerprobe-plot`` does; returns the summary files written."""
    from layerprobe.plots.masking import plot_masking_curves
    from layerprobe.plots.save import save_figure
    from layerprobe.io.results import write_atomic
    from layerprobe.sweep.summary import summarise
    from layerprobe.sweep.loop import write_summary
    from layerprobe.sweep.timing import apply_timing

    run_dirs = [Path(r) for r in run_dirs]
    if not run_dirs:
        raise ConfigError("run: give at least one sweep run directory")
    missing = [str(r) for r in run_dirs if not (r / "results.jsonl").is_file()]
    if missing:
        raise ConfigError(f"run: no results.jsonl in {', '.join(missing)}")
    headers = [_header(r) for r in run_dirs]
    if len(run_dirs) > 1:   # merged before writing anything: a refused merge leaves no trace
        table, _ = merge_runs(run_dirs)
    written = []
    for run, header in zip(run_dirs, headers):
        bench = (header.get("data") or {}).get("name", "?")
        write_summary(run, title=title or _title([header], [bench]))
        written.append(run / "summary.csv")
    if len(run_dirs) == 1:
        return written

    out = Path(out) if out else default_out(run_dirs)
    if (out / "results.jsonl").is_file():
        raise ConfigError(f"out={out}: holds a run of its own (results.jsonl); choose another folder for the merge")
    timing = _merged_timing(run_dirs, headers)
    parts = []
    for bench, part in summarise(table).groupby("benchmark", sort=False):
        parts.append(apply_timing(part, timing[bench]) if bench in timing else part)
    summary = pd.concat(parts, ignore_index=True)
    benches = list(dict.fromkeys(summary["benchmark"]))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"out={out}: cannot create the folder: {err.strerror}") from None
    write_atomic(out / "summary.csv", summary.to_csv(index=False))
    written.append(out / "summary.csv")
    if (summary["condition"] != "baseline").any():
        note = ("latency: standalone masked generation (timing.csv of the first run per benchmark)" if timing
                else "latency: per sweep batch, warm-up excluded")
        fig = plot_masking_curves(summary, title=title or _title(headers, benches), latency_note=note)
        written += save_figure(fig, out / "masking_curves")
    return written


def run_plot(cfg: Mapping[str, Any] | DictConfig) -> list[Path]:
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    cfg = {k: v for k, v in cfg.items() if k != "hydra"}
    unknown = set(cfg) - {"run", "out", "title"}
    if unknown:
        raise ConfigError(f"unknown option(s) {sorted(unknown)}; valid: run, out, title")
    runs = cfg.get("run")
    if not runs:
        raise ConfigError("run: give a sweep run directory, or a list: 'run=[a,b]'")
    # Hydra reads run=123 as a number: paths are strings whatever they look like
    runs = [str(r) for r in runs] if isinstance(runs, (list, tuple)) else [str(runs)]
    written = replot(runs, out=cfg.get("out"), title=cfg.get("title"))
    print("wrote " + ", ".join(str(p) for p in written))
    return written


@hydra.main(config_path=str(CONF_DIR), config_name="plot", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    run_cli(run_plot, cfg)


def main() -> None:
    _app()


if __name__ == "__main__":
    main()
