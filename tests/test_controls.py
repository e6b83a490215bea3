"""The specificity control (``control=text_keys``): which keys it blocks (checked against positions
found from the input ids alone), that the edit equals a hand-edited eager mask, that the fast
engine's control rows equal the naive engine's (answers and probability fields), and the whole
path through the commands: a sharded sweep with a control, killed and resumed, merged, discovered
with ``require_specific=true`` and plotted."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
import yaml

import layerprobe
from layerprobe.core.controls import control_edges
from layerprobe.core.dispatch import controller
from layerprobe.core.edges import encode_for, edge_set
from layerprobe.data.registry import load_benchmark
from layerprobe.analysis.discovery import discover
from layerprobe.analysis.effects import EFFECTS
from layerprobe.analysis.sequential import Design
from layerprobe.errors import ConfigError
from layerprobe.io.results import read_results
from layerprobe.io.runs import merge_runs, read_adaptive
from layerprobe.sweep.conditions import sweep_conditions
from layerprobe.sweep.loop import run_sweep
from layerprobe_testing import HandMask, QUESTIONS, ROOT, SUFFIX, forward, make_images, make_samples

pytestmark = pytest.mark.core
PROBABILITIES = ("answer_logprob", "reference_logprob", "margin")
TOLERANCE = 1e-4   # fast vs naive on the probability fields, float32 (as for the knockouts)
# longer than the image's 16 tokens, and of different lengths (the second is left-padded)
LONG = ["what is the colour of the small cat that sits on the red table near the open window ?",
        "what is the colour of the small dog that sits on the red table near the window ?"]


def _layout(loaded, control, images, questions, ids=None):
    samples = make_samples(images, questions)
    for sample, sample_id in zip(samples, ids or []):
        sample.sample_id = sample_id
    inputs = encode_for([control], loaded, samples, images, questions)
    return inputs, controller(loaded).layout_of(inputs["input_ids"], inputs["attention_mask"])


def _by_hand(inputs, loaded, before, sink=False):
    """(B, T) valid non-visual positions before ``before`` (B,), from the ids alone; each row's
    first valid position (the begin-of-sequence token) only where ``sink``."""
    ids, valid = inputs["input_ids"], inputs["attention_mask"].bool()
    pos = torch.arange(ids.shape[1])
    first = torch.tensor([int(torch.nonzero(v).min()) for v in valid])
    return (valid & (ids != loaded.model.config.image_token_id) & (pos[None] < before[:, None])
            & (sink | (pos[None] != first[:, None])))


def test_text_keys_before_the_queries_as_many_as_the_image_holds():
    loaded = layerprobe.load_model("tiny:llava:4")
    images = make_images(2, seed=4)
    # image->text: every query follows the image, so the pool is the text before it but the
    # begin-of-sequence token (2 tokens here, fewer than the image's 16): all of it, whatever the
    # draw; with the sink, 3
    control = control_edges("image->text", "text_keys")
    inputs, layout = _layout(loaded, control, images, QUESTIONS[:2])
    first_visual = torch.stack([torch.nonzero(v).min() for v in inputs["input_ids"] == loaded.model.config.image_token_id])
    keys = control.keys(layout)
    assert torch.equal(keys, _by_hand(inputs, loaded, first_visual))
    assert keys.sum(1).tolist() == [2, 2] and not keys[:, 0].any()
    with_sink = control_edges("image->text", "text_keys_and_sink").keys(layout)
    assert torch.equal(with_sink, _by_hand(inputs, loaded, first_visual, sink=True)) and with_sink[:, 0].all()
    # image->last: the pool is every text token before the last one, more than the image's 16 here
    control = control_edges("image->last", "text_keys")
    inputs, layout = _layout(loaded, control, images, LONG)
    keys, visual = control.keys(layout), layout.visual.sum(1)
    pool = _by_hand(inputs, loaded, torch.full((2,), inputs["input_ids"].shape[1] - 1))
    assert (pool.sum(1) > visual).all() and keys.sum(1).tolist() == visual.tolist()
    assert not (keys & ~pool).any()
    # the draw is the sample's: the same alone as in a padded batch, another with another seed
    alone_inputs, alone = _layout(loaded, control, images[1:], LONG[1:], ids=["1"])
    offset = inputs["input_ids"].shape[1] - alone_inputs["input_ids"].shape[1]
    assert offset > 0 and torch.equal(control.keys(alone)[0], keys[1, offset:])
    other = control_edges("image->last", "text_keys", seed=1)
    assert other.name == "image->last|control=text_keys,seed=1"
    assert not torch.equal(other.keys(alone), control.keys(alone))
    assert control_edges("image->last", "text_keys") is control
    assert edge_set(control.name) is control   # registered: taken by name like any edge set


def test_the_control_edit_equals_a_hand_edited_eager_mask():
    loaded = layerprobe.load_model("tiny:llava:32", attn_implementation="eager")
    control = control_edges("image->text", "text_keys")
    images = make_images(3, seed=5)
    inputs = encode_for([control], loaded, make_samples(images, QUESTIONS[:3]), images, [q + SUFFIX for q in QUESTIONS[:3]])
    ids, valid = inputs["input_ids"], inputs["attention_mask"].bool()
    visual = ids == loaded.model.config.image_token_id
    pos = torch.arange(ids.shape[1])
    last_visual = torch.where(visual, pos, -1).max(1).values
    first_visual = torch.where(visual, pos, ids.shape[1]).min(1).values
    queries = valid & (pos[None] > last_visual[:, None])
    blocked = queries[:, :, None] & (_by_hand(inputs, loaded, first_visual))[:, None, :]
    with layerprobe.knockout(loaded, layers=[3, 17], edges=control):
        ours = forward(loaded, inputs).logits
    hooks = [HandMask(loaded, layer, blocked) for layer in (3, 17)]
    try:
        reference = forward(loaded, inputs).logits
    finally:
        for hook in hooks:
            hook.handle.remove()
    assert (ours - reference).abs().max() < 1e-5
    assert (ours - forward(loaded, inputs).logits).abs().max() > 1e-4   # it does edit
    with layerprobe.knockout(loaded, layers=[3, 17]):
        assert (ours - forward(loaded, inputs).logits).abs().max() > 1e-4   # and is not the knockout


# the organism's only text before its image is the sink: text_keys would block nothing there
@pytest.mark.parametrize("model,edges,control", [("organism", "image->text", "text_keys_and_sink"),
                                                 ("tiny:llava_next:32", "image->text", "text_keys"),
                                                 ("tiny:llava:32", "image->last", "text_keys")])
def test_fast_control_rows_equal_naive(tmp_path, model, edges, control):
    loaded = layerprobe.load_model(model)
    data = load_benchmark("organism", limit=10)
    tables = {}
    for engine in ("naive", "fast"):
        run_sweep(loaded, data, tmp_path / engine, layers=[2, 5, 29], edges=edges, batch_size=5, engine=engine,
                  progress=False, timing_samples=0, control=control,
                  engine_opts={"variants_per_batch": 4})
        table = read_results(tmp_path / engine).sort_values(["sample_id", "condition", "layer"]).reset_index(drop=True)
        tables[engine] = table
    naive, fast = tables["naive"], tables["fast"]
    assert len(naive) == 10 * 7 and (naive["condition"] == "control").sum() == 30
    assert fast["prediction"].tolist() == naive["prediction"].tolist()
    for column in PROBABILITIES:
        both = naive[column].notna()
        assert (fast[column].notna() == both).all()
        assert (fast.loc[both, column] - naive.loc[both, column]).abs().max() < TOLERANCE, column
    control = naive[naive["condition"] == "control"].set_index(["sample_id", "layer"])
    base = naive[naive["condition"] == "baseline"].set_index("sample_id")["answer_logprob"]
    moved = (control["answer_logprob"] - base.reindex(control.index.get_level_values(0)).to_numpy()).abs()
    # the control edits something where a layer can react, and nothing where it cannot (the
    # organism's unplanted layers are exact identities)
    reacts = moved.index.get_level_values(1).isin(loaded.extra.get("organism", {}).get("planted", range(32)))
    assert moved[reacts].max() > 1e-4 and (reacts.all() or moved[~reacts].max() == 0)


def test_controls_and_their_configuration_are_checked():
    with pytest.raises(ConfigError, match="control='shuffle': unknown control; choose one of text_keys, "
                                          "text_keys_and_sink"):
        control_edges("image->text", "shuffle")
    with pytest.raises(ConfigError, match="control_seed='1': must be an integer"):
        control_edges("image->text", "text_keys", seed="1")
    conds = sweep_conditions(8, layers=[2, 5], window=3, control=control_edges("image->text", "text_keys"))
    assert [(c.name, c.layer, c.knocked_out) for c in conds[3:]] == [("control", 2, (1, 2, 3)), ("control", 5, (4, 5, 6))]
    assert conds[3].edges.needs == ("sample",) and edge_set("image->question").needs == ("question",)
    assert control_edges("image->question", "text_keys").needs == ("question", "sample")


# the adaptive sweep ------------------------------------------------------------------------
def test_a_control_follows_its_layer_through_the_adaptive_sweep(tmp_path):
    loaded = layerprobe.load_model("organism")
    data = load_benchmark("organism", limit=128)
    layers = [0, 2, 5, 12, 29]
    run_sweep(loaded, data, tmp_path, layers=layers, adaptive=Design(), control="text_keys", progress=False,
              timing_samples=0)
    record = read_adaptive(tmp_path)
    # the design counts layers (its looks test knockouts), not conditions
    assert record["conditions"] == len(layers)
    assert record["alpha_at"] == [pytest.approx(0.05 / len(layers) / 2)] * 2
    table = read_results(tmp_path)
    rows = table[table["condition"] != "baseline"].groupby(["condition", "layer"])["sample_id"].apply(set)
    for layer in layers:
        assert rows[("control", layer)] == rows[("knockout", layer)]   # the same samples, stage for stage
    stopped = {s["layer"]: s for s in record["stopped"]}
    assert {0, 5} <= {layer for layer, s in stopped.items() if s["decision"] == "irrelevant"}
    assert record["answers"]["full_sweep"] == 128 * (1 + 2 * len(layers))
    assert record["answers"]["computed"] == len(table) < record["answers"]["full_sweep"]
    found = discover(tmp_path, num_layers=32, require_specific=True)
    assert {"control_q", "specific_q"} <= set(found.evidence.columns) and found.settings["adaptive"]


# the commands ------------------------------------------------------------------------------
def _sweep(run_dir, shard, *extra):
    return [sys.executable, "-m", "layerprobe.cli.sweep", f"run_dir={run_dir}", "progress=false", "timing_samples=0",
            "control=text_keys", "data.limit=160", "data.num_shards=2", f"data.shard={shard}", "batch_size=8",
            "layers=[0,2,4,12,29]", *extra]


def _layers(profile):
    written = yaml.safe_load(profile.read_text())
    return written["fusion_layers"], written["review_layer"]


def _run(cmd, cwd=ROOT):
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def test_cli_control_sweep_discovers_with_require_specific_and_plots(tmp_path):
    run = tmp_path / "run"
    _run([sys.executable, "-m", "layerprobe.cli.sweep", f"run_dir={run}", "progress=false", "timing_samples=0",
          "control=text_keys_and_sink", "data.limit=48", "layers=[1,2]", "batch_size=8"])
    table = read_results(run)
    variants = table[table["condition"] != "baseline"].groupby(["condition", "layer"]).size()
    assert variants.to_dict() == {("control", 1): 48, ("control", 2): 48, ("knockout", 1): 48, ("knockout", 2): 48}
    assert (table["condition"] == "baseline").sum() == 48
    discover_cmd = [sys.executable, "-m", "layerprobe.cli.discover", f"run={run}", "effect=logprob",
                    "review_layer=31"]   # by hand: 48 samples find no review layer
    _run(discover_cmd, cwd=tmp_path)
    assert _layers(run / "profile.yaml") == ([2], 31)
    # layer 2's control blocks the sink, which costs it more than the image does: with
    # require_specific no fusion layer is left, which is a result (exit 0): the profile records
    # fusion_layers: [] beside the review layer given by hand, and the note says so once
    done = _run(discover_cmd + ["require_specific=true"], cwd=tmp_path)
    notes = [line for line in done.stdout.splitlines() if line.startswith("note: ")]
    assert notes == ["note: no fusion layer: no significant drop before layer 24, so the profile has "
                     "fusion_layers: [], which contrastive attention refuses"]
    assert _layers(run / "profile.yaml") == ([], 31)
    evidence = pd.read_csv(run / "discovery.csv").set_index("layer")
    assert (evidence.loc[1, ["effect", "control_effect"]] == 0).all()   # layer 1 is an identity
    assert evidence.loc[2, "control_effect"] < evidence.loc[2, "effect"] < 0 and not evidence.loc[2, "specific"]
    (run / "summary.csv").unlink()
    _run([sys.executable, "-m", "layerprobe.cli.plot", f"run={run}", "effect=logprob"], cwd=tmp_path)
    summary = pd.read_csv(run / "summary.csv")   # one run: its figures go back into it
    assert sorted(summary.loc[summary["condition"] == "control", "layer"]) == [1, 2]
    assert (run / "masking_curves.png").is_file()


@pytest.mark.slow
def test_sharded_control_sweep_resumes_then_discovers_specific_layers_and_plots(tmp_path):
    shards = [tmp_path / "shard0of2", tmp_path / "shard1of2"]
    for k, run in enumerate(shards):
        _run(_sweep(run, k))
    # a shard killed mid-write: the file cut inside a row; the rerun completes it and equals the
    # uninterrupted run row for row
    whole = read_results(shards[1])
    text = (shards[1] / "results.jsonl").read_bytes()
    (shards[1] / "results.jsonl").write_bytes(text[: len(text) * 2 // 3])
    assert len(read_results(shards[1])) < len(whole)
    _run(_sweep(shards[1], 1))
    key = ["sample_id", "condition", "layer"]
    resumed = read_results(shards[1])
    cols = key + ["prediction", "answer_logprob", "margin"]
    pd.testing.assert_frame_equal(resumed[cols].sort_values(key).reset_index(drop=True),
                                  whole[cols].sort_values(key).reset_index(drop=True))
    header = json.loads((shards[0] / "results.jsonl").read_text().splitlines()[0])["_header"]
    assert header["control"] == {"name": "text_keys", "seed": 0}
    table, _ = merge_runs(shards)
    assert len(table) == 160 * 11 and (table["condition"] == "control").sum() == 160 * 5
    # the merged shards are the unsharded run's rows
    single = tmp_path / "single"
    _run([c for c in _sweep(single, 0) if not c.startswith("data.")] + ["data.limit=160"])
    whole = read_results(single).sort_values(key).reset_index(drop=True)
    merged = table.sort_values(key).reset_index(drop=True)
    assert merged["prediction"].tolist() == whole["prediction"].tolist()
    pd.testing.assert_frame_equal(merged[key], whole[key])
    for column in PROBABILITIES:
        assert (merged[column] - whole[column]).abs().max() < TOLERANCE, column
    # a shard without the control is not merged with one that has it
    _run([sys.executable, "-m", "layerprobe.cli.sweep", f"run_dir={tmp_path / 'plain'}", "progress=false",
          "timing_samples=0", "data.limit=160", "data.num_shards=2", "data.shard=1", "layers=[0,2,4,12,29]"])
    with pytest.raises(ConfigError, match=r"runs differ in control: \{'name': 'text_keys', 'seed': 0\} in .*shard0of2; none in .*plain"):
        merge_runs([shards[0], tmp_path / "plain"])
    runs = f"run=[{shards[0]},{shards[1]}]"
    _run([sys.executable, "-m", "layerprobe.cli.discover", runs, f"out={tmp_path / 'any.yaml'}"], cwd=tmp_path)
    assert _layers(tmp_path / "any.yaml") == ([2, 4, 12], 29)
    # the organism's only text before its image is the sink, which text_keys leaves alone: the
    # controls change nothing, and every planted layer is specific
    _run([sys.executable, "-m", "layerprobe.cli.discover", runs, f"out={tmp_path / 'profile.yaml'}",
          "require_specific=true"], cwd=tmp_path)
    evidence = pd.read_csv(shards[0] / "discovery.csv").set_index("layer")   # the evidence stays with the first run
    assert {"control_effect", "control_q", "specific_q", "specific"} <= set(evidence.columns)
    assert (evidence["control_effect"] == 0).all() and (evidence["control_q"] == 1).all()
    assert evidence.index[evidence["significant"]].tolist() == [2, 4, 12, 29]
    assert evidence.loc[[2, 4, 12, 29], "specific"].all() and not evidence.loc[0, "specific"]
    assert _layers(tmp_path / "profile.yaml") == ([2, 4, 12], 29)
    assert yaml.safe_load((tmp_path / "profile.yaml").read_text())["statistics"]["require_specific"] is True
    assert "knockout vs control q" in (tmp_path / "report.html").read_text()
    plotted = _run([sys.executable, "-m", "layerprobe.cli.plot", runs, f"out={tmp_path / 'plots'}",
                    "effect=logprob"], cwd=tmp_path)
    assert (tmp_path / "plots" / "masking_curves.png").is_file() and "report.html" in plotted.stdout
    summary = pd.read_csv(tmp_path / "plots" / "summary.csv")
    assert (summary["condition"] == "control").sum() == 5


# the acceptance on the planted organism -----------------------------------------------------
def test_every_effect_with_require_specific_finds_the_planted_set_and_no_control_effect(tmp_path):
    """The whole test split, every layer, through the Python API; the numbers of docs/discovery.md."""
    loaded = layerprobe.load_model("organism")
    run_sweep(loaded, load_benchmark("organism"), tmp_path, control="text_keys", progress=False, timing_samples=0)
    planted = loaded.extra["organism"]["planted"]
    for effect in EFFECTS:
        found = discover(tmp_path, num_layers=loaded.num_layers, effect=effect, require_specific=True)
        assert (found.fusion_layers, found.review_layer) == (planted[:-1], planted[-1]), effect
        evidence = found.evidence.set_index("layer")
        assert evidence.index[evidence["significant"]].tolist() == planted, effect
        assert not (evidence["control_q"] <= found.settings["alpha"]).any(), effect
        assert evidence.loc[planted, "specific"].all(), effect
