"""What the bad-input tests share (tests/test_bad_input*.py): a 4-layer tiny model's sweep composed
by Hydra, called the way the console scripts call it, and the single error line it must end in.

    from bad_input_testing import VQAV2, data, sweep_error
    line = sweep_error(capsys, tmp_path, *data("/nowhere"))   # "layerprobe: error: data.root=..."

A top-level module (pytest's pythonpath), not a test module: importing ``tests.<module>`` would
find an installed top-level ``tests`` package instead.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from layerprobe.cli.common import run_cli
from layerprobe.cli.sweep import sweep
from layerprobe.io.paths import CONF_DIR

ROOT = Path(__file__).resolve().parents[1]
VQAV2 = ROOT / "tests" / "fixtures" / "benchmarks" / "vqav2" / "official"
QUESTIONS = "v2_OpenEnded_mscoco_val2014_questions.json"
TINY = ("model=tiny_llava15", "model.path=tiny:llava:4", "data.max_new_tokens=2", "timing_samples=0",
        "progress=false", "batch_size=4")


def compose_sweep(run_dir, *overrides):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("sweep", overrides=[f"run_dir={run_dir}", *TINY, *overrides])


def one_line_error(capsys, fn, *args) -> str:
    """Call ``fn`` the way the console scripts do; return its single stderr line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run_cli(fn, *args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    # transformers' progress bar of a checkpoint's load is not an error line
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("Loading weights")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("layerprobe: error: ")
    print(lines[0])
    return lines[0]


def sweep_error(capsys, tmp_path, *overrides, run_dir=None) -> str:
    return one_line_error(capsys, sweep, compose_sweep(run_dir or tmp_path / "run", *overrides))


@pytest.fixture
def vqav2_copy(tmp_path) -> Path:
    root = tmp_path / "vqav2"
    shutil.copytree(VQAV2, root)
    return root


def data(root) -> tuple[str, ...]:
    return ("data=vqav2", f"data.root={root}")
