"""experiments/gpu_check.sh, the script a GPU session runs as is: its CPU smoke run fills every row
of the table (so it cannot rot unseen), a stage that fails or outruns its budget keeps its rows
with that status, the GPU mode refuses a machine without CUDA, and the real-shape models have the
7B checkpoints' sizes and visual-token counts."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from layerprobe.models.real_shape import build_real_shape

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "gpu_check.sh"


def _table_module():
    spec = importlib.util.spec_from_file_location("gpu_check_table", ROOT / "experiments" / "gpu_check_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _script(*args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_cpu_smoke_fills_every_row_of_the_table(tmp_path):
    proc = _script("--cpu-smoke", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    table = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = _table_module().ROWS
    assert [(r["stage"], r["measurement"]) for r in table["rows"]] == rows
    assert all(r["status"] == "ok" and r["result"] for r in table["rows"])
    assert (tmp_path / "gpu_check.md").read_text() in proc.stdout
    sweep = {s["shape"]: s for s in table["results"]["sweep"]["shapes"]}
    # the smoke shapes: one 56-px view (4 x 4 patches); base view + 2 x 2 tiles with a newline per row
    assert sweep["llava-1.5-7b"]["visual_tokens"] == 16 and sweep["llava-1.6-7b"]["visual_tokens"] == 16 + 64 + 8
    assert all(s["agree"] and s["dtype"] == "bfloat16" for s in sweep.values())
    assert table["results"]["bf16"]["organism"]["answers"] == 8 * 33
    if not torch.cuda.is_available():
        assert table["rows"][0]["result"].endswith("skipped")


def _log(folder: Path, stage: str, body: str, rc: int | None, seconds: int = 5, budget: int = 60) -> None:
    record = "" if rc is None else f"\n# gpu_check stage={stage} rc={rc} seconds={seconds} budget={budget}\n"
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    (folder / "logs" / f"{stage}.log").write_text(body + record)


def test_a_failed_or_timed_out_stage_keeps_its_rows(tmp_path, capsys):
    table_module = _table_module()
    _log(tmp_path, "tests", "..\n2 passed, 100 deselected in 3.10s", 0)
    _log(tmp_path, "sweep", "[llava-1.5-7b] ... (killed)", 124, seconds=270, budget=270)
    agreement = {m: {"answers": 528, "differ": 3, "rate": 3 / 528} for m in ("organism", "tiny_llava", "tiny_llava_next")}
    _log(tmp_path, "bf16", "progress\n" + json.dumps(agreement), 0)
    assert table_module.main([str(tmp_path)]) == 1
    table = json.loads((tmp_path / "gpu_check.json").read_text())
    by_stage = {}
    for row in table["rows"]:
        by_stage.setdefault(row["stage"], []).append(row)
    assert [(r["result"], r["status"]) for r in by_stage["tests"]] == [("2 passed", "ok")]
    assert {(r["result"], r["status"], r["seconds"]) for r in by_stage["sweep"]} == {(None, "timed out", 270)}
    assert len(by_stage["sweep"]) == 8 and {r["status"] for r in by_stage["contrastive"]} == {"not run"}
    assert by_stage["bf16"][0]["result"] == "3 of 528 differ (0.6%)"
    printed = capsys.readouterr().out
    assert printed.count("\n| ") == len(table_module.ROWS) + 1 and "| sweep | llava-1.6-7b: peak memory | - |" in printed


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_the_gpu_mode_refuses_a_machine_without_cuda(tmp_path):
    proc = _script("--out", str(tmp_path), timeout=300)
    assert proc.returncode == 2 and "sees no CUDA device" in proc.stderr and "--cpu-smoke" in proc.stderr
    assert not (tmp_path / "logs" / "tests.log").exists()
    wrong = _script("--fast", timeout=60)
    assert wrong.returncode == 2 and wrong.stderr.strip() == "gpu_check: unknown option --fast (use --cpu-smoke, --out DIR)"


def test_real_shapes_have_the_7b_checkpoints_sizes_and_visual_tokens():
    """Built on the meta device (no memory): LLaVA-1.5-7B's 7.06 B parameters, bf16, 32 layers; the
    processors give the published token counts, 576 for one 336-px view and 2,928 for LLaVA-1.6
    at 672 px (base view, 2 x 2 tiles of 24 x 24, a newline token per row of 48)."""
    for name, side, visual in (("llava15_7b", 336, 576), ("llava16_vicuna7b", 672, 2928)):
        loaded = build_real_shape(name, device="meta", dtype="bfloat16")
        config = loaded.model.config
        assert round(sum(p.numel() for p in loaded.model.parameters()) / 1e9, 2) == 7.06
        assert loaded.model.dtype == torch.bfloat16 and loaded.num_layers == 32
        assert (config.text_config.hidden_size, config.text_config.intermediate_size, config.text_config.vocab_size,
                config.vision_config.hidden_size, config.vision_config.num_hidden_layers) == (4096, 11008, 32064, 1024, 24)
        image = Image.fromarray(np.zeros((side, side, 3), dtype=np.uint8))
        ids = loaded.processor(images=[image], text=[loaded.adapter.format_prompt(loaded.processor, "what is it", 1)],
                               return_tensors="pt")["input_ids"]
        assert int((ids == config.image_token_id).sum()) == visual
