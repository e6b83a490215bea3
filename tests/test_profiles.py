"""Layer profiles: presets load, exports load back equal, bad profiles fail naming the field, and
the layerprobe-discover command writes a profile from a run directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from layerprobe.analysis.discovery import discover, to_profile
from layerprobe.errors import ProfileError
from layerprobe.analysis.profiles import LayerProfile, load_profile, save_profile
from planted_results import planted_table, shard, write_run

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["llava15_7b", "llava16_7b"])
def test_paper_presets_load(name):
    profile = load_profile(name, num_layers=32)
    assert profile.fusion_layers == [2, 4, 8, 11, 12, 13]
    assert (profile.review_layer, profile.post_integrated_layer, profile.num_layers) == (29, 28, 32)
    assert profile.source == "paper" and "not discovered by layerprobe" in profile.notes
    assert load_profile(REPO / "conf" / "profile" / f"{name}.yaml") == profile
    with pytest.raises(ProfileError, match=f"profile {name}: num_layers=32 but the model has 24 decoder layers"):
        load_profile(name, num_layers=24)


def test_discovered_profile_saves_and_loads_back_equal(tmp_path):
    table = planted_table(20, {1: 0.4, 6: 0.3, 17: 0.4}, n=300, seed=11)
    profile = to_profile(discover(table, num_layers=20, n_resamples=500, effect="accuracy"), model="toy/llava", notes="test")
    path = save_profile(profile, tmp_path / "p.yaml")
    loaded = load_profile(path, num_layers=20)
    assert loaded == profile
    assert (loaded.fusion_layers, loaded.review_layer, loaded.post_integrated_layer) == ([1, 6], 17, 16)
    assert len(loaded.evidence) == 2 * 20 and {"drop", "ci_low", "ci_high", "p", "q"} <= set(loaded.evidence[0])
    assert loaded.statistics["test"] == "mcnemar" and loaded.n == {"gqa": 300, "vqav2": 300}
    assert loaded.layerprobe_version and loaded.source == "layerprobe-discover"
    # a Hydra-composed node (here: any mapping) loads the same way
    assert load_profile(yaml.safe_load(path.read_text())) == profile


def _write(tmp_path, **changes) -> Path:
    values = dict(model="toy", num_layers=32, fusion_layers=[2, 4, 8, 11], review_layer=29)
    values.update(changes)
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in values.items() if v is not ...}))
    return path


@pytest.mark.parametrize("changes,message", [
    (dict(fusion_layers=[2, 4, 8, 40]), r"fusion_layers\[3\]=40: out of range for a 32-layer decoder"),
    (dict(post_integrated_layer=29), "review_layer=29 must be > post_integrated_layer=29"),
    (dict(review_layer=32), "review_layer=32: out of range for a 32-layer decoder"),
    (dict(fusion_layers=[]), "fusion_layers is empty"),
    (dict(fusion_layers=[2, 28]), r"fusion_layers\[1\]=28 must be < post_integrated_layer=28"),
    (dict(fusion_layers=[2, 2]), r"fusion_layers=\[2, 2\] has a repeated layer"),
    (dict(fusion_layers=["two"]), r"fusion_layers\[0\]='two': must be a 0-based layer index"),
    (dict(fusion_layer=[2]), "unknown key 'fusion_layer'; valid keys: model, num_layers, fusion_layers"),
    (dict(review_layer=...), "missing key 'review_layer'"),
    (dict(num_layers=0), "num_layers=0 must be a positive integer"),
])
def test_validation_errors_name_the_field(tmp_path, changes, message):
    path = _write(tmp_path, **changes)
    with pytest.raises(ProfileError, match=f"^profile {path}: {message}"):
        load_profile(path).require_layers()   # what contrastive attention asks of a profile


def test_post_integrated_defaults_to_review_minus_one_and_names_resolve(tmp_path):
    assert load_profile(_write(tmp_path)).post_integrated_layer == 28
    with pytest.raises(ProfileError, match="profile nope: no such preset .*presets: .*llava15_7b"):
        load_profile("nope")
    with pytest.raises(ProfileError, match="profile missing.yaml: file not found"):
        load_profile("missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile(bad)
    with pytest.raises(ProfileError, match=r"review_layer=29: out of range for a 24-layer decoder \(0\.\.23\)"):
        LayerProfile(model="m", num_layers=24, fusion_layers=[1], review_layer=29).validate()


def _cli(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "layerprobe.cli.discover", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_writes_profile_from_sharded_runs(tmp_path):
    table = planted_table(16, {2: 0.4, 5: 0.35, 13: 0.45}, benchmarks=("vqav2",), n=600, seed=12)
    runs = [write_run(tmp_path / f"shard{k}", shard(table, k, 2), 16) for k in range(2)]
    out = tmp_path / "profiles" / "toy.yaml"
    done = _cli(f"run=[{runs[0]},{runs[1]}]", f"out={out}", "alpha=0.01", "effect=accuracy", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "fusion layers: 2 (accuracy" in done.stdout and "review layer: 13 (accuracy" in done.stdout
    written = yaml.safe_load(out.read_text())
    assert (written["fusion_layers"], written["review_layer"], written["post_integrated_layer"]) == ([2, 5], 13, 12)
    assert written["num_layers"] == 16 and written["model"] == "toy/llava" and written["model_config_hash"] == "cfg-1"
    assert written["statistics"]["alpha"] == 0.01 and written["runs"] == [str(r) for r in runs]
    # out= takes the profile only; the evidence and figure stay with the (first) run
    assert sorted(p.name for p in out.parent.iterdir()) == ["toy.yaml"]
    assert {"discovery.csv", "discovery.pdf", "discovery.png"} <= {p.name for p in runs[0].iterdir()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["profiles", "shard0", "shard1"]   # no outputs/, no .log


def test_cli_without_a_late_drop_writes_review_layer_null_and_exits_0(tmp_path, monkeypatch, capsys):
    from layerprobe.cli.discover import main

    run = write_run(tmp_path / "run", planted_table(12, {2: 0.4}, n=300, seed=13), 12)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["layerprobe-discover", f"run={run}", "effect=accuracy"])   # in-process: no import cost
    main()   # finding no review layer is a result, not bad input
    out, err = capsys.readouterr()
    assert err == ""
    notes = [line for line in out.splitlines() if "no review layer" in line]
    assert notes == ["note: no review layer: no significant drop in the late part (layers 9..11), so the profile has "
                     "review_layer: null, which contrastive attention refuses; give review_layer=<layer> to set one "
                     "by hand, or lower min_effect / raise late_fraction"]   # said once
    profile = load_profile(run / "profile.yaml")
    assert (profile.fusion_layers, profile.review_layer, profile.post_integrated_layer) == ([2], None, None)
    assert (run / "discovery.csv").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    # what needs a review layer refuses that profile in one line
    with pytest.raises(ProfileError, match=r"review_layer is null \(its discovery found only fusion layers\); "
                                           "contrastive attention needs one"):
        profile.require_layers()


def test_run_discover_takes_a_plain_dict_and_refuses_typos(tmp_path):
    from layerprobe.cli.discover import run_discover
    from layerprobe.errors import ConfigError

    run = write_run(tmp_path / "run", planted_table(10, {1: 0.4, 8: 0.4}, n=300, seed=14), 10)
    result = run_discover({"run": str(run), "figure": False, "seed": 3, "effect": "accuracy"})
    assert (result.profile.fusion_layers, result.profile.review_layer) == ([1], 8)
    assert load_profile(run / "profile.yaml") == result.profile
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['alpah'\]"):
        run_discover({"run": str(run), "alpah": 0.1})
