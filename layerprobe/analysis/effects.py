"""The effect of a knockout at each layer, in the unit of the chosen effect, with the paired test
that suits it: one row per (benchmark, layer), from a results table alone.

    ev = layer_effects(table, "logprob")                       # knockout vs baseline
    ev = layer_effects(table, "logprob", condition="control")  # the control's own effect
    ev = layer_effects(table, "logprob", against="control")    # knockout vs control, same layer
    ev[["layer", "n", "effect", "ci_low", "ci_high", "p", "direction"]]

| effect | per sample (condition vs baseline) | unit | harm when | test |
|---|---|---|---|---|
| ``accuracy`` | baseline score - condition score (the drop) | score | > 0 | ``mcnemar`` (or ``permutation``, ``wilcoxon``) |
| ``logprob`` | log p(a) under the condition - under the baseline | nats | < 0 | ``wilcoxon`` (or ``permutation``) |
| ``prob_change`` | p(a) under the condition / under the baseline - 1, samples the baseline answers correctly | fraction | < 0 | ``wilcoxon`` (or ``permutation``) |
| ``answer_change`` | 1 if the greedy answer differs from the baseline's | share | > 0 | ``binomial`` |

``a`` is the baseline's greedy first answer token (``answer_logprob`` in the results rows).
Log-probability changes within ``RESOLUTION`` (1e-4 nats) of zero count as exact zeros.
``effect`` is the mean over paired samples in that unit and sign; ``ci_low``/``ci_high`` its
seeded paired percentile bootstrap CI; ``p`` the two-sided p-value; ``direction`` +1 when the
test's own statistic leans towards harm, -1 towards benefit, 0 neither. Against a control
(``against="control"``) each sample's value is the condition's minus the control's at the same
layer, both against the baseline; count tests compare the two conditions' bad outcomes (wrong
answer, changed answer) with McNemar's exact test. ``answer_change`` against the baseline has
nothing to compare with: a deterministic model changes no answer under a knockout that does
nothing, so its ``binomial`` test asks whether more than ``min_effect`` of the answers change
(exact binomial, H0: share <= min_effect). docs/discovery.md justifies each choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from layerprobe.analysis.stats import (row_seed, bootstrap_ci, mcnemar_p, pair_with_baseline, sign_flip_p,
                                       signed_rank)
from layerprobe.errors import ConfigError, DataError

PROBABILITY_COLUMN = "answer_logprob"
# Per-sample changes of log p smaller than this (nats) count as exact zeros: the engines compute
# log p in float32 and reproduce each other to 2e-6 (tests/test_answer_probabilities.py); below
# 1e-4 a change's sign is rounding, and a layer that cannot read the image would otherwise show
# hundreds of signed "changes" of 1e-7 that dilute a signed-rank test.
RESOLUTION = 1e-4


@dataclass(frozen=True)
class Effect:
    name: str
    label: str              # axis label, unit included
    harm: int               # +1: larger values mean the condition hurts; -1: smaller values do
    min_effect: float       # default floor, in the effect's unit, towards harm (docs/discovery.md)
    tests: tuple[str, ...]  # the tests that suit it; the first is the default
    probabilities: bool     # needs answer_logprob in the results rows


EFFECTS = {e.name: e for e in (
    Effect("accuracy", "accuracy drop", +1, 0.02, ("mcnemar", "permutation", "wilcoxon"), False),
    Effect("logprob", "change of log p(baseline answer) (nats)", -1, 0.05, ("wilcoxon", "permutation"), True),
    Effect("prob_change", "relative change of p(baseline answer)", -1, 0.05, ("wilcoxon", "permutation"), True),
    Effect("answer_change", "share of answers changed", +1, 0.05, ("binomial",), False),
)}
COLUMNS = ["benchmark", "layer", "n", "baseline_acc", "knockout_acc", "drop", "n_lost", "n_gained",
           "effect", "ci_low", "ci_high", "p", "direction"]


def get_effect(name: str) -> Effect:
    if name not in EFFECTS:
        raise ConfigError(f"effect={name!r}: choose one of {', '.join(EFFECTS)}")
    return EFFECTS[name]


def resolve_test(effect: Effect, test: str | None) -> str:
    """``test`` checked against the effect (None: the effect's default)."""
    if test is None:
        return effect.tests[0]
    if test not in effect.tests:
        raise ConfigError(f"test={test!r}: expected one of {', '.join(effect.tests)} for effect={effect.name}")
    return test


def _check_probabilities(effect: Effect, pairs: pd.DataFrame) -> None:
    if not effect.probabilities:
        return
    lacking = pairs[pairs[PROBABILITY_COLUMN].isna() | pairs[f"base_{PROBABILITY_COLUMN}"].isna()]
    if len(lacking):
        row = lacking.iloc[0]
        raise DataError(f"effect={effect.name} needs answer probabilities, which this run predates (benchmark "
                        f"{row['benchmark']}, sample {row['sample_id']} has no {PROBABILITY_COLUMN}: results "
                        "schema 1); rerun the sweep into a new directory, or use effect=accuracy or answer_change")


def sample_values(table: pd.DataFrame, effect: Effect, correct_threshold: float = 0.5) -> pd.DataFrame:
    """Every non-baseline row paired with its baseline: benchmark, sample_id, condition, layer,
    score, base_score, ok, base_ok, value (the effect's per-sample value), bad (wrong answer for
    accuracy, changed answer for answer_change; the event count tests count)."""
    pairs = pair_with_baseline(table, "baseline", columns=(PROBABILITY_COLUMN,))
    pairs = pairs[pairs["layer"].notna()].copy()
    pairs["layer"] = pairs["layer"].astype(int)
    pairs["ok"], pairs["base_ok"] = pairs["score"] >= correct_threshold, pairs["base_score"] >= correct_threshold
    changed = pairs["prediction"].astype(str) != pairs["base_prediction"].astype(str)
    _check_probabilities(effect, pairs)
    shift = _resolved(pairs[PROBABILITY_COLUMN] - pairs[f"base_{PROBABILITY_COLUMN}"], effect)
    pairs["value"] = {"accuracy": pairs["base_score"] - pairs["score"], "logprob": shift,
                      "prob_change": np.expm1(shift), "answer_change": changed.astype(float)}[effect.name]
    if effect.name == "prob_change":   # measured on the samples the baseline answers correctly; NaN: not one
        pairs.loc[~pairs["base_ok"], "value"] = np.nan
    pairs["bad"] = changed if effect.name == "answer_change" else ~pairs["ok"]
    return pairs


def _against(values: pd.DataFrame, effect: Effect, condition: str, against: str) -> pd.DataFrame:
    """Per sample of ``condition``: d (its value minus the reference's) and the reference's bad
    outcome, the reference being the baseline or ``against`` at the same layer."""
    rows = values[values["condition"] == condition]
    if against == "baseline":
        ref_bad = False if effect.name == "answer_change" else ~rows["base_ok"]
        return rows.assign(d=rows["value"], ref_bad=ref_bad, ref_score=rows["base_score"])
    ref = values[values["condition"] == against][["benchmark", "sample_id", "layer", "value", "bad", "score"]]
    both = rows.merge(ref.rename(columns={"value": "ref_value", "bad": "ref_bad", "score": "ref_score"}),
                      on=["benchmark", "sample_id", "layer"])
    return both.assign(d=_resolved(both["value"] - both["ref_value"], effect))


def _resolved(values: pd.Series, effect: Effect) -> pd.Series:
    """Probability effects: changes within RESOLUTION of zero are zero."""
    return values.where((values.abs() > RESOLUTION) | values.isna(), 0.0) if effect.probabilities else values


def _test(test: str, effect: Effect, g: dict, against: str, min_effect: float, n_resamples: int,
          seed) -> tuple[float, int]:
    """(two-sided p, direction towards harm) of one (benchmark, layer) group (numpy columns)."""
    harm_d = effect.harm * g["d"]
    if test == "wilcoxon":
        return signed_rank(harm_d)
    if test == "permutation":
        return sign_flip_p(harm_d, max(n_resamples, 1), seed=seed), int(np.sign(harm_d.mean()))
    if test == "binomial" and against == "baseline":
        k, n = int(g["bad"].sum()), len(harm_d)
        return float(sps.binom.sf(k - 1, n, min_effect)), int(np.sign(k / n - min_effect))
    lost, gained = int((g["bad"] & ~g["ref_bad"]).sum()), int((~g["bad"] & g["ref_bad"]).sum())
    return mcnemar_p(lost, gained), int(np.sign(lost - gained))


def layer_effects(table: pd.DataFrame, effect: str = "accuracy", test: str | None = None,
                  condition: str = "knockout", against: str = "baseline", correct_threshold: float = 0.5,
                  confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0,
                  min_effect: float | None = None) -> pd.DataFrame:
    """One row per (benchmark, layer) of ``condition`` (see the module docstring); ``min_effect``
    (None: the effect's default) is needed by answer_change's binomial test only. ``n_resamples``
    drives the bootstrap and the permutation test; 0 skips the CI (NaN)."""
    eff = get_effect(effect)
    test = resolve_test(eff, test)
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence={confidence}: expected a value in (0, 1)")
    floor = eff.min_effect if min_effect is None else min_effect
    paired = _against(sample_values(table, eff, correct_threshold), eff, condition, against)
    paired = paired.assign(lost=paired["ref_score"].ge(correct_threshold) & ~paired["ok"],
                           gained=paired["ref_score"].lt(correct_threshold) & paired["ok"])
    columns = {c: paired[c].to_numpy(float if c in ("d", "score", "ref_score") else bool)
               for c in ("d", "score", "ref_score", "bad", "ref_bad", "lost", "gained")}
    out = []
    for (benchmark, layer), idx in sorted(paired.groupby(["benchmark", "layer"]).indices.items()):
        # prob_change leaves out the samples the baseline gets wrong: a layer may keep none, which
        # tests nothing (n 0, p 1) rather than dropping the layer from the evidence
        idx = idx[~np.isnan(columns["d"][idx])]
        g = {c: v[idx] for c, v in columns.items()}
        seed_ = row_seed(seed, benchmark, layer)
        low, high = bootstrap_ci(g["d"], confidence, n_resamples, seed=seed_)
        p, direction = _test(test, eff, g, against, floor, n_resamples, seed_ + [1]) if len(idx) else (1.0, 0)
        mean = {c: float(g[c].mean()) if len(idx) else float("nan") for c in ("ref_score", "score", "d")}
        out.append({"benchmark": benchmark, "layer": int(layer), "n": len(idx),
                    "baseline_acc": mean["ref_score"], "knockout_acc": mean["score"],
                    "drop": mean["ref_score"] - mean["score"],
                    "n_lost": int(g["lost"].sum()), "n_gained": int(g["gained"].sum()),
                    "effect": mean["d"], "ci_low": low, "ci_high": high, "p": p, "direction": direction})
    return pd.DataFrame(out, columns=COLUMNS)


def paired_effects(table: pd.DataFrame, test: str = "mcnemar", correct_threshold: float = 0.5,
                   confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """The accuracy effect of every knockout against the baseline: ``drop`` (= ``effect``) with its
    bootstrap CI, correct -> wrong (``n_lost``) and wrong -> correct (``n_gained``) counts, p."""
    return layer_effects(table, "accuracy", test, correct_threshold=correct_threshold, confidence=confidence,
                         n_resamples=n_resamples, seed=seed)
