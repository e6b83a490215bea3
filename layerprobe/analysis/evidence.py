"""The evidence table of a discovery: per (benchmark, layer) the knockout's effect against the
baseline and, where the sweep ran a control condition, the control's own effect and the
knockout-versus-control contrast; every p-value of the table FDR-corrected as one family.

    evidence, test = gather_evidence(table, get_effect("logprob"), None, require_specific=False,
                                     min_effect=0.1, fdr_method="bh", alpha=0.05)
    evidence[["layer", "effect", "ci_low", "ci_high", "q", "significant"]]

**Control rows.** A control condition is a set of rows with ``condition == "control"`` and
``layer`` = the layer whose knockout it controls, on the same sample ids as the baseline and the
knockout, with the same fields (prediction, score, answer_logprob, ...). Where present the table
gains ``control_effect``/``control_ci_low``/``control_ci_high``/``control_p``/``control_q`` (the
control against the baseline) and ``specific_effect``/``specific_ci_low``/``specific_ci_high``/
``specific_p``/``specific_q``/``specific_direction`` (knockout minus control, paired per sample), and
``specific`` says whether the knockout's harm beats the control's. Those tests join the FDR
family, so every q in the table is from one correction.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from layerprobe.analysis.effects import Effect, layer_effects, resolve_test
from layerprobe.analysis.stats import fdr_qvalues

CONTROL = "control"
_CONTRAST = ["effect", "ci_low", "ci_high", "p", "direction"]


def _prefixed(frame: pd.DataFrame, prefix: str) -> pd.DataFrame:
    return frame[["benchmark", "layer", *_CONTRAST]].rename(columns={c: f"{prefix}_{c}" for c in _CONTRAST})


def gather_evidence(table: pd.DataFrame, effect: Effect, test: str | None, require_specific: bool,
                    min_effect: float, fdr_method: str, alpha: float, correct_threshold: float = 0.5,
                    confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0,
                    p_override=None) -> tuple[pd.DataFrame, str]:
    """(evidence, the test used). ``p_override(evidence)`` may replace p-values before the
    correction (an adaptive sweep's design p-values, ``layerprobe.analysis.sequential``)."""
    test = resolve_test(effect, test)
    common = dict(test=test, correct_threshold=correct_threshold, confidence=confidence,
                  n_resamples=n_resamples, seed=seed, min_effect=min_effect)
    evidence = layer_effects(table, effect.name, **common)
    evidence.insert(4, "effect_name", effect.name)
    families = [("", "p")]
    if (table["condition"] == CONTROL).any():
        own = _prefixed(layer_effects(table, effect.name, condition=CONTROL, **common), "control")
        contrast = _prefixed(layer_effects(table, effect.name, against=CONTROL, **common), "specific")
        evidence = evidence.merge(own, on=["benchmark", "layer"], how="left").merge(
            contrast, on=["benchmark", "layer"], how="left")
        families += [("control_", "control_p"), ("specific_", "specific_p")]
    if p_override is not None:
        evidence = p_override(evidence)
    # one correction over every p-value the table reports
    q = fdr_qvalues(np.concatenate([evidence[col].to_numpy(float) for _, col in families]), fdr_method)
    for i, (prefix, _) in enumerate(families):
        evidence[f"{prefix}q"] = q[i * len(evidence):(i + 1) * len(evidence)]
    evidence["harm"] = effect.harm * evidence["effect"]
    evidence["significant"] = (evidence["q"] <= alpha) & (evidence["direction"] > 0) & (evidence["harm"] >= min_effect)
    if "specific_p" in evidence:
        evidence["specific"] = (evidence["specific_q"] <= alpha) & (evidence["specific_direction"] > 0)
        if require_specific:
            evidence["significant"] &= evidence["specific"].fillna(False).astype(bool)
    return evidence, test
