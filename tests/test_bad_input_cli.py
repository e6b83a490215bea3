"""The bad-input catalogue, continued: the command lines. A mistake Hydra catches (a typo'd key,
an unknown preset, an override it cannot parse) is one line with exit code 2 naming the nearest
valid key or preset, never a hint to add the key with ``+``; every error is printed once;
discovery never overwrites a profile it did not write and finds "no review layer" a result; the
documented command sequences run one after another in one folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from layerprobe.analysis.profiles import load_profile
from planted_results import planted_table, write_run

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def cli(app: str, *args, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"layerprobe.cli.{app}", *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def error_line(proc) -> str:
    """The one line a failed command printed, asserted to be the only one and printed once."""
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("Loading weights")]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("layerprobe: error: "), proc.stderr
    message = lines[0].removeprefix("layerprobe: error: ")
    assert message not in proc.stdout, "printed twice: on stderr and by the logger on stdout"
    return message


@pytest.mark.parametrize("app, args, message", [
    ("sweep", ["data.limt=10"], "data.limt=10: no such option; did you mean data.limit? (options of data: name, "
                                "root, split, limit, seed,"),
    ("sweep", ["model=llava15-7b"], "model=llava15-7b: no such preset; did you mean model=llava15_7b? (presets in "
                                    "model: gemma3_12b,"),
    ("eval", ["profile=llava15"], "profile=llava15: no such preset; did you mean profile=llava15_7b? (presets in "
                                  "profile: llava15_7b, llava16_7b, organism)"),
    ("sweep", ["+data.limt=10"], "data.limt: no such option; did you mean data.limit? (options of data: "),
    ("sweep", ["layers=[1,2"], "layers=[1,2: cannot parse this override (no viable alternative at input '[1,2'"),
    ("discover", ["run=x", "alph=0.1"], "alph=0.1: no such option; did you mean alpha? (options: run, out,"),
    ("sweep", ["hydra/launcher=slrum"], "hydra/launcher=slrum: no such preset; did you mean hydra/launcher=slurm?"),
    ("eval", ["experiment=contrastive_percentile"], "experiment=contrastive_percentile: experiment is not in the "
                                                    "defaults; add it with +experiment=contrastive_percentile"),
], ids=["typo-key", "typo-model", "typo-profile", "plus-typo", "unparsable", "discover-typo", "typo-launcher",
        "group-without-plus"])
def test_config_mistakes_are_one_line_naming_the_nearest(tmp_path, app, args, message):
    proc = cli(app, *args, cwd=tmp_path)
    said = error_line(proc)
    assert said.startswith(message), said
    assert "+data" not in said and "To append" not in said
    assert not list(tmp_path.rglob("results.jsonl"))   # nothing ran


def test_an_error_is_printed_once_and_logged_to_the_run(tmp_path):
    run = tmp_path / "run"
    proc = cli("sweep", f"run_dir={run}", "data.limit=0", cwd=tmp_path)
    said = error_line(proc)
    assert said == "data.limit=0: must be a positive integer or null (all samples)"
    assert said in (run / "sweep.log").read_text()        # the run's own log keeps it


def test_eval_with_an_uncreatable_eval_dir_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("")
    proc = cli("eval", f"eval_dir={tmp_path}/afile/sub", cwd=tmp_path)
    assert error_line(proc) == f"{tmp_path}/afile/sub/organism/contrastive: cannot create output directory: Not a directory"


def test_dtype_must_name_a_torch_dtype(tmp_path):
    proc = cli("sweep", f"run_dir={tmp_path}/run", "model.dtype=nn", "data.limit=1", cwd=tmp_path)
    assert error_line(proc) == "dtype='nn': not a torch dtype (float32, bfloat16, float16)"


def test_discover_on_a_folder_that_is_not_a_sweep_run_says_what_is(tmp_path):
    proc = cli("discover", f"run={tmp_path}", cwd=tmp_path)
    assert error_line(proc) == (f"run={tmp_path}: not a sweep run (no results.jsonl); give the folder "
                                "layerprobe-sweep wrote (its run_dir, e.g. runs/sweep/<model>/<data>/<mask>)")


# -- discovery's profile ------------------------------------------------------------------------

def test_discover_never_overwrites_a_profile_it_did_not_write(tmp_path):
    from layerprobe.cli.discover import run_discover
    from layerprobe.errors import ConfigError

    run = write_run(tmp_path / "run", planted_table(10, {1: 0.4, 8: 0.4}, n=300, seed=14), 10)
    mine = tmp_path / "conf" / "profile" / "mine.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text("# my hand-made profile\nmodel: m\nnum_layers: 10\nfusion_layers: [1]\nreview_layer: 8\n")
    with pytest.raises(ConfigError, match=f"^out={mine}: exists and was not written by layerprobe-discover, or was "
                                          "edited since; give overwrite=true to replace it, or another out=$"):
        run_discover({"run": str(run), "out": str(mine), "figure": False, "effect": "accuracy"})
    assert mine.read_text().startswith("# my hand-made profile")
    # a profile discover wrote is replaced on a rerun, unless someone edited it since
    ours = tmp_path / "conf" / "profile" / "ours.yaml"
    run_discover({"run": str(run), "out": str(ours), "figure": False, "effect": "accuracy"})
    run_discover({"run": str(run), "out": str(ours), "figure": False, "effect": "accuracy", "seed": 1})
    ours.write_text(ours.read_text().replace("review_layer: 8", "review_layer: 7"))   # a hand edit
    with pytest.raises(ConfigError, match="was not written by layerprobe-discover, or was edited since"):
        run_discover({"run": str(run), "out": str(ours), "figure": False, "effect": "accuracy"})
    run_discover({"run": str(run), "out": str(mine), "figure": False, "effect": "accuracy", "overwrite": True})
    assert load_profile(mine).review_layer == 8
    # out= receives the profile only (no evidence, no report.html); the evidence stays with the run
    assert sorted(p.name for p in mine.parent.iterdir()) == ["mine.yaml", "ours.yaml"]
    assert (run / "discovery.csv").is_file()


def test_natural_organism_sweep_then_discover_succeeds_with_review_layer_null(tmp_path):
    """The acceptance command line: no review layer grew in the natural organism, and that is a result."""
    proc = subprocess.run("layerprobe-sweep model=natural_organism data=scenes progress=false && "
                          "layerprobe-discover run=runs/sweep/natural_organism/scenes/image_text",
                          shell=True, cwd=tmp_path, env={**ENV, "PATH": f"{Path(sys.executable).parent}:{ENV['PATH']}"},
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("note: no review layer") == 1
    profile = yaml.safe_load((tmp_path / "runs/sweep/natural_organism/scenes/image_text/profile.yaml").read_text())
    assert profile["review_layer"] is None and profile["fusion_layers"] == [0]


# -- run folders: the documented sequences in one folder ------------------------------------------

SMALL = ("progress=false", "timing_samples=0")


def test_documented_command_sequences_run_one_after_another_in_one_folder(tmp_path):
    """README's main command and ``layerprobe-eval``, discovery.md's preset command, methods.md's
    ``profile_file=`` command, in that order in one folder (on fewer samples: the same options added
    to every command, and the sweep over the layers that matter). Each eval run gets a folder of its
    own: none is refused as another config."""
    # the planted layers and a neighbour, on half the samples: enough power to find every one
    layers = "layers=[2,4,8,11,12,13,28,29]"
    sweep_dir = "runs/sweep/organism/organism/image_text_limit-256_layers-2+4+8+11+12+13+28+29"
    steps = [
        ("sweep", "data.limit=256", layers),                                    # README main command
        ("discover", f"run={sweep_dir}"),
        ("eval", "data.limit=48"),                                              # README: layerprobe-eval
        ("discover", f"run={sweep_dir}", "out=conf/profile/my_model.yaml"),     # discovery.md
        ("eval", "method=contrastive", "profile=my_model", "data.limit=48"),
        ("eval", f"profile_file={sweep_dir}/profile.yaml", "method=contrastive", "data.limit=48"),   # methods.md
    ]
    for app, *args in steps:
        proc = cli(app, *args, *(SMALL if app != "discover" else ()), cwd=tmp_path)
        assert proc.returncode == 0, f"{app} {args}: {proc.stderr[-3000:]}"
    runs = sorted(p.parent.name for p in (tmp_path / "runs" / "eval" / "organism" / "organism").glob("*/results.jsonl"))
    assert runs[0] == "contrastive" and runs[-1] == "vanilla" and len(runs) == 4, runs
    assert "contrastive_profile-my_model" in runs and any(r.startswith("contrastive_profile_file-") for r in runs)


def test_a_collision_left_by_a_neutral_option_names_the_ways_out(tmp_path):
    first = cli("eval", "data.limit=8", *SMALL, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    said = error_line(cli("eval", "data.limit=8", "data.on_error=skip", "baseline=none", *SMALL, cwd=tmp_path))
    assert "give label=<a new name> (or run_dir=<a folder inside eval_dir>) for a new run" in said


@pytest.mark.parametrize("overrides, folder", [
    ((), "runs/sweep/organism/organism/image_text"),
    (("data.limit=100", "data.seed=1"), "runs/sweep/organism/organism/image_text_limit-100_seed-1"),
    (("layers=[0,1,2]",), "runs/sweep/organism/organism/image_text_layers-0+1+2"),
    (("mask.window=3",), "runs/sweep/organism/organism/image_text_window-3"),
    (("model.path=/ckpt/retrained", "model.dtype=bfloat16"),
     "runs/sweep/organism/organism/image_text_path-_ckpt_retrained_dtype-bfloat16"),
    (("control=text_keys", "adaptive=true"), "runs/sweep/organism/organism/image_text_control-text_keys_adaptive"),
    (("control=text_keys", "control_seed=2"), "runs/sweep/organism/organism/image_text_control-text_keys_control_seed-2"),
    (("data.on_error=skip", "model.device=cpu", "model.download=false", "progress=false", "control_seed=2"),
     "runs/sweep/organism/organism/image_text"),
], ids=["presets", "limit-seed", "layers", "mask", "model", "control-adaptive", "control-seed", "neutral"])
def test_default_sweep_folders_name_every_option_that_changes_answers(overrides, folder):
    from hydra import compose, initialize_config_dir

    import layerprobe.cli.sweep  # noqa: F401  (registers the resolvers)
    from layerprobe.io.paths import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        assert compose("sweep", overrides=list(overrides)).run_dir == folder
