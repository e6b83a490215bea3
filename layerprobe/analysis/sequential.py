"""The adaptive sweep's design: interim looks that stop a layer's knockout once it is decided, and
the p-values that keep the discovery's error rate valid whatever the looks did.

    design = Design(looks=(0.25, 0.5), effect="logprob", alpha=0.05)
    plan = design.plan(total=512, layers=32)         # sample counts per stage, alpha per look
    decisions = look(table_upto_stage, plan, look_index=0, running={("organism", 0), ...})
    evidence = design_pvalues(evidence, plan, stopped)   # what discovery corrects

At interim look k (after ``n_k`` of the N samples) every layer still running is tested on all of
its samples so far, with the discovery's own effect and test:

- **stop, irrelevant** (futility, non-binding) when the one-sided ``1 - futility_beta`` upper
  bootstrap bound of its harm is below ``min_effect``: it cannot plausibly reach the floor
  discovery needs to call it a fusion layer;
- **stop, found** (early rejection) when its p-value is <= ``alpha_k``, its test leans towards
  harm and the one-sided lower bound of its harm is >= ``min_effect``; where the sweep runs a
  control, also when the knockout-versus-control test is <= ``alpha_k`` and leans towards harm
  (a layer's control runs and stops with it);
- otherwise it runs on the next stage's samples.

The overall p-value of a layer, the one the FDR correction sees, is (``A_k`` = alpha spent at
looks 1..k, ``A`` = all interim alpha):

- found at look k with p-value ``p_k``: ``A_(k-1) + p_k`` (at most ``A_k``);
- ran to the end with p-value ``p`` on all N samples: ``min(1, A + p)``;
- stopped as irrelevant: 1.

Under a layer's null hypothesis P(overall p <= t) <= t for every t, whatever the dependence
between looks (the looks' contributions telescope: sum over k of min(alpha_k, t - A_(k-1)) plus
(t - A) for the end), and stopping as irrelevant only raises a p-value, so the futility rule can
be anything (non-binding); the bound needs of an early stop only that its p_k <= alpha_k, so
asking more of it (the control's contrast) keeps it. Benjamini-Hochberg over these p-values keeps its false discovery rate
as in the full sweep; the default ``interim_alpha = alpha / layers`` makes every early
rejection one that BH over the run's layers keeps. docs/discovery.md has the details.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from layerprobe.analysis.effects import get_effect, layer_effects, resolve_test
from layerprobe.analysis.evidence import CONTROL
from layerprobe.errors import ConfigError

FOUND, IRRELEVANT, RUNNING = "found", "irrelevant", "running"


@dataclass(frozen=True)
class Design:
    looks: tuple[float, ...] = (0.25, 0.5)   # fractions of the samples at the interim looks
    effect: str = "logprob"
    min_effect: float | None = None          # None: the effect's default floor
    test: str | None = None                  # None: the effect's default test
    alpha: float = 0.05                      # the discovery's FDR level
    futility_beta: float = 0.01              # one-sided level of the bounds that stop a layer
    interim_alpha: float | None = None       # alpha spent on early rejection; None: alpha / layers
    correct_threshold: float = 0.5
    n_resamples: int = 2000
    seed: int = 0

    def __post_init__(self):
        eff = get_effect(self.effect)
        resolve_test(eff, self.test)
        looks = tuple(float(x) for x in self.looks)
        if any(not 0 < x < 1 for x in looks) or list(looks) != sorted(set(looks)):
            raise ConfigError(f"design.looks={list(self.looks)}: expected increasing fractions in (0, 1)")
        object.__setattr__(self, "looks", looks)
        if not 0 < self.alpha < 1 or not 0 < self.futility_beta < 0.5:
            raise ConfigError(f"design: alpha={self.alpha} must be in (0, 1) and futility_beta="
                              f"{self.futility_beta} in (0, 0.5)")
        if self.interim_alpha is not None and not 0 <= self.interim_alpha < self.alpha:
            raise ConfigError(f"design.interim_alpha={self.interim_alpha}: expected 0 <= value < alpha={self.alpha}")

    @property
    def floor(self) -> float:
        return get_effect(self.effect).min_effect if self.min_effect is None else float(self.min_effect)

    def plan(self, total: int, layers: int) -> "Plan":
        """Stage sizes for ``total`` samples (cumulative, the last = total) and alpha per look;
        ``layers``: how many knockout layers the looks test (a layer's control is not tested)."""
        if total < 1 or layers < 1:
            raise ConfigError(f"adaptive sweep: needs samples and knockout layers (got {total}, {layers})")
        ends = sorted({max(1, math.ceil(f * total)) for f in self.looks} - {total}) + [total]
        spend = self.alpha / layers if self.interim_alpha is None else self.interim_alpha
        per_look = [spend / (len(ends) - 1)] * (len(ends) - 1) if len(ends) > 1 else []
        return Plan(self, ends, per_look)

    def record(self) -> dict:
        return {**asdict(self), "looks": list(self.looks), "min_effect": self.floor}


@dataclass
class Plan:
    design: Design
    ends: list[int]              # cumulative sample count at the end of each stage
    alpha_at: list[float]        # alpha of each interim look
    spent: list[float] = field(init=False)   # alpha spent up to and including each look

    def __post_init__(self):
        self.spent = list(np.cumsum(self.alpha_at)) if self.alpha_at else []

    @property
    def interim_total(self) -> float:
        return float(self.spent[-1]) if self.spent else 0.0

    def stage_of(self, position: int) -> int:
        """1-based stage of the sample at ``position`` (0-based, in the unsharded subset)."""
        return next(k for k, end in enumerate(self.ends, start=1) if position < end)


def _bounds(evidence: pd.DataFrame, harm: int) -> tuple[pd.Series, pd.Series]:
    """One-sided lower and upper bounds of the harm (the CI columns at level 1 - 2 beta)."""
    if harm > 0:
        return evidence["ci_low"], evidence["ci_high"]
    return -evidence["ci_high"], -evidence["ci_low"]


def look(table: pd.DataFrame, plan: Plan, look_index: int, running) -> pd.DataFrame:
    """Decisions at interim look ``look_index`` (0-based) for the knockouts still ``running``
    ((benchmark, layer) pairs), from ``table`` (every row of stages <= look_index + 1):
    benchmark, layer, n, effect, lower, upper, p, direction, decision (found | irrelevant | running)."""
    d = plan.design
    eff = get_effect(d.effect)
    keys = pd.MultiIndex.from_frame(table[["benchmark", "layer"]].astype({"layer": "float"}))
    wanted = pd.MultiIndex.from_tuples([(b, float(x)) for b, x in running]) if running else keys[:0]
    rows = table[(table["condition"] == "baseline") | keys.isin(wanted)]
    ev = layer_effects(rows, d.effect, d.test, correct_threshold=d.correct_threshold,
                       confidence=1 - 2 * d.futility_beta, n_resamples=d.n_resamples, seed=d.seed,
                       min_effect=d.floor)
    lower, upper = _bounds(ev, eff.harm)
    alpha = plan.alpha_at[look_index]
    found = (ev["p"] <= alpha) & (ev["direction"] > 0) & (lower >= d.floor)
    specific_p = np.full(len(ev), np.nan)
    if (rows["condition"] == CONTROL).any():
        # a layer with a control stops as found only once its knockout also beats the control at
        # this look's level; otherwise both run on, so that the contrast discovery tests
        # (require_specific) gets every sample
        spec = layer_effects(rows, d.effect, d.test, against=CONTROL, correct_threshold=d.correct_threshold,
                             n_resamples=d.n_resamples, seed=d.seed, min_effect=d.floor)
        spec = spec.set_index(["benchmark", "layer"]).reindex(pd.MultiIndex.from_frame(ev[["benchmark", "layer"]]))
        specific_p = spec["p"].to_numpy(float)
        found &= (specific_p <= alpha) & (spec["direction"].to_numpy(float) > 0)
    irrelevant = upper < d.floor
    ev = ev.assign(lower=lower, upper=upper, specific_p=specific_p,
                   decision=np.where(found, FOUND, np.where(irrelevant, IRRELEVANT, RUNNING)))
    return ev[["benchmark", "layer", "n", "effect", "lower", "upper", "p", "direction", "specific_p", "decision"]]


def design_pvalues(evidence: pd.DataFrame, plan: Plan, stopped: dict) -> pd.DataFrame:
    """``evidence`` (one row per benchmark x layer, ``p`` on all of a layer's samples) with ``p``
    replaced by the design's overall p-value; ``stopped`` maps (benchmark, layer) to
    (decision, look index) for the layers an interim look stopped. Adds ``stopped_at`` (samples at
    the stop, NaN for layers that ran to the end) and ``decision``."""
    out = evidence.copy()
    p, at, decision = [], [], []
    for bench, layer, p_all in zip(out["benchmark"], out["layer"], out["p"]):
        kind, k = stopped.get((bench, int(layer)), (None, None))
        if kind == FOUND:
            p.append(float((plan.spent[k - 1] if k > 0 else 0.0) + p_all))
        elif kind == IRRELEVANT:
            p.append(1.0)
        else:
            p.append(float(min(1.0, plan.interim_total + p_all)))
        at.append(plan.ends[k] if kind else np.nan)
        decision.append(kind or "final")
    return out.assign(p=p, stopped_at=at, decision=decision)


def stage_rows(table: pd.DataFrame, upto: int) -> pd.DataFrame:
    """The rows of stages 1..``upto`` (rows without a stage count as stage 1)."""
    stage = table["stage"].fillna(1) if "stage" in table else pd.Series(1, index=table.index)
    return table[stage.astype(int) <= upto]


def replay(table: pd.DataFrame, plan: Plan, position: dict) -> tuple[pd.DataFrame, dict]:
    """Run the design on a finished full sweep's ``table`` (``position``: sample id -> its 0-based
    place in the unsharded subset; each benchmark is its own adaptive sweep): (the rows adaptive
    sweeps compute, with their ``stage``; the stops, as ``design_pvalues`` takes them). What the
    adaptive sweep decides from the same rows, without running a model: for the power evidence
    and the design's tests."""
    table = table.assign(stage=[plan.stage_of(position[s]) for s in table["sample_id"]])
    knock = table[table["condition"] == "knockout"]
    running = {(b, int(x)) for b, x in zip(knock["benchmark"], knock["layer"])}
    stopped = {}
    for k in range(len(plan.ends) - 1):
        if not running:
            break
        decisions = look(stage_rows(table, k + 1), plan, k, running)
        for bench, layer, decision in zip(decisions["benchmark"], decisions["layer"], decisions["decision"]):
            if decision != RUNNING:
                stopped[(bench, int(layer))] = (decision, k)
        running -= set(stopped)
    keep = pd.concat([ran(part, plan, stopped) for _, part in table.groupby("benchmark", sort=False)])
    return table[keep.reindex(table.index)].reset_index(drop=True), stopped


def ran(table: pd.DataFrame, plan: Plan, stopped: dict) -> pd.Series:
    """Which rows of ``table`` (one benchmark, with ``stage``) the design computes: a knockout up
    to the stage of its stop, the baseline on every stage some knockout runs."""
    bench = table["benchmark"].iloc[0] if len(table) else None
    last = {key[1]: k + 1 for key, (_, k) in stopped.items() if key[0] == bench}
    stages = len(plan.ends)
    knock = table["condition"] != "baseline"
    limit = table["layer"].map(lambda x: last.get(int(x), stages) if pd.notna(x) else stages)
    layers = table.loc[knock, "layer"].dropna().astype(int).unique()
    baseline_until = max((last.get(int(x), stages) for x in layers), default=stages)
    return (knock & (table["stage"] <= limit)) | (~knock & (table["stage"] <= baseline_until))


def plan_from_record(record: dict) -> tuple[Plan, dict]:
    """(plan, stops) of an adaptive run's record (``adaptive.json``, see layerprobe.sweep.adaptive)."""
    fields = {k: v for k, v in record["design"].items() if k in Design.__dataclass_fields__}
    plan = Plan(Design(**{**fields, "looks": tuple(fields["looks"])}), list(record["ends"]), list(record["alpha_at"]))
    stopped = {(s["benchmark"], int(s["layer"])): (s["decision"], int(s["look"])) for s in record.get("stopped", [])}
    return plan, stopped


def adjust_for_design(evidence: pd.DataFrame, records: dict) -> pd.DataFrame:
    """What discovery corrects on adaptive runs: the knockout p-values of the design
    (``design_pvalues``), and each control p-value times the number of stages (a layer's tests
    on a sample count the looks chose: a union bound over the counts it could have had).
    ``records``: one run's record (it has ``design``) or benchmark -> record; benchmarks without
    one keep their p-values."""
    by_bench = {b: records for b in evidence["benchmark"].unique()} if "design" in records else records
    parts = []
    for bench, part in evidence.groupby("benchmark", sort=False):
        if bench not in by_bench:
            parts.append(part)
            continue
        plan, stopped = plan_from_record(by_bench[bench])
        part = design_pvalues(part, plan, stopped)
        for column in ("control_p", "specific_p"):
            if column in part:
                part[column] = np.minimum(1.0, part[column] * len(plan.ends))
        parts.append(part)
    return pd.concat(parts).loc[evidence.index]


def record(plan: Plan, stopped: dict, layers: int, total: int) -> dict:
    """The JSON-able record of a design and its stops: what ``adaptive.json`` holds and what
    ``discover(..., adaptive=...)`` reads (``conditions``: the knockout layers the looks test)."""
    return {"design": plan.design.record(), "conditions": layers, "total": total, "ends": list(plan.ends),
            "alpha_at": [float(a) for a in plan.alpha_at],
            "stopped": [{"benchmark": b, "layer": int(l), "decision": d, "look": int(k)}
                        for (b, l), (d, k) in sorted(stopped.items())]}
