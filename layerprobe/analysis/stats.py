"""Paired statistics of a knockout sweep: per benchmark and layer, how much accuracy the knockout
costs on the very samples the baseline answered, with a CI and a p-value.

    pairs = pair_with_baseline(table, "baseline", columns=("answer_logprob",))   # one row per pair
    low, high = bootstrap_ci(differences, seed=[0, 17, 3])   # seeded percentile bootstrap of a mean
    mcnemar_p(n_lost, n_gained); wilcoxon_p(d); signed_rank(d); sign_flip_p(d)   # two-sided
    q = fdr_qvalues(p, "bh")                                  # Benjamini-Hochberg (or "by")

The per-layer effects built from these (accuracy, log-probability, ...) are in
``layerprobe.analysis.effects``. Tests are two-sided:

- exact McNemar (``scipy.stats.binomtest`` on the discordant pairs): exact, so it resolves the
  tiny p-values a correction over 100+ tests needs, and needs no resampling;
- paired sign-flip permutation test of a mean difference; p-values resolve down to
  ``1 / (n_resamples + 1)``;
- Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, zeros dropped), with ``signed_rank``
  also saying which way the ranks lean.

CIs are seeded paired percentile bootstraps of a mean, independent of the order of the values.
"""

from __future__ import annotations

import functools
import zlib

import numpy as np
import pandas as pd
from scipy import stats as sps

from layerprobe.errors import ConfigError, DataError

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
    return signed_rank(differences)[0]


def signed_rank(differences) -> tuple[float, int]:
    """Two-sided Wilcoxon signed-rank p-value of the differences (exact zeros dropped: they carry
    no sign) and the direction the ranks lean: +1 when the positive differences hold more rank
    than the negative ones, -1 the reverse, 0 on a tie or when every difference is zero."""
    d = np.asarray(differences, dtype=float)
    d = d[d != 0]
    if d.size == 0:
        return 1.0, 0
    ranks = sps.rankdata(np.abs(d))
    lean = float(ranks[d > 0].sum() - ranks[d < 0].sum())
    return float(sps.wilcoxon(d, zero_method="wilcox").pvalue), int(np.sign(lean))


def row_seed(seed: int, benchmark: str, layer: int) -> list[int]:
    return [int(seed), zlib.crc32(str(benchmark).encode()), int(layer)]


def scored_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Rows with a score that were not skipped."""
    t = table[table["score"].notna()] if "score" in table else table.iloc[:0]
    return t[t["skipped"].isna()] if "skipped" in t else t


def pair_with_baseline(table: pd.DataFrame, baseline: str, columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """Every scored row of another condition joined to the scored ``baseline`` row of the same
    (benchmark, sample): benchmark, sample_id, condition, layer, base_score, score,
    base_prediction, prediction, and for each of ``columns`` (e.g. ``answer_logprob``) the row's
    value and the baseline's as ``base_<column>`` (NaN where a row lacks it). Samples without both
    rows are left out; a sample with two rows of one (condition, layer) is a DataError. The one
    pairing behind the sweep's per-layer tests and the eval comparison."""
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
    extra = list(columns)
    for column in extra:
        if column not in scored:
            base, other = base.assign(**{column: np.nan}), other.assign(**{column: np.nan})
    kept = ["score", "prediction", *extra]
    pairs = other[keys + ["condition", "layer", *kept]].merge(
        base[keys + kept].rename(columns={c: f"base_{c}" for c in kept}), on=keys)
    return pairs.astype({"score": float, "base_score": float, **{c: float for c in extra},
                         **{f"base_{c}": float for c in extra}})
