"""The bad-input catalogue, continued: files. A name built from data (a sample id, a label, an
image id) never leads outside its folder, and the CI scripts remove only what they created.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from layerprobe.errors import DataError
from layerprobe.io.filenames import safe_name

ROOT = Path(__file__).resolve().parents[1]
NASTY = ["1/../../x/owned", "..", ".hidden", "a\x00b", "x" * 300, "/etc/passwd", "C:\\Windows\\x", ""]


@pytest.mark.parametrize("sample_id", NASTY, ids=["dotdot-path", "dotdot", "hidden", "nul", "long", "absolute",
                                                  "backslash", "empty"])
def test_names_built_from_data_stay_one_safe_component(tmp_path, sample_id):
    name = safe_name(sample_id)
    assert name and len(name) <= 80 and "/" not in name and "\\" not in name and "\x00" not in name
    assert not name.startswith(".")
    target = (tmp_path / f"heatmap_{name}.png").resolve()
    assert target.parent == tmp_path.resolve()
    target.write_bytes(b"")   # the file system takes it as it is
    assert safe_name(sample_id) == name and safe_name(sample_id + "!") != name   # stable, and one id a name


def test_contrastive_heatmaps_of_hostile_sample_ids_stay_in_the_run(tmp_path, tiny_models):
    """A sample id ``1/../../x/owned`` once wrote ``owned.png`` two folders above the run."""
    from layerprobe.data.registry import BenchmarkData
    from layerprobe.data.sample import Sample
    from layerprobe.evaluation.run import run_method
    from layerprobe.methods.registry import make_method
    from layerprobe_testing import make_images

    loaded = tiny_models("llava")
    ids = ["1/../../x/owned", "a\x00b", "y" * 300]
    samples = [Sample(sid, image, "what is it ?", ["x"]) for sid, image in zip(ids, make_images(3))]
    data = BenchmarkData("organism", "exact_match", 2, samples, [])
    run = tmp_path / "a" / "b" / "run"
    method = make_method("contrastive", profile={"fusion_layers": [2, 4], "review_layer": 29})
    run_method(loaded, data, method, run, maps_samples=3, memory_pass=False, progress=False)
    written = method.draw(run, loaded, data, n=3)
    assert len(written) == 2 * 3 and all(Path(p).parent == run for p in written)
    assert not list(tmp_path.rglob("owned*")) and not (tmp_path / "a" / "x").exists()


@pytest.mark.parametrize("field, value", [("image", "../../../etc/passwd"), ("image", "/etc/passwd"),
                                          ("image", "val/\x00x.jpg")])
def test_image_names_in_annotation_files_cannot_leave_the_image_folder(tmp_path, field, value):
    from layerprobe.data.registry import load_benchmark

    root = tmp_path / "vizwiz"
    shutil.copytree(ROOT / "tests" / "fixtures" / "benchmarks" / "vizwiz" / "official", root)
    path = root / "Annotations" / "val.json"
    records = json.loads(path.read_text())
    records[0][field] = value
    path.write_text(json.dumps(records))
    with pytest.raises(DataError, match=rf"val\.json: \[0\]: image='.*' must name a file inside {root}/val$"):
        load_benchmark("vizwiz", root=root)


# -- the CI scripts ----------------------------------------------------------------------------------

def _ci_copy(tmp_path: Path, test_command: str) -> Path:
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "run", repo / ".ci" / "run")
    (repo / "README.md").write_text(f"<!-- test-command -->\n```bash\n{test_command}\n```\n")
    return repo


def test_ci_removes_its_work_folder_when_interrupted(tmp_path):
    repo = _ci_copy(tmp_path, "echo started; sleep 120")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    before = set(Path("/tmp").glob("layerprobe-ci.*"))
    proc = subprocess.Popen(["bash", str(repo / ".ci" / "run")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "TMPDIR": str(tmp)}, start_new_session=True)
    try:
        for line in proc.stdout:
            if line.strip() == "started":
                break
        made = list(tmp.glob("layerprobe-ci.*")) + list(set(Path("/tmp").glob("layerprobe-ci.*")) - before)
        assert len(made) == 1 and made[0].is_dir(), made
        os.killpg(proc.pid, signal.SIGINT)          # Ctrl-C: the whole foreground job
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    assert not made[0].exists(), f"{made[0]} (several GB in a real run) was left behind"


def test_gpu_user_script_never_removes_a_folder_it_did_not_make(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "python3.11").write_text("#!/bin/sh\nexit 1\n")   # whatever comes after the check fails fast
    (stub / "python3.11").chmod(0o755)
    start = time.monotonic()
    proc = subprocess.run(["bash", str(ROOT / ".ci" / "gpu_user_env.sh"), str(precious)], capture_output=True,
                          text=True, env={**os.environ, "PATH": f"{stub}:{os.environ['PATH']}"}, timeout=120)
    assert (precious / "thesis.tex").read_text() == "years of work"
    assert proc.returncode == 2 and time.monotonic() - start < 60
    assert proc.stderr.strip() == (f"ci: gpu-user: {precious} exists and is not a venv this script made "
                                   "(no .layerprobe-ci-gpu-user in it): give a new path")
