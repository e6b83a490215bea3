"""The four effects against hand computations, the specificity control on synthetic tables, and
runs that predate answer probabilities."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from layerprobe.analysis.discovery import discover, discover_runs, to_profile
from layerprobe.analysis.effects import EFFECTS, RESOLUTION, layer_effects
from layerprobe.errors import DataError
from layerprobe.io.results import ResultsWriter

ROOT = Path(__file__).resolve().parents[1]


def _rows(condition, layer, logprob, prediction, score, bench="vqa"):
    return [{"benchmark": bench, "sample_id": f"s{i}", "condition": condition, "layer": layer, "answer_logprob": lp,
             "prediction": pr, "score": sc, "skipped": None} for i, (lp, pr, sc) in enumerate(zip(logprob, prediction, score))]


def _table(rows) -> pd.DataFrame:
    table = pd.DataFrame(rows)
    table["layer"] = table["layer"].astype("Int64")
    return table


BASE = ([-0.1, -0.2, -0.05, -1.5, -0.3, -0.7], ["cat", "dog", "red", "two", "yes", "no"], [1, 1, 1, 0, 1, 0.6])
KNOCK = ([-2.1, -0.2 - 5e-5, -0.55, -0.5, -0.3, -0.9], ["dog", "dog", "red", "three", "yes", "yes"], [0, 1, 1, 0, 1, 0.3])


def test_each_effect_equals_a_hand_computation():
    table = _table(_rows("baseline", None, *BASE) + _rows("knockout", 4, *KNOCK))
    base_lp, knock_lp = np.array(BASE[0]), np.array(KNOCK[0])
    shift = knock_lp - base_lp
    shift[np.abs(shift) <= RESOLUTION] = 0                # s1 moved by 5e-5 nats: rounding, a zero
    got = {e: layer_effects(table, e, n_resamples=0).iloc[0] for e in EFFECTS}
    assert got["logprob"]["effect"] == pytest.approx(shift.mean())
    assert got["logprob"]["p"] == pytest.approx(sps.wilcoxon(shift[shift != 0]).pvalue)
    assert got["logprob"]["direction"] == 1               # the ranks lean towards lower log p
    correct = np.array(BASE[2]) >= 0.5                    # prob_change: the study's samples only
    assert got["prob_change"]["n"] == correct.sum() == 5
    assert got["prob_change"]["effect"] == pytest.approx(np.expm1(shift[correct]).mean())
    assert got["accuracy"]["effect"] == pytest.approx(np.mean(np.array(BASE[2]) - np.array(KNOCK[2])))
    assert (got["accuracy"]["n_lost"], got["accuracy"]["n_gained"]) == (2, 0)       # s0 and s5
    assert got["accuracy"]["p"] == pytest.approx(sps.binomtest(2, 2).pvalue)
    changed = 3                                           # s0, s3, s5
    assert got["answer_change"]["effect"] == pytest.approx(changed / 6)
    assert got["answer_change"]["p"] == pytest.approx(sps.binomtest(changed, 6, 0.05, alternative="greater").pvalue)


def test_a_layer_that_moves_nothing_beyond_rounding_is_a_clean_null():
    rng = np.random.default_rng(0)
    base = rng.normal(-0.5, 0.2, 40)
    table = _table(_rows("baseline", None, base, ["a"] * 40, [1] * 40)
                   + _rows("knockout", 0, base + rng.uniform(-1e-6, 1e-6, 40), ["a"] * 40, [1] * 40))
    row = layer_effects(table, "logprob").iloc[0]
    assert (row["effect"], row["ci_low"], row["ci_high"], row["p"], row["direction"]) == (0, 0, 0, 1.0, 0)


def probability_table(num_layers: int, planted: dict[int, float], n: int = 300, seed: int = 0,
                      control: dict[int, float] | None = None) -> pd.DataFrame:
    """Per sample a baseline log p; every knockout moves it by noise, a planted layer lowers it by
    ``size`` nats on average, and a control (when given, at every layer) lowers it by its own size."""
    rng = np.random.default_rng(seed)
    base = rng.normal(-0.3, 0.2, n)
    rows = _rows("baseline", None, base, ["a"] * n, [1.0] * n)
    for layer in range(num_layers):
        for cond, sizes in (("knockout", planted), ("control", control)):
            if sizes is None:
                continue
            lp = base + rng.normal(0, 0.05, n) - rng.exponential(sizes.get(layer, 0.0) or 1e-9, n)
            wrong = lp < np.log(0.3)
            rows += _rows(cond, layer, lp, np.where(wrong, "b", "a"), np.where(wrong, 0.0, 1.0))
    return _table(rows)


def test_require_specific_keeps_only_layers_that_beat_their_control():
    # layer 2 reads the image; at layer 5 blocking as many text keys hurts just as much
    table = probability_table(8, {2: 0.8, 5: 0.8, 7: 0.8}, control={5: 0.8})
    plain = discover(table, num_layers=8, effect="logprob")
    specific = discover(table, num_layers=8, effect="logprob", require_specific=True)
    assert (plain.fusion_layers, plain.review_layer) == ([2, 5], 7)
    assert (specific.fusion_layers, specific.review_layer) == ([2], 7)
    ev = specific.evidence.set_index("layer")
    assert bool(ev.loc[2, "specific"]) and not bool(ev.loc[5, "specific"])
    assert ev.loc[5, "control_effect"] < -0.5 and abs(ev.loc[2, "control_effect"]) < 0.05
    # one FDR family: the knockout, control and contrast tests corrected together
    from layerprobe.analysis.stats import fdr_qvalues
    together = fdr_qvalues(np.concatenate([ev["p"], ev["control_p"], ev["specific_p"]]))
    np.testing.assert_allclose(ev["q"], together[:8])
    np.testing.assert_allclose(ev["specific_q"], together[16:])
    assert specific.settings["require_specific"] is True
    assert to_profile(specific).statistics["effect"] == "logprob"


def test_require_specific_without_control_rows_is_a_one_line_error():
    table = probability_table(4, {1: 0.8})
    with pytest.raises(DataError, match=r"^require_specific=true: the sweep had no control condition \(no 'control' "
                                        r"rows\); run it with one, or set require_specific=false$"):
        discover(table, num_layers=4, effect="logprob", require_specific=True)


def _write_old_run(run_dir: Path, table: pd.DataFrame) -> Path:
    """A run as results schema 1 wrote it: no answer probabilities."""
    header = {"config_hash": "x", "model": {"name": "toy", "config_hash": "c", "num_layers": 4},
              "data": {"name": "vqa"}, "edges": "image->text"}
    rows = table.drop(columns=["answer_logprob"]).assign(layer=lambda t: t["layer"].astype(object))
    rows = [{**r, "layer": None if pd.isna(r["layer"]) else int(r["layer"])} for r in rows.to_dict("records")]
    with ResultsWriter(run_dir / "results.jsonl", header={**header}) as out:
        out.append_many(rows)
    text = (run_dir / "results.jsonl").read_text().replace('"schema": 2', '"schema": 1', 1)
    (run_dir / "results.jsonl").write_text(text)
    return run_dir


def test_runs_that_predate_probabilities_still_discover_with_accuracy(tmp_path):
    run = _write_old_run(tmp_path / "old", probability_table(4, {1: 1.5}, n=200))
    assert discover(run, effect="accuracy").fusion_layers == [1]
    assert discover(run, effect="answer_change").fusion_layers == [1]
    for effect in ("logprob", "prob_change"):
        with pytest.raises(DataError, match=f"^effect={effect} needs answer probabilities, which this run predates .*"
                                            "use effect=accuracy or answer_change$"):
            discover(run, effect=effect)
    done = subprocess.run([sys.executable, "-m", "layerprobe.cli.discover", f"run={run}", "figure=false"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("layerprobe: error: effect=prob_change needs answer probabilities")


def test_discovery_figure_draws_the_effect_and_the_control(tmp_path):
    table = probability_table(8, {2: 0.8, 7: 0.8}, control={}, n=200)
    run = tmp_path / "r"
    header = {"config_hash": "x", "model": {"name": "toy", "config_hash": "c", "num_layers": 8},
              "data": {"name": "vqa"}, "edges": "image->text"}
    with ResultsWriter(run / "results.jsonl", header=header) as out:
        out.append_many([{**r, "layer": None if pd.isna(r["layer"]) else int(r["layer"])} for r in table.to_dict("records")])
    result = discover_runs(run, effect="logprob")
    assert result.profile.fusion_layers == [2] and result.profile.review_layer == 7
    assert result.profile.statistics["effect"] == "logprob"
    csv = pd.read_csv(run / "discovery.csv")
    assert {"effect", "control_effect", "specific_p", "q", "control_q"} <= set(csv.columns)
    assert (run / "discovery.png").stat().st_size > 10_000
    assert math.isclose(csv.loc[csv["layer"] == 2, "effect"].iloc[0], result.discovery.evidence.set_index("layer").loc[2, "effect"])
