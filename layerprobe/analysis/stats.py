"""Paired statistics of a knockout sweep: per benchmark and layer, how much accuracy the knockout
costs on the very samples the baseline answered, with a CI and a p-value.

    table = read_results(run_dir)                       # long-form: one row per sample x condition
    effects = paired_effects(table, test="mcnemar")     # benchmark, layer, n, drop, ci_low, ci_high, p
    effects["q"] = bh_qvalues(effects["p"])             # Benjamini-Hochberg across all rows

``drop`` is baseline accuracy minus knockout accuracy (the benchmark's own per-sample score,
averaged), so a positive drop means the knockout hurts. Tests are two-sided:

- ``mcnemar`` (default): exact McNemar test (``scipy.stats.binomtest`` on the discordant pairs)
  on per-sample correctness, ``score >= correct_threshold``. Exact, so it resolves the tiny
  p-values a correction over 100+ tests needs, and needs no resampling.
- ``permutation``: paired sign-flip permutation test of the mean score difference, i.e. of
  ``drop`` itself, on the graded scores; p-values resolve down to ``1 / (n_resamples + 1)``.
- ``wilcoxon``: ``scipy.stats.wilcoxon`` signed-rank test on the score differences.

The CI is a seeded paired percentile bootstrap of ``drop`` (samples resampled with both of their
scores), seeded per (benchmark, layer) so a row's CI does not depend on which other rows exist.
"""

from __future__ import annotations

import functools
import zlib

import numpy as np
import pandas as pd
from scipy import stats as sps

from layerprobe.errors import ConfigError, DataError

TESTS = ("mcnemar", "permutation", "wilcoxon")
EFFECT_COLUMNS = [
    "benchmark", "layer", "n", "baseline_acc", "knockout_acc", "drop",
    "ci_low", "ci_high", "n_lost", "n_gained", "p",
]


FDR_METHODS = ("bh", "by")


def fdr_qvalues(p, method: str = "bh") -> np.ndarray:
    """FDR-adjusted p-values (q): Benjamini-Hochberg (``bh``, valid for independent or positively
    dependent tests) or Benjamini-Yekutieli (``by``, valid under any dependence, more
    conservative). NaN entries (no test) stay NaN and do not count."""
    if method not in FDR_METHODS:
        raise ConfigError(f"fdr_method={method!r}: choose one of {', '.join(FDR_METHODS)}")
    p = np.asarray(p, dtype=float)
    q = np.full(p.shape, np.nan)
    tested = ~np.isnan(p)
    if tested.any():
        q[tested] = sps.false_discovery_control(p[tested], method=method)
    return q


def bh_qvalues(p) -> np.ndarray:
    return fdr_qvalues(p, "bh")


def _value_counts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    values, counts = np.unique(x, return_counts=True)
    return values, counts


