"""The adaptive sweep's design on simulated per-sample tables: its false discovery rate stays at
the nominal level under interim looks (where testing at every look without the design does not),
it finds planted layers, and it stops the rest early."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from layerprobe.analysis.discovery import discover
from layerprobe.analysis.effects import layer_effects
from layerprobe.analysis.sequential import Design, record, replay, stage_rows
from layerprobe.analysis.stats import fdr_qvalues
from layerprobe.errors import ConfigError

M, N, ALPHA = 8, 160, 0.05
POSITION = {f"s{i}": i for i in range(N)}


def simulated(rng, planted: dict[int, float], reps: int = 1, n: int = N, m: int = M, noise: float = 0.2) -> pd.DataFrame:
    """``reps`` independent sweeps (benchmarks r0, r1, ...) of per-sample log p of the baseline's
    answer: a sample-level level shared by every condition, noise per condition (so the layer
    tests share the baseline, as in a sweep), and at a planted layer a shift of -size nats."""
    frames = []
    ids = [f"s{i}" for i in range(n)]
    for r in range(reps):
        level = rng.normal(-0.5, 0.3, n)
        rows = [("baseline", None, level + rng.normal(0, noise, n))]
        rows += [("knockout", layer, level + rng.normal(0, noise, n) - planted.get(layer, 0.0)) for layer in range(m)]
        frames += [pd.DataFrame({"benchmark": f"r{r}", "sample_id": ids, "condition": c, "layer": layer,
                                 "answer_logprob": lp}) for c, layer, lp in rows]
    table = pd.concat(frames, ignore_index=True)
    table["layer"] = table["layer"].astype("Int64")
    return table.assign(score=1.0, prediction="x", skipped=None)


def per_sweep_discoveries(evidence: pd.DataFrame, floor: float | None) -> dict[str, set]:
    """Each simulated sweep is its own discovery: BH over its layers, then discovery's rule
    (q <= alpha, the test leaning towards harm, harm >= floor); ``floor=None``: q alone."""
    found = {}
    for bench, ev in evidence.groupby("benchmark"):
        keep = fdr_qvalues(ev["p"]) <= ALPHA
        if floor is not None:
            keep &= (ev["direction"] > 0) & (-ev["effect"] >= floor)
        found[bench] = set(ev.loc[keep, "layer"])
    return found


def adaptive_discoveries(table, design) -> tuple[dict, float]:
    """The design run on every sweep (``replay``, what the adaptive sweep decides), its p-values
    from discovery on the rows it computed; and the share of the full sweeps' answers computed."""
    plan = design.plan(N, M)
    as_run, stopped = replay(table, plan, POSITION)
    found = discover(as_run, num_layers=M, effect=design.effect, min_effect=design.floor, n_resamples=0,
                     late_fraction=0.5, adaptive=record(plan, stopped, M, N))
    return found.evidence, len(as_run) / len(table)


def peeking_discoveries(table, design) -> dict:
    """Testing at every look as if it were the last (two-sided, any significant change) and
    keeping what any look found: the error the design exists to avoid."""
    found: dict[str, set] = {b: set() for b in table["benchmark"].unique()}
    for end in design.plan(N, M).ends:
        part = table[table["sample_id"].map(POSITION) < end]
        for bench, layers in per_sweep_discoveries(layer_effects(part, "logprob", n_resamples=0), None).items():
            found[bench] |= layers
    return found


def false_discovery_proportion(found: dict, planted) -> float:
    return float(np.mean([len(f - set(planted)) / max(len(f), 1) for f in found.values()]))


def mc_bound(reps: int) -> float:
    return ALPHA + 2 * np.sqrt(ALPHA * (1 - ALPHA) / reps)


@pytest.mark.parametrize("interim_alpha", [None, 0.04])
def test_false_discovery_rate_holds_under_interim_looks_on_null_tables(interim_alpha):
    # min_effect 0: only the statistics guard; with every layer null the FDR is the chance of any
    # false discovery, which testing at every look (in either direction) inflates
    reps = 300
    design = Design(min_effect=0.0, interim_alpha=interim_alpha, n_resamples=200)
    table = simulated(np.random.default_rng(1), {}, reps=reps)
    evidence, answers = adaptive_discoveries(table, design)
    # the rejections themselves (q <= alpha, either direction): what the correction controls
    fdr = false_discovery_proportion(per_sweep_discoveries(evidence, None), {})
    called = false_discovery_proportion(per_sweep_discoveries(evidence, design.floor), {})
    peek = false_discovery_proportion(peeking_discoveries(table, design), {})
    print(f"null tables, interim_alpha={interim_alpha}: FDR {fdr:.3f} (bound {mc_bound(reps):.3f}; layers called "
          f"{called:.3f}), peeking {peek:.3f}, answers {answers:.2f} of the full sweep")
    assert called <= fdr <= mc_bound(reps)
    assert peek > mc_bound(reps)          # the check can fail: it catches peeking
    assert answers < 1


def test_false_discovery_rate_and_power_with_planted_layers():
    reps = 200
    planted = {1: 0.6, 4: 0.4, 6: 0.3}
    design = Design(min_effect=0.0, interim_alpha=0.04, n_resamples=200)
    table = simulated(np.random.default_rng(2), planted, reps=reps)
    evidence, answers = adaptive_discoveries(table, design)
    found = per_sweep_discoveries(evidence, design.floor)
    fdr = false_discovery_proportion(per_sweep_discoveries(evidence, None), planted)
    power = np.mean([len(f & set(planted)) / len(planted) for f in found.values()])
    print(f"planted tables: FDR {fdr:.3f} (bound {mc_bound(reps):.3f}), power {power:.3f}, answers {answers:.2f}")
    assert fdr <= mc_bound(reps)
    assert power > 0.95


def test_default_floor_stops_null_layers_at_the_first_look_and_finds_planted_ones():
    rng = np.random.default_rng(3)
    table = simulated(rng, {2: 1.0, 7: 1.0}, noise=0.02)   # null layers move log p by ~0.03 nats
    design = Design()                                   # logprob, floor 0.05 nats
    plan = design.plan(N, M)
    as_run, stopped = replay(table, plan, POSITION)
    assert plan.ends == [40, 80, 160] and plan.alpha_at == [ALPHA / M / 2] * 2
    assert {layer for (_, layer), (d, _) in stopped.items() if d == "found"} == {2, 7}
    knockouts = as_run[as_run["condition"] == "knockout"]
    # every layer decided at the first look: 40 samples each, baseline only where needed
    assert len(knockouts) == M * 40 and len(stage_rows(as_run, 1)) == len(as_run)
    found = discover(as_run, num_layers=M, effect="logprob", n_resamples=0, late_fraction=0.5,
                     adaptive=record(plan, stopped, M, N))
    assert (found.fusion_layers, found.review_layer) == ([2], 7)
    ev = found.evidence.set_index("layer")
    assert (ev.loc[[l for l in range(M) if l not in (2, 7)], "decision"] == "irrelevant").all()
    assert (ev.loc[[l for l in range(M) if l not in (2, 7)], "p"] == 1.0).all()


def test_design_refuses_bad_settings():
    with pytest.raises(ConfigError, match="design.looks"):
        Design(looks=(0.5, 0.25))
    with pytest.raises(ConfigError, match="design.interim_alpha"):
        Design(interim_alpha=0.05)
    with pytest.raises(ConfigError, match="effect='bogus'"):
        Design(effect="bogus")
