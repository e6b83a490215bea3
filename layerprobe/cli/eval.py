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
from layerprobe.cli.common import config_hash, load_data_from, load_model_from, plain, run_cli
from layerprobe.paths import CONF_DIR

log = logging.getLogger("layerprobe.eval")


def _profile(cfg, loaded):
    from layerprobe.profiles import load_profile

    given = cfg.get("profile") or cfg.get("profile_file")
    if given:
        profile = load_profile(plain(given) if not isinstance(given, str) else given, num_layers=loaded.num_layers)
        return {k: v for k, v in profile.to_dict().items() if k not in ("evidence", "statistics")}
    planted = sorted(loaded.extra.get("organism", {}).get("planted", []))
    if not planted:
        return None  # methods that need one say so
    return {"fusion_layers": planted[:-1], "review_layer": planted[-1], "post_integrated_layer": planted[-1] - 1}


def evaluate(cfg) -> None:
    from layerprobe.evaluation import run_method
    from layerprobe.methods import make_method

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
               maps_samples=cfg.maps_samples if name == "contrastive" else 0, progress=cfg.progress,
               label=cfg.label)
    report(Path(cfg.eval_dir), run_dir, loaded, data, name, profile, cfg)


def report(eval_dir: Path, run_dir: Path, loaded, data, name: str, profile, cfg) -> None:
    """Comparison table and figures from every results table under ``eval_dir``."""
    import matplotlib.pyplot as plt

    from layerprobe.evaluation import collect, compare, flips
    from layerprobe.interventions.attention_rows import base_grid_side
    from layerprobe.interventions.contrastive import profile_layers
    from layerprobe.plots.methods import attention_heatmap, comparison_figure, plot_pre_layers
    from layerprobe.plots.save import save_figure
    from layerprobe.results import read_results, write_atomic

    table = collect(eval_dir)
    comparison = compare(table)
    write_atomic(eval_dir / "comparison.csv", comparison.to_csv(index=False))
    write_atomic(eval_dir / "comparison.md", comparison.to_markdown(index=False, floatfmt=".4g") + "\n"
                 if _has_tabulate() else comparison.to_string(index=False) + "\n")
    write_atomic(eval_dir / "flips.csv", flips(table).to_csv(index=False))
    save_figure(comparison_figure(comparison, title=f"{loaded.name}: methods vs vanilla"), eval_dir / "comparison")
    _galleries(table, data, eval_dir / data.name, cfg.gallery_examples)
    if "pre_layer" in table and table["pre_layer"].notna().any():
        fig, ax = plt.subplots(figsize=(6, 3.5))
        plot_pre_layers(table, ax)
        save_figure(fig, eval_dir / "pre_layers")
    if name == "contrastive" and cfg.heatmaps:
        rows = read_results(run_dir)
        with_maps = rows[rows["maps"].notna()] if "maps" in rows else rows.iloc[:0]
        by_id = {str(s.sample_id): s for s in data.samples}
        post = profile_layers(profile, loaded.num_layers)[1]
        for _, row in with_maps.head(cfg.heatmaps).iterrows():
            sample = by_id.get(row["sample_id"])
            if sample is None:
                continue
            fig = attention_heatmap(sample.load_image(), row["maps"], base_grid_side(loaded), loaded.adapter.family,
                                    int(row["pre_layer"]), post, data.prompt(sample))
            save_figure(fig, run_dir / f"heatmap_{row['sample_id']}")
    log.info("comparison:\n%s", comparison.to_string(index=False))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def _galleries(table, data, bench_dir: Path, n_examples: int) -> None:
    from layerprobe.evaluation import BASELINE, paired
    from layerprobe.plots.methods import flips_gallery
    from layerprobe.plots.save import save_figure

    t = table[table["benchmark"] == data.name]
    by_id = {str(s.sample_id): s for s in data.samples}
    for method in sorted(set(t["condition"]) - {BASELINE}):
        pairs = paired(t, data.name, method)
        picked = []
        for kind, sel in (("fixed", pairs["other"] > pairs["base"]), ("broken", pairs["other"] < pairs["base"])):
            for sid, row in pairs[sel].head(max(n_examples // 2, 1)).iterrows():
                if sid in by_id:
                    s = by_id[sid]
                    picked.append({"image": s.load_image(), "question": s.question, "answers": s.answers,
                                   "vanilla": row["base_prediction"], "method": row["prediction"],
                                   "method_name": method, "kind": kind})
        if picked:
            save_figure(flips_gallery(picked, title=f"{method} vs vanilla on {data.name}: fixed and broken"),
                        bench_dir / f"flips_{method}")


@hydra.main(config_path=str(CONF_DIR), config_name="eval", version_base="1.3")
def _main(cfg) -> None:
    run_cli(evaluate, cfg)


def main() -> None:
    _main()


if __name__ == "__main__":
    main()