def bootstrap_ci(values, confidence: float = 0.95, n_resamples: int = 2000,
                 seed=0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``values`` (per-sample scores, or paired
    differences); seeded, and independent of the order of the values (merged shards, resumed runs).

    Resampling n items with replacement is a multinomial draw over the distinct values, and VQA
    score differences take only a handful of values, so this draws (n_resamples x k) counts
    instead of (n_resamples x n) indices: the same bootstrap distribution at a fraction of the cost.
    """
    d = np.asarray(values, dtype=float)
    if d.size == 0 or n_resamples <= 0:
        return float("nan"), float("nan")
    values, counts = _value_counts(d)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(d.size, counts / d.size, size=n_resamples)
    means = draws @ values / d.size
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def stratified_bootstrap_ci(groups, confidence: float = 0.95, n_resamples: int = 2000,
                            seed=0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean over groups of each group's mean, resampling within
    each group (benchmarks as strata: each keeps its own sample count). Seeded, order-free."""
    groups = [np.asarray(g, dtype=float) for g in groups if len(g)]
    if not groups or n_resamples <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.zeros(n_resamples)
    for g in groups:
        values, counts = _value_counts(g)
        means += rng.multinomial(g.size, counts / g.size, size=n_resamples) @ values / g.size
    means /= len(groups)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def stratified_sign_flip_p(groups, n_resamples: int = 10000, seed=0) -> float:
    """Two-sided sign-flip p-value for "the mean over groups of each group's mean difference is 0":
    each difference is weighted by 1 / (groups x its group's size), and the weighted differences'
    signs are flipped at random."""
    groups = [np.asarray(g, dtype=float) for g in groups if len(g)]
    if not groups:
        return float("nan")
    weighted = np.concatenate([g / (len(groups) * g.size) for g in groups])
    return sign_flip_p(weighted, n_resamples, seed)


@functools.lru_cache(maxsize=65536)
def mcnemar_p(n_lost: int, n_gained: int) -> float:
    """Exact two-sided McNemar p-value from the two discordant counts (cached: the same small
    counts recur across layers and benchmarks)."""
    discordant = n_lost + n_gained
    if discordant == 0:
        return 1.0
    return float(sps.binomtest(n_lost, discordant, 0.5).pvalue)


def sign_flip_p(differences, n_resamples: int = 10000, seed=0) -> float:
    """Two-sided paired permutation p-value for mean(differences) == 0.

    Under the null each difference's sign is a fair coin. Differences of equal magnitude are
    interchangeable, so the number of positive signs per distinct magnitude is binomial: one draw
    per magnitude instead of one per sample (``scipy.stats.permutation_test`` draws n signs per
    resample). Counts the observed statistic as one resample, so p >= 1 / (n_resamples + 1).
    """
    d = np.asarray(differences, dtype=float)
    d = d[d != 0]
    if d.size == 0:
        return 1.0
    magnitudes, counts = _value_counts(np.abs(d))
    observed = abs(d.sum())
    rng = np.random.default_rng(seed)
    positives = rng.binomial(counts, 0.5, size=(n_resamples, counts.size))
    resampled = np.abs((2 * positives - counts) @ magnitudes)
    # a relative tolerance so float summation order cannot split ties
    extreme = np.count_nonzero(resampled >= observed * (1 - 1e-12))
    return float((1 + extreme) / (n_resamples + 1))


def wilcoxon_p(differences) -> float:
    d = np.asarray(differences, dtype=float)
    if np.count_nonzero(d) == 0:
        return 1.0
    return float(sps.wilcoxon(d, zero_method="wilcox").pvalue)


def _row_seed(seed: int, benchmark: str, layer: int) -> list[int]:
    return [int(seed), zlib.crc32(str(benchmark).encode()), int(layer)]


def scored_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Rows with a score that were not skipped."""
    t = table[table["score"].notna()] if "score" in table else table.iloc[:0]
    return t[t["skipped"].isna()] if "skipped" in t else t


def pair_with_baseline(table: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Every scored row of another condition joined to the scored ``baseline`` row of the same
    (benchmark, sample): benchmark, sample_id, condition, layer, base_score, score,
    base_prediction, prediction. Samples without both rows are left out; a sample with two rows
    of one (condition, layer) is a DataError. The one pairing behind the sweep's per-layer tests
    and the eval comparison."""
    missing = {"benchmark", "sample_id", "condition", "layer", "score"} - set(table.columns)
    if missing:
        raise DataError(f"results table lacks column(s) {sorted(missing)}")
    scored = scored_rows(table)
    keys = ["benchmark", "sample_id"]
    is_base = scored["condition"] == baseline
    base, other = scored[is_base], scored[~is_base]
    for part, cols in ((base, keys), (other, keys + ["condition", "layer"])):
        duplicated = part.duplicated(cols)
        if duplicated.any():
            first = part.loc[duplicated].iloc[0]
            at = "" if pd.isna(first["layer"]) else f" at layer {first['layer']}"
            raise DataError(f"benchmark {first['benchmark']}: sample {first['sample_id']} has more than one "
                            f"{first['condition']} row{at}")
    if "prediction" not in scored:
        base, other = base.assign(prediction=None), other.assign(prediction=None)
    pairs = other[keys + ["condition", "layer", "score", "prediction"]].merge(
        base[keys + ["score", "prediction"]].rename(columns={"score": "base_score", "prediction": "base_prediction"}),
        on=keys)
    return pairs.astype({"score": float, "base_score": float})


def paired_effects(table: pd.DataFrame, test: str = "mcnemar", correct_threshold: float = 0.5,
                   confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per (benchmark, layer): n paired samples, mean baseline/knockout score, drop with
    its bootstrap CI, discordant counts (correct -> wrong = n_lost, wrong -> correct = n_gained)
    and the two-sided p-value of ``test``. ``n_resamples`` drives the bootstrap and the
    permutation test; 0 skips the CI (NaN)."""
    if test not in TESTS:
        raise ConfigError(f"test={test!r}: expected one of {', '.join(TESTS)}")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence={confidence}: expected a value in (0, 1)")
    pairs = pair_with_baseline(table, "baseline")
    pairs = pairs[(pairs["condition"] == "knockout") & pairs["layer"].notna()].rename(
        columns={"score": "knockout_score", "base_score": "baseline_score"})
    pairs["layer"] = pairs["layer"].astype(int)
    pairs["diff"] = pairs["baseline_score"] - pairs["knockout_score"]
    base_ok = pairs["baseline_score"] >= correct_threshold
    knock_ok = pairs["knockout_score"] >= correct_threshold
    pairs["lost"], pairs["gained"] = base_ok & ~knock_ok, ~base_ok & knock_ok
    groups = pairs.groupby(["benchmark", "layer"], sort=True)
    effects = groups.agg(n=("diff", "size"), baseline_acc=("baseline_score", "mean"),
                         knockout_acc=("knockout_score", "mean"), drop=("diff", "mean"),
                         n_lost=("lost", "sum"), n_gained=("gained", "sum")).reset_index()
    effects[["n", "n_lost", "n_gained"]] = effects[["n", "n_lost", "n_gained"]].astype(int)
    if test == "mcnemar":
        effects["p"] = [mcnemar_p(b, c) for b, c in zip(effects["n_lost"], effects["n_gained"])]
    ci_low, ci_high, p_values = [], [], []
    if n_resamples > 0 or test != "mcnemar":
        for (benchmark, layer), diff in groups["diff"]:
            row_seed = _row_seed(seed, benchmark, layer)
            low, high = bootstrap_ci(diff.to_numpy(float), confidence, n_resamples, seed=row_seed)
            ci_low.append(low)
            ci_high.append(high)
            if test == "permutation":
                p_values.append(sign_flip_p(diff.to_numpy(float), max(n_resamples, 1), seed=row_seed + [1]))
            elif test == "wilcoxon":
                p_values.append(wilcoxon_p(diff.to_numpy(float)))
    effects["ci_low"] = ci_low or np.nan
    effects["ci_high"] = ci_high or np.nan
    if p_values:
        effects["p"] = p_values
    return effects[EFFECT_COLUMNS]
