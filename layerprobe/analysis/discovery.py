"""Find fusion layers and the review layer in a knockout sweep, with statistics.

    found = discover("runs/organism")                  # a run dir, a list of them, or a table
    found.fusion_layers, found.review_layer            # [2, 4, 8, 11, 12, 13], 29
    found.evidence                                     # per benchmark x layer: drop, CI, p, q
    profile = to_profile(found)                        # a LayerProfile, ready for save_profile
    discover_runs(["runs/a", "runs/b"], out="profile.yaml")   # + discovery.csv and figure in runs/a

The effect (``effect=accuracy|logprob|prob_change|answer_change``, ``layerprobe.analysis.effects``)
is measured per benchmark and layer. A (benchmark, layer) test is *significant* when its
FDR-adjusted q-value over all benchmarks x layers (Benjamini-Hochberg, or Benjamini-Yekutieli with
``fdr_method="by"``) is <= ``alpha``, its test leans towards harm, and its effect reaches
``min_effect`` (in the effect's unit) towards harm. With ``require_specific`` the knockout must
also beat the control condition at that layer (a paired test in the same FDR family). A layer is
discovered when it is significant on at least ``min_benchmarks`` benchmarks. Discovered layers
before ``late_start = ceil((1 - late_fraction) * num_layers)`` are fusion layers; among the late
ones the review layer is the one with the largest harm (mean over benchmarks). The
post-integrated layer is ``review_layer - 1`` unless given. Finding no review layer (or no layer
at all) is a result: the profile records it as ``review_layer: null`` and ``missing_layers`` says
what a method that needs the layers will refuse.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from layerprobe.errors import ConfigError, DataError
from layerprobe.analysis.profiles import LayerProfile, layerprobe_version, save_profile, unchanged_since_saved
from layerprobe.io.results import write_atomic
from layerprobe.io.runs import merge_runs
from layerprobe.analysis.effects import get_effect
from layerprobe.analysis.evidence import CONTROL, gather_evidence
from layerprobe.analysis.sequential import adjust_for_design

# min_effect and test None: the effect's own (layerprobe.analysis.effects.EFFECTS)
DEFAULTS = dict(alpha=0.05, min_effect=None, late_fraction=0.25, min_benchmarks=1, test=None,
                correct_threshold=0.5, confidence=0.95, n_resamples=2000, seed=0, fdr_method="bh",
                effect="prob_change", require_specific=False)


@dataclass
class Discovery:
    fusion_layers: list[int]
    review_layer: int | None
    post_integrated_layer: int | None
    num_layers: int
    late_start: int
    evidence: pd.DataFrame            # per benchmark x layer, with q, part, significant
    layers: pd.DataFrame              # per layer: mean drop, benchmarks significant, discovered
    settings: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)   # model, edges, runs (from headers)

    @property
    def late_drops(self) -> list[int]:
        """Every discovered late layer; the review layer is the one of them with the largest drop."""
        late = self.layers[self.layers["discovered"] & (self.layers["part"] == "late")]
        return [int(x) for x in late["layer"]]

    def summary(self) -> str:
        by_layer = self.layers.set_index("layer")

        effect = self.settings["effect"]

        def describe(layer: int) -> str:
            if layer not in by_layer.index:
                return f"{layer} (set by hand, not swept)"
            row = by_layer.loc[layer]
            return f"{layer} ({effect} {row['effect']:.3g}, min q={row['q']:.2g})"
        n = self.evidence.groupby("benchmark")["n"].max()
        specific = ", require_specific" if self.settings["require_specific"] else ""
        lines = [
            f"{self.num_layers} layers (late part: {self.late_start}..{self.num_layers - 1}), "
            f"effect={effect}, {self.settings['test']} test, alpha={self.settings['alpha']}, "
            f"min_effect={self.settings['min_effect']}{specific}; "
            + ", ".join(f"{b} n={k}" for b, k in n.items()),
            "fusion layers: " + (", ".join(map(describe, self.fusion_layers)) or "none"),
            "review layer: " + (describe(self.review_layer) if self.review_layer is not None else "none"),
            f"post-integrated layer: {self.post_integrated_layer}",
        ]
        others = [x for x in self.late_drops if x != self.review_layer]
        if others:
            lines.append("other significant late drops: " + ", ".join(map(describe, others)))
        return "\n".join(lines)


def late_start_for(num_layers: int, late_fraction: float) -> int:
    if not 0 < late_fraction < 1:
        raise ConfigError(f"late_fraction={late_fraction}: expected a fraction in (0, 1)")
    # at least one early and one late layer, whatever the depth
    return min(max(math.ceil((1 - late_fraction) * num_layers - 1e-9), 1), num_layers - 1)


def _check_one_edge_set(table: pd.DataFrame) -> None:
    if "edges" not in table:
        return
    edge_sets = table.loc[table["condition"] == "knockout", "edges"].dropna().unique()
    if len(edge_sets) > 1:
        raise DataError(f"results mix knockout edge sets {sorted(edge_sets)}; discover one at a time")


def discover(table_or_run_dirs, num_layers: int | None = None, alpha: float = DEFAULTS["alpha"],
             min_effect: float = DEFAULTS["min_effect"], late_fraction: float = DEFAULTS["late_fraction"],
             post_integrated_layer: int | None = None, review_layer: int | None = None,
             min_benchmarks: int = DEFAULTS["min_benchmarks"], test: str = DEFAULTS["test"],
             correct_threshold: float = DEFAULTS["correct_threshold"], confidence: float = DEFAULTS["confidence"],
             n_resamples: int = DEFAULTS["n_resamples"], seed: int = DEFAULTS["seed"],
             fdr_method: str = DEFAULTS["fdr_method"], effect: str = DEFAULTS["effect"],
             require_specific: bool = DEFAULTS["require_specific"], adaptive: dict | None = None) -> Discovery:
    """Run the paired tests, correct them, and name the layers. ``review_layer`` overrides the
    discovered one (for when none is significant); the evidence is reported either way.
    ``min_effect`` and ``test`` default to the effect's own. ``adaptive``: the record of an
    adaptive sweep (read from the run directories' ``adaptive.json`` when they have one); its
    design's p-values replace the plain ones (``layerprobe.analysis.sequential``)."""
    if isinstance(table_or_run_dirs, pd.DataFrame):
        table, provenance = table_or_run_dirs, {}
    else:
        dirs = [table_or_run_dirs] if isinstance(table_or_run_dirs, (str, Path)) else list(table_or_run_dirs)
        table, provenance = merge_runs(dirs)
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha={alpha}: expected a value in (0, 1)")
    if min_benchmarks < 1:
        raise ConfigError(f"min_benchmarks={min_benchmarks}: expected >= 1")
    _check_one_edge_set(table)
    eff = get_effect(effect)
    min_effect = eff.min_effect if min_effect is None else min_effect
    if min_effect < 0:
        raise ConfigError(f"min_effect={min_effect}: expected >= 0 (a size towards harm, in the effect's unit)")
    if require_specific and not (table["condition"] == CONTROL).any():
        raise DataError(f"require_specific=true: the sweep had no control condition (no '{CONTROL}' rows); "
                        "run it with one, or set require_specific=false")
    adaptive = adaptive if adaptive is not None else provenance.get("adaptive")
    evidence, test = gather_evidence(table, eff, test, require_specific, correct_threshold=correct_threshold,
                                     confidence=confidence, n_resamples=n_resamples, seed=seed,
                                     min_effect=min_effect, fdr_method=fdr_method, alpha=alpha,
                                     p_override=(lambda ev: adjust_for_design(ev, adaptive)) if adaptive else None)
    if evidence.empty:
        conditions = sorted(set(table["condition"].dropna())) if "condition" in table else []
        if "knockout" not in conditions or "baseline" not in conditions:
            raise DataError(f"the results hold no baseline and knockout rows (conditions: {', '.join(conditions) or 'none'}): "
                            "discovery reads a layerprobe-sweep run (results.jsonl with a baseline and a knockout "
                            "per layer), not an eval run")
        raise DataError("no knockout row pairs with a baseline row of the same sample: nothing to test")
    num_layers = num_layers or provenance.get("num_layers")
    if not num_layers:
        num_layers = int(evidence["layer"].max()) + 1
        warnings.warn(f"number of layers unknown (no model.num_layers in the header): using {num_layers}")
    if evidence["layer"].max() >= num_layers or evidence["layer"].min() < 0:
        raise DataError(f"results have knockout layers outside 0..{num_layers - 1}")
    late_start = late_start_for(num_layers, late_fraction)

    evidence["part"] = ["late" if x >= late_start else "early" for x in evidence["layer"]]
    layers = evidence.groupby("layer").agg(
        part=("part", "first"), effect=("effect", "mean"), harm=("harm", "mean"), drop=("drop", "mean"),
        q=("q", "min"), benchmarks_significant=("significant", "sum")).reset_index()
    layers["discovered"] = layers["benchmarks_significant"] >= min_benchmarks

    # recorded with the settings so a profile shows which layers were set by hand
    overrides = dict(review_layer=review_layer, post_integrated_layer=post_integrated_layer)
    found = layers[layers["discovered"]]
    fusion_layers = [int(x) for x in found.loc[found["part"] == "early", "layer"]]
    late = found[found["part"] == "late"].sort_values(["harm", "layer"], ascending=[False, True])
    if review_layer is None and not late.empty:
        review_layer = int(late["layer"].iloc[0])
    if post_integrated_layer is None and review_layer is not None:
        post_integrated_layer = review_layer - 1
    settings = dict(alpha=alpha, min_effect=min_effect, late_fraction=late_fraction, min_benchmarks=min_benchmarks,
                    test=test, correct_threshold=correct_threshold, confidence=confidence,
                    n_resamples=n_resamples, seed=seed, fdr_method=fdr_method, effect=effect,
                    require_specific=bool(require_specific), adaptive=bool(adaptive),
                    error_rate="false discovery rate over every test of this discovery (benchmark x layer; "
                               "the control's too where the sweep has one)",
                    **{f"{k}_set_by_hand": v for k, v in overrides.items()})
    return Discovery(fusion_layers, review_layer, post_integrated_layer, int(num_layers), late_start,
                     evidence, layers, settings, provenance)


def _plain(value):
    """Python scalars for YAML, NaN as None, floats to 6 significant digits for a readable file."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else float(f"{value:.6g}")
    return value


def missing_layers(found: Discovery) -> str | None:
    """What the discovery did not find, in one line with what to do about it; None if nothing."""
    late = f"layers {found.late_start}..{found.num_layers - 1}"
    if found.review_layer is not None and found.fusion_layers:
        return None
    if found.review_layer is not None:
        return (f"no fusion layer: no significant drop before layer {found.late_start}, so the profile has "
                "fusion_layers: [], which contrastive attention refuses")
    if not found.fusion_layers and (found.evidence["n"] == 0).all():
        return ("no sample to test: effect=prob_change reads the samples the baseline answers correctly, and it "
                "answers none; the profile records no layer; discover with effect=logprob (every sample) or "
                "effect=accuracy")
    if not found.fusion_layers:
        return (f"no layer's knockout is significant (no fusion layer, no review layer in {late}); the profile "
                "records that (fusion_layers: [], review_layer: null), and contrastive attention refuses it; "
                "lower min_effect or sweep more samples for more power")
    return (f"no review layer: no significant drop in the late part ({late}), so the profile has review_layer: "
            "null, which contrastive attention refuses; give review_layer=<layer> to set one by hand, or lower "
            "min_effect / raise late_fraction")


def to_profile(found: Discovery, model: str | None = None, notes: str = "") -> LayerProfile:
    """The discovery as a LayerProfile (with ``review_layer: None`` when none was found)."""
    evidence = [{k: _plain(v) for k, v in row.items()} for row in found.evidence.to_dict("records")]
    profile = LayerProfile(
        model=model or found.provenance.get("model") or "unknown",
        model_config_hash=found.provenance.get("model_config_hash"),
        num_layers=found.num_layers,
        fusion_layers=list(found.fusion_layers),
        review_layer=found.review_layer,
        post_integrated_layer=found.post_integrated_layer,
        edges=found.provenance.get("edges") or "image->text",
        data=sorted(found.evidence["benchmark"].unique().tolist()),
        runs=list(found.provenance.get("runs", [])),
        n={str(b): int(k) for b, k in found.evidence.groupby("benchmark")["n"].max().items()},
        statistics={k: _plain(v) for k, v in found.settings.items()},
        evidence=evidence,
        source="layerprobe-discover",
        notes=notes,
        layerprobe_version=layerprobe_version(),
    )
    profile.validate()
    return profile


@dataclass
class DiscoverOutput:
    discovery: Discovery
    profile: LayerProfile
    missing: str | None               # what was not found (missing_layers), for the user
    written: list[Path]


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite and not unchanged_since_saved(out):
        raise ConfigError(f"out={out}: exists and was not written by layerprobe-discover, or was edited since; "
                          "give overwrite=true to replace it, or another out=")


def discover_runs(run_dirs, out: str | Path | None = None, figure: bool = True, overwrite: bool = False,
                  evidence_dir: str | Path | None = None, **options) -> DiscoverOutput:
    """What ``layerprobe-discover`` does: discover, then write the profile to ``out`` (default
    ``<first run>/profile.yaml``) and ``discovery.csv``, ``discovery.png/.pdf`` into the first run
    (or ``evidence_dir``: layerprobe-paper's discovery/ folder). A profile at ``out`` that this
    function did not write, or that was edited since, is replaced only with ``overwrite``."""
    run_dirs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    if not run_dirs:
        raise ConfigError("run: give at least one sweep run directory")
    for run in map(Path, run_dirs):
        if run.is_dir() and not (run / "results.jsonl").is_file():
            raise ConfigError(f"run={run}: not a sweep run (no results.jsonl); give the folder layerprobe-sweep "
                              "wrote (its run_dir, e.g. runs/sweep/<model>/<data>/<mask>)")
    out = Path(out) if out else Path(run_dirs[0]) / "profile.yaml"
    _check_out(out, overwrite)
    found = discover(run_dirs, **options)
    if evidence_dir is None:
        evidence_dir = Path(run_dirs[0]) if Path(run_dirs[0]).is_dir() else Path(run_dirs[0]).parent
    evidence_dir = Path(evidence_dir)
    evidence_dir.mkdir(parents=True, exist_ok=True)
    csv_path = evidence_dir / "discovery.csv"
    write_atomic(csv_path, found.evidence.to_csv(index=False))
    written = [csv_path]
    if figure:
        from layerprobe.plots.discovery import plot_discovery   # matplotlib only when drawing
        from layerprobe.plots.save import save_figure

        ax = plot_discovery(found.evidence, found, get_effect(found.settings["effect"]))
        written += save_figure(ax.figure, evidence_dir / "discovery")
    profile = to_profile(found)
    try:
        save_profile(profile, out)
    except OSError as err:
        raise ConfigError(f"out={out}: cannot write the profile: {err.strerror}") from None
    return DiscoverOutput(found, profile, missing_layers(found), [out, *written])
