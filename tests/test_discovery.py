"""Discovery against planted ground truth: tables with known drops at chosen layers, noise
elsewhere, several benchmarks and shards, at several depths; and the error rate on null tables."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from layerprobe.analysis.discovery import discover, discover_runs, late_start_for, missing_layers, to_profile
from layerprobe.io.runs import merge_runs
from layerprobe.errors import ConfigError, ProfileError
from planted_results import NOISY, planted_table, shard, write_run

# depth -> (fusion layers, review layer, other late layer with a smaller drop or None)
CASES = {
    12: ([1, 3], 10, None),
    24: ([0, 2, 5, 9, 10], 21, None),
    32: ([2, 4, 8, 11, 12, 13], 29, 26),
    40: ([3, 7, 19, 25], 37, 31),
}


@pytest.mark.parametrize("num_layers", sorted(CASES))
def test_discovers_exactly_the_planted_layers_at_any_depth(num_layers):
    fusion, review, weaker_late = CASES[num_layers]
    planted = {layer: 0.3 + 0.05 * (i % 3) for i, layer in enumerate(fusion)}
    planted[review] = 0.45
    if weaker_late is not None:
        planted[weaker_late] = 0.2          # significant too, but the review layer drops more
    table = planted_table(num_layers, planted, seed=num_layers)
    found = discover(table, num_layers=num_layers, effect="accuracy")
    print(num_layers, found.summary())
    assert found.fusion_layers == fusion
    assert found.review_layer == review
    assert found.post_integrated_layer == review - 1
    assert set(found.late_drops) == {review} | ({weaker_late} if weaker_late is not None else set())
    planted_rows = found.evidence[found.evidence["layer"].isin(list(planted))]
    assert (planted_rows["ci_low"] > 0).all()
    null_rows = found.evidence[~found.evidence["layer"].isin(list(planted))]
    assert not null_rows["significant"].any()


def test_shards_and_runs_merge_into_the_same_discovery(tmp_path):
    num_layers, planted = 16, {1: 0.4, 5: 0.35, 14: 0.4}
    table = planted_table(num_layers, planted, benchmarks=("vqav2",), n=600, seed=3)
    other = planted_table(num_layers, planted, benchmarks=("textvqa",), n=300, seed=4)
    runs = [write_run(tmp_path / f"shard{k}", shard(table, k, 3), num_layers) for k in range(3)]
    runs.append(write_run(tmp_path / "textvqa", other, num_layers))
    merged = discover(runs, effect="accuracy")
    whole = discover(pd.concat([table, other], ignore_index=True), num_layers=num_layers, effect="accuracy")
    assert merged.fusion_layers == whole.fusion_layers == [1, 5]
    assert merged.review_layer == whole.review_layer == 14
    pd.testing.assert_frame_equal(merged.evidence, whole.evidence)
    assert merged.evidence.groupby("benchmark")["n"].max().to_dict() == {"textvqa": 300, "vqav2": 600}
    assert merged.provenance["model_config_hash"] == "cfg-1"


def test_skipped_and_unpaired_samples_are_left_out():
    table = planted_table(8, {1: 0.4, 7: 0.4}, benchmarks=("gqa",), n=300, seed=5)
    knock = table.index[(table["condition"] == "knockout") & (table["layer"] == 1)][:50]
    table.loc[knock, "skipped"] = "too long"
    table.loc[knock, "score"] = None
    table = table.drop(table.index[(table["condition"] == "baseline")][:20])   # no baseline for 20
    found = discover(table, num_layers=8, effect="accuracy")
    n = found.evidence.set_index("layer")["n"]
    assert n[1] == 300 - 50 - len(set(range(20)) - set(range(50))) and n[2] == 280


def test_min_benchmarks_requires_agreement():
    a = planted_table(10, {2: 0.4, 8: 0.4}, benchmarks=("vqav2",), n=400, seed=6)
    b = planted_table(10, {8: 0.4}, benchmarks=("gqa",), n=400, seed=7)
    both = pd.concat([a, b], ignore_index=True)
    assert discover(both, num_layers=10, effect="accuracy").fusion_layers == [2]
    strict = discover(both, num_layers=10, min_benchmarks=2, effect="accuracy")
    assert strict.fusion_layers == [] and strict.review_layer == 8


def test_prob_change_with_no_correct_baseline_answer_is_a_result_that_names_the_effects_for_every_sample():
    """A model that answers nothing right (a random one, a hard benchmark) leaves prob_change no
    sample: every layer tests nothing (n 0, p 1), the profile records no layer, and the note
    names the effects that read every sample."""
    table = planted_table(4, {}, benchmarks=("vqav2",), n=20, seed=1).assign(score=0.0, prediction="no",
                                                                              answer_logprob=-1.0)
    found = discover(table, num_layers=4)
    assert (found.fusion_layers, found.review_layer) == ([], None)
    assert found.evidence["layer"].tolist() == [0, 1, 2, 3] and (found.evidence["n"] == 0).all()
    assert (found.evidence["p"] == 1).all() and found.evidence["effect"].isna().all()
    assert missing_layers(found) == ("no sample to test: effect=prob_change reads the samples the baseline answers "
                                     "correctly, and it answers none; the profile records no layer; discover with "
                                     "effect=logprob (every sample) or effect=accuracy")
    assert to_profile(found).fusion_layers == []
    found = discover(table, num_layers=4, effect="logprob")
    assert (found.fusion_layers, found.review_layer) == ([], None) and (found.evidence["n"] == 20).all()


def test_no_late_drop_gives_a_profile_without_review_layer_unless_set_by_hand():
    table = planted_table(12, {2: 0.4, 4: 0.4}, benchmarks=("vqav2",), n=400, seed=8)
    found = discover(table, num_layers=12, effect="accuracy")
    assert found.fusion_layers == [2, 4] and found.review_layer is None and found.post_integrated_layer is None
    assert "no significant drop in the late part (layers 9..11)" in missing_layers(found)
    recorded = to_profile(found)
    assert (recorded.fusion_layers, recorded.review_layer, recorded.post_integrated_layer) == ([2, 4], None, None)
    with pytest.raises(ProfileError, match="review_layer is null"):
        recorded.require_layers()
    # nothing found at all: the note does not send the user to set a review layer that cannot work
    null = discover(planted_table(12, {}, benchmarks=("vqav2",), n=400, seed=8), num_layers=12, effect="accuracy")
    assert null.fusion_layers == [] and "no layer's knockout is significant" in missing_layers(null)
    with pytest.raises(ProfileError, match=r"review_layer is null \(its discovery found no layer\)"):
        to_profile(null).require_layers()
    manual = discover(table, num_layers=12, review_layer=10, post_integrated_layer=8, effect="accuracy")
    profile = to_profile(manual)
    assert (profile.review_layer, profile.post_integrated_layer) == (10, 8)


@pytest.mark.parametrize("test", ["permutation", "wilcoxon"])
def test_other_tests_find_the_same_layers(test):
    table = planted_table(12, {1: 0.35, 6: 0.35, 10: 0.45}, n=400, seed=9)
    found = discover(table, num_layers=12, test=test, n_resamples=4000, effect="accuracy")
    assert (found.fusion_layers, found.review_layer) == ([1, 6], 10)


def _false_discoveries(num_layers, planted, seed, alpha):
    """(discoveries, false ones, false ones without the BH correction) on one noisy table; min_effect
    0 so that only the statistics guard."""
    table = planted_table(num_layers, planted, n=200, seed=seed, ability=NOISY)
    found = discover(table, num_layers=num_layers, alpha=alpha, min_effect=0.0, n_resamples=0, effect="accuracy")
    null = ~found.evidence["layer"].isin(list(planted))
    false = int((found.evidence["significant"] & null).sum())
    uncorrected = int(((found.evidence["p"] <= alpha) & (found.evidence["drop"] > 0) & null).sum())
    return int(found.evidence["significant"].sum()), false, uncorrected


def test_false_discovery_rate_on_null_tables_stays_below_alpha():
    """200 seeded tables without any effect, depths 12..40, two benchmarks: every discovery is
    false, so the FDR equals the family-wise error rate. The uncorrected rate shows the tables
    can produce false discoveries, so the bound is not vacuous."""
    alpha, reps, depths = 0.05, 200, [12, 24, 32, 40]
    runs = [_false_discoveries(depths[r % 4], {}, 1000 + r, alpha) for r in range(reps)]
    fwer = np.mean([false > 0 for _, false, _ in runs])
    uncorrected = np.mean([u > 0 for _, _, u in runs])
    print(f"null tables: FDR = FWER = {fwer:.3f} (without BH: {uncorrected:.3f}) over {reps} tables, alpha {alpha}")
    assert fwer <= alpha
    assert uncorrected > 5 * alpha


def test_false_discovery_proportion_with_planted_layers_stays_below_alpha():
    alpha, reps, fdp = 0.05, 100, []
    for r in range(reps):
        num_layers = [12, 24, 32, 40][r % 4]
        layers = np.random.default_rng(r).choice(num_layers, 4, replace=False)
        total, false, _ = _false_discoveries(num_layers, {int(x): 0.3 for x in layers}, 5000 + r, alpha)
        fdp.append(false / max(total, 1))
    print(f"planted tables: FDR (mean FDP) = {np.mean(fdp):.3f} over {reps} tables, alpha {alpha}")
    assert np.mean(fdp) <= alpha


@pytest.mark.parametrize("num_layers,late_fraction,expected", [
    (32, 0.25, 24), (12, 0.25, 9), (40, 0.25, 30), (24, 0.25, 18), (10, 0.25, 8), (2, 0.9, 1), (4, 0.5, 2)])
def test_late_start_is_relative_to_depth(num_layers, late_fraction, expected):
    assert late_start_for(num_layers, late_fraction) == expected


def test_overlapping_shards_mixed_models_and_edges_are_refused(tmp_path):
    table = planted_table(6, {}, benchmarks=("vqav2",), n=20, seed=1)
    a = write_run(tmp_path / "a", table, 6)
    b = write_run(tmp_path / "b", shard(table, 0, 2), 6)
    with pytest.raises(ConfigError, match=r"vqav2: sample .* appear in several runs \(.*a, .*b\)"):
        merge_runs([a, b])
    c = write_run(tmp_path / "c", table, 6, config_hash="cfg-2")
    d = write_run(tmp_path / "d", table, 6, edges="image->last")
    with pytest.raises(ConfigError, match="runs differ in model config_hash: cfg-1 in .*a; cfg-2 in .*c"):
        merge_runs([a, c])
    with pytest.raises(ConfigError, match="runs differ in edges"):
        merge_runs([a, d])


def test_num_layers_falls_back_to_the_table_with_a_warning(tmp_path):
    run = write_run(tmp_path / "r", planted_table(6, {1: 0.5, 5: 0.5}, n=200, seed=2), None)
    with pytest.warns(UserWarning, match="using 6"):
        found = discover(run, effect="accuracy")
    assert found.num_layers == 6 and found.review_layer == 5


def test_discover_runs_writes_profile_csv_and_figure(tmp_path):
    run = write_run(tmp_path / "r", planted_table(12, {2: 0.4, 10: 0.4}, n=300, seed=10), 12)
    result = discover_runs([run], effect="accuracy")
    names = sorted(p.name for p in result.written)
    assert names == ["discovery.csv", "discovery.pdf", "discovery.png", "profile.yaml"]
    assert result.profile.fusion_layers == [2] and result.profile.review_layer == 10
    assert len(pd.read_csv(run / "discovery.csv")) == 2 * 12
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert discover_runs(run, out=tmp_path / "x" / "p.yaml", figure=False, effect="accuracy").missing is None


def test_benjamini_yekutieli_is_an_option_recorded_with_the_error_rate():
    from scipy.stats import false_discovery_control

    table = planted_table(12, {2: 0.4, 10: 0.45}, n=400, seed=3)
    bh, by = discover(table, num_layers=12, effect="accuracy"), discover(table, num_layers=12, fdr_method="by", effect="accuracy")
    assert np.allclose(by.evidence["q"], false_discovery_control(by.evidence["p"], method="by"))
    assert (by.evidence["q"] >= bh.evidence["q"] - 1e-12).all() and (by.evidence["q"] > bh.evidence["q"]).any()
    assert by.fusion_layers == [2] and by.review_layer == 10
    profile = to_profile(by)
    assert profile.statistics["fdr_method"] == "by"
    assert "false discovery rate" in profile.statistics["error_rate"]
    with pytest.raises(ConfigError, match="fdr_method='holm'"):
        discover(table, num_layers=12, fdr_method="holm", effect="accuracy")
