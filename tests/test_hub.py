"""Downloads on first use, through the real huggingface_hub client against a Hub on 127.0.0.1
(tests/mock_hub.py): a model and a benchmark split are fetched into a fresh HF_HOME by
``layerprobe-sweep``, only the files they need; the same command then runs with HF_HUB_OFFLINE=1
from the cache, answering the same; what is not cached is a one-line error naming the repo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from layerprobe.data import registry
from layerprobe.data.registry import load_benchmark
from layerprobe.errors import DataError
from layerprobe.io.results import read_results
from layerprobe.models.tiny import save_tiny
from mock_hub import MockHub, serve_benchmarks

pytestmark = pytest.mark.core

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "benchmarks"
MODEL = "mock-org/tiny-llava"
# files a real repository also holds that no load needs: never requested, never stored
MODEL_DECOYS = {"original/consolidated.pth": b"\0" * 4096, "README.md": b"# tiny\n"}
SWEEP = ("model=tiny_llava15", f"model.path={MODEL}", "data=vqav2", "data.limit=3", "layers=[0,1]",
         "engine=naive", "batch_size=2", "timing_samples=0", "progress=false")


def sweep(run_dir: Path, env: dict, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "layerprobe.cli.sweep", f"run_dir={run_dir}", *SWEEP, *overrides]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("layerprobe: error: ")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The hub, and one sweep that downloaded the tiny model and VQAv2's validation split into
    ``hub.home`` (HF_HOME), as a first use on a GPU node would."""
    tmp = tmp_path_factory.mktemp("hub")
    with MockHub() as server:
        server.add("model", MODEL, save_tiny("llava", tmp / "checkpoint", num_layers=4), extra=MODEL_DECOYS)
        serve_benchmarks(server)
        server.home = tmp / "hf"
        server.online = sweep(tmp / "online", server.env(server.home))
        server.online_dir = tmp / "online"
        server.tmp = tmp
        yield server


def snapshot(home: Path, kind: str, repo: str) -> Path:
    folders = list((home / "hub" / f"{kind}s--{repo.replace('/', '--')}" / "snapshots").iterdir())
    assert len(folders) == 1
    return folders[0]


def test_first_use_downloads_only_the_files_it_needs(hub):
    assert hub.online.returncode == 0, hub.online.stderr[-3000:]
    assert "Fetching" in hub.online.stderr  # huggingface_hub's progress bars
    model = snapshot(hub.home, "model", MODEL)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in model.iterdir()}
    data = snapshot(hub.home, "dataset", "lmms-lab-encoder/VQAv2")
    stored = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.parquet"))
    assert stored == ["data/validation-00000-of-00002.parquet", "data/validation-00001-of-00002.parquet"]
    fetched = {path for method, path in hub.requests if method == "GET" and "/resolve/" in path}
    for decoy in [*MODEL_DECOYS, "data/test-00000-of-00001.parquet"]:
        assert not any(path.endswith(decoy) for path in fetched)
    assert not list(model.rglob("*.pth")) and not (model / "README.md").exists()
    table = read_results(hub.online_dir)
    assert len(table) == 3 * 3 and set(table["benchmark"]) == {"vqav2"}


def test_offline_rerun_reads_the_cache_and_answers_the_same(hub):
    before = len(hub.requests)
    proc = sweep(hub.tmp / "offline", hub.env(hub.home, offline=True))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert hub.requests[before:] == []  # not one request with HF_HUB_OFFLINE=1
    key = ["sample_id", "condition", "layer"]
    online = read_results(hub.online_dir).sort_values(key).reset_index(drop=True)
    offline = read_results(hub.tmp / "offline").sort_values(key).reset_index(drop=True)
    assert online["prediction"].tolist() == offline["prediction"].tolist()
    assert online["score"].tolist() == offline["score"].tolist()


def test_offline_and_absent_is_one_line_naming_the_repo(hub):
    before = len(hub.requests)
    line = error_line(sweep(hub.tmp / "absent", hub.env(hub.home, offline=True), "model.path=mock-org/absent"))
    assert "model mock-org/absent is not in the Hugging Face cache" in line and "HF_HUB_OFFLINE=1" in line
    line = error_line(sweep(hub.tmp / "absent-data", hub.env(hub.home, offline=True), "data=vizwiz"))
    assert "vizwiz: mirror lmms-lab-encoder/VizWiz-VQA (data/val-*.parquet) is not in the Hugging Face cache" in line
    assert hub.requests[before:] == []


def test_gated_repo_needs_hf_token_and_download_false_asks_nothing(hub):
    hub.add("model", "mock-org/gated", hub.tmp / "checkpoint", token="let-me-in")
    hub.add("model", "mock-org/elsewhere", hub.tmp / "checkpoint")
    script = """
import os
import layerprobe
from layerprobe.data.registry import load_benchmark
for call in (lambda: layerprobe.load_model("mock-org/gated", device="cpu"),
             lambda: layerprobe.load_model("mock-org/elsewhere", device="cpu", download=False),
             lambda: load_benchmark("okvqa", download=False)):
    try:
        call()
    except Exception as err:
        print("error:", type(err).__name__, err)
os.environ["HF_TOKEN"] = "let-me-in"
print("gated with token:", layerprobe.load_model("mock-org/gated", device="cpu").num_layers)
"""
    before = len(hub.requests)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                          env=hub.env(hub.tmp / "hf-gated"), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    gated, elsewhere, okvqa, token = proc.stdout.strip().splitlines()
    assert gated.startswith("error: ModelError model mock-org/gated: cannot download it: the repository is gated")
    assert "set HF_TOKEN" in gated
    assert elsewhere.startswith("error: ModelError model mock-org/elsewhere is not in the Hugging Face cache")
    assert "(download=false)" in elsewhere
    assert okvqa.startswith("error: DataError okvqa: mirror lmms-lab-encoder/OK-VQA (data/val2014-*.parquet) is not")
    assert token == "gated with token: 4"
    asked = [path for _, path in hub.requests[before:]]
    assert not any("elsewhere" in p or "OK-VQA" in p for p in asked)
    assert any("/resolve/" in p and "mock-org/gated" in p for p in asked)


def test_cached_split_loads_as_the_files_themselves_and_data_root_wins(hub, monkeypatch):
    """In this process huggingface_hub is offline (tests/conftest.py): the mirror comes from the
    cache the first test filled, and equals reading the fixture folder directly."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub.home / "hub"))
    cached = load_benchmark("vqav2", limit=5, seed=1)
    direct = load_benchmark("vqav2", root=FIXTURES / "vqav2" / "parquet", limit=5, seed=1)
    assert [(s.sample_id, s.question, s.answers, s.image) for s in cached.samples] == \
           [(s.sample_id, s.question, s.answers, s.image) for s in direct.samples]
    with pytest.raises(DataError) as err:   # cached repository, split never downloaded
        load_benchmark("vqav2", split="testdev")
    assert "lmms-lab-encoder/VQAv2" in str(err.value) and "data/testdev-*.parquet" in str(err.value)
    monkeypatch.setattr(registry, "fetch_benchmark", lambda *a, **k: pytest.fail("data.root given: no fetch"))
    assert len(load_benchmark("gqa", root=FIXTURES / "gqa" / "official").samples) == 7
