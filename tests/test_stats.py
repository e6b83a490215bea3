"""The paired statistics against scipy's own and against known numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from layerprobe.errors import ConfigError, DataError
from layerprobe.analysis.effects import paired_effects
from layerprobe.analysis.stats import bh_qvalues, bootstrap_ci, mcnemar_p, sign_flip_p, wilcoxon_p


def test_bh_qvalues_match_the_textbook_example_and_skip_nan():
    p = [0.01, 0.04, 0.03, 0.005, np.nan]
    q = bh_qvalues(p)
    # sorted p 0.005, 0.01, 0.03, 0.04 -> p*m/rank = 0.02, 0.02, 0.04, 0.04
    np.testing.assert_allclose(q[:4], [0.02, 0.04, 0.04, 0.02])
    assert np.isnan(q[4])
    assert np.isnan(bh_qvalues([np.nan])).all()


def test_mcnemar_is_the_exact_binomial_on_discordant_pairs():
    # 10 lost, 2 gained: 2 * P(X <= 2 | 12, 1/2) = 2 * 79 / 4096
    assert mcnemar_p(10, 2) == pytest.approx(2 * 79 / 4096)
    assert mcnemar_p(2, 10) == mcnemar_p(10, 2)
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(30, 0) == pytest.approx(sps.binomtest(30, 30).pvalue)


def test_bootstrap_ci_agrees_with_scipy_and_is_seeded():
    rng = np.random.default_rng(0)
    d = rng.choice([-1, -0.3, 0, 0.3, 0.6, 1], size=300, p=[0.05, 0.05, 0.7, 0.05, 0.05, 0.1])
    low, high = bootstrap_ci(d, 0.95, 5000, seed=1)
    ref = sps.bootstrap((d,), np.mean, n_resamples=5000, method="percentile", rng=np.random.default_rng(2))
    print(f"CI ours [{low:.4f}, {high:.4f}], scipy [{ref.confidence_interval.low:.4f}, {ref.confidence_interval.high:.4f}]")
    assert low == pytest.approx(ref.confidence_interval.low, abs=0.006)
    assert high == pytest.approx(ref.confidence_interval.high, abs=0.006)
    assert bootstrap_ci(d, 0.95, 5000, seed=1) == (low, high)
    assert np.isnan(bootstrap_ci([], 0.95, 100)[0]) and np.isnan(bootstrap_ci(d, 0.95, 0)[0])


def test_bootstrap_ci_covers_the_true_drop_about_95_percent_of_the_time():
    rng = np.random.default_rng(3)
    values, probs = np.array([-1.0, 0.0, 1.0]), np.array([0.1, 0.7, 0.2])
    true_mean = values @ probs
    hits = [low <= true_mean <= high for low, high in
            (bootstrap_ci(rng.choice(values, 200, p=probs), 0.95, 1000, seed=s) for s in range(400))]
    print(f"coverage {np.mean(hits):.3f}")
    assert 0.92 <= np.mean(hits) <= 0.98


def test_sign_flip_p_matches_scipy_exact_permutation_test():
    d = np.array([0.3, 1.0, 1.0, -0.3, 0.6, 1.0, 0.0, 0.9, -1.0, 1.0, 0.6])
    exact = sps.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf).pvalue
    ours = sign_flip_p(d, n_resamples=40000, seed=0)
    print(f"sign-flip p ours {ours:.4f}, scipy exact {exact:.4f}")
    assert ours == pytest.approx(exact, abs=0.006)
    assert sign_flip_p(np.zeros(5)) == 1.0
    assert sign_flip_p(np.ones(40), n_resamples=999) == pytest.approx(1 / 1000)


@pytest.mark.parametrize("test", ["mcnemar", "permutation", "wilcoxon"])
def test_each_test_holds_its_level_under_the_null(test):
    rng = np.random.default_rng(4)
    levels = np.array([0, 0.3, 0.6, 0.9, 1.0])
    ps = []
    for rep in range(300):
        ability = rng.choice([0.9, 0.1, 0.5], size=120, p=[0.5, 0.3, 0.2])
        base = np.where(rng.random(120) < ability, rng.choice(levels[2:], 120), rng.choice(levels[:2], 120))
        knock = np.where(rng.random(120) < ability, rng.choice(levels[2:], 120), rng.choice(levels[:2], 120))
        if test == "mcnemar":
            ps.append(mcnemar_p(int(np.sum((base >= .5) & (knock < .5))), int(np.sum((base < .5) & (knock >= .5)))))
        elif test == "permutation":
            ps.append(sign_flip_p(base - knock, 999, seed=rep))
        else:
            ps.append(wilcoxon_p(base - knock))
    rate = np.mean(np.array(ps) <= 0.05)
    print(f"{test}: type I error {rate:.3f}")
    assert rate <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 300)


def _table(rows):
    table = pd.DataFrame(rows, columns=["benchmark", "sample_id", "condition", "layer", "score", "skipped"])
    table["layer"] = table["layer"].astype("Int64")
    return table


def test_paired_effects_pairs_samples_and_counts_flips():
    rows = [("vqa", f"s{i}", "baseline", None, s, None) for i, s in enumerate([1.0, 1.0, 0.6, 0.0, 0.3])]
    rows += [("vqa", f"s{i}", "knockout", 3, s, None) for i, s in enumerate([0.0, 1.0, 0.3, 1.0])]
    rows += [("vqa", "s4", "knockout", 3, None, "prompt too long")]            # skipped: unpaired
    rows += [("vqa", "s9", "knockout", 3, 0.0, None)]                          # no baseline: unpaired
    rows += [("vqa", "s0", "contrastive", None, 0.0, None)]                    # another condition
    effects = paired_effects(_table(rows), n_resamples=500)
    row = effects.iloc[0]
    assert (row["benchmark"], row["layer"], row["n"]) == ("vqa", 3, 4)
    assert row["baseline_acc"] == pytest.approx(0.65) and row["knockout_acc"] == pytest.approx(0.575)
    assert row["drop"] == pytest.approx(0.075)
    assert (row["n_lost"], row["n_gained"]) == (2, 1)        # s0, s2 lost; s3 gained
    assert row["p"] == pytest.approx(1.0)
    assert row["ci_low"] <= row["drop"] <= row["ci_high"]


def test_paired_effects_refuses_duplicates_and_unknown_tests():
    rows = [("vqa", "s0", "baseline", None, 1.0, None), ("vqa", "s0", "baseline", None, 0.0, None)]
    with pytest.raises(DataError, match="sample s0 has more than one baseline row"):
        paired_effects(_table(rows))
    with pytest.raises(ConfigError, match="test='ttest': expected one of mcnemar, permutation, wilcoxon"):
        paired_effects(_table(rows[:1]), test="ttest")
    with pytest.raises(DataError, match="lacks column"):
        paired_effects(pd.DataFrame({"benchmark": ["x"]}))
