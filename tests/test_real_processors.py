"""The configuration a GPU user gets: torch and torchvision installed, so every family's processor
is its REAL class with its real video processor. Each family's tiny model (2 decoder layers) is
saved with its processor to a directory and loaded back through ``load_model(path)`` exactly as a
downloaded checkpoint loads (``AutoProcessor.from_pretrained``); on that path-loaded model the
processor's image-token expansion equals the model's image features sample by sample, the
knockout equals the hand-edited eager-mask reference, and ``layerprobe-sweep`` runs a 2-layer
sweep on the saved path. Skipped where torchvision is not installed (the video processor classes
need it); ``.ci/gpu_user_env.sh`` builds the environment that runs it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("torchvision", reason="torchvision is not installed: the real video processor classes of "
                                          "Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision, InternVL and SmolVLM need it "
                                          "(.ci/gpu_user_env.sh builds an environment with it)")

import transformers  # noqa: E402

import layerprobe  # noqa: E402
from layerprobe.models.tiny import build_tiny, save_tiny  # noqa: E402
from layerprobe.io.results import read_results  # noqa: E402
from layerprobe_testing import (  # noqa: E402
    EDGE_SETS, FIXTURES, QUESTIONS, ROOT, SUFFIX, check_against_hand_mask, make_images, reference_visual,
)

pytestmark = pytest.mark.core

# family -> (conf/model preset, processor class and video processor class a real checkpoint of
# the family loads with AutoProcessor.from_pretrained when torchvision is installed)
REAL = {
    "llava": ("tiny_llava15", "LlavaProcessor", None),
    "llava_next": ("tiny_llava16", "LlavaNextProcessor", None),
    "qwen2_vl": ("tiny_qwen2_vl", "Qwen2VLProcessor", "Qwen2VLVideoProcessor"),
    "qwen2_5_vl": ("tiny_qwen2_5_vl", "Qwen2_5_VLProcessor", "Qwen2VLVideoProcessor"),
    "llava_onevision": ("tiny_llava_onevision", "LlavaOnevisionProcessor", "LlavaOnevisionVideoProcessor"),
    "internvl": ("tiny_internvl", "InternVLProcessor", "InternVLVideoProcessor"),
    "idefics3": ("tiny_idefics3", "Idefics3Processor", None),
    "smolvlm": ("tiny_smolvlm", "SmolVLMProcessor", "SmolVLMVideoProcessor"),
    "gemma3": ("tiny_gemma3", "Gemma3Processor", None),
}
REAL_FAMILIES = list(REAL)
NUM_LAYERS = 2


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Every family's tiny model saved with its processor, in a directory named after its preset."""
    base = tmp_path_factory.mktemp("checkpoints")
    for family, (preset, _, _) in REAL.items():
        save_tiny(family, base / preset, num_layers=NUM_LAYERS)
    return base


@pytest.fixture(scope="module")
def path_loaded(saved):
    cache = {}

    def get(family: str, attn: str = "sdpa"):
        if (family, attn) not in cache:
            cache[family, attn] = layerprobe.load_model(str(saved / REAL[family][0]), device="cpu",
                                                        attn_implementation=attn)
        return cache[family, attn]

    return get


def _encode(loaded, n=4):
    return loaded.encode(make_images(n), [q + SUFFIX for q in QUESTIONS[:n]], questions=QUESTIONS[:n])


@pytest.mark.parametrize("family", REAL_FAMILIES)
def test_path_loaded_processor_is_the_real_class(saved, path_loaded, family):
    path = saved / REAL[family][0]
    loaded = path_loaded(family)
    _, processor_name, video_name = REAL[family]
    auto = transformers.AutoProcessor.from_pretrained(path, local_files_only=True)
    assert type(loaded.processor) is type(auto)
    assert type(loaded.processor) is getattr(transformers, processor_name)
    video = getattr(loaded.processor, "video_processor", None)
    if video_name is None:
        assert video is None
    else:
        assert video is not None and type(video) is getattr(transformers, video_name)
        assert type(video) is type(auto.video_processor)
    assert loaded.adapter.family == family and loaded.num_layers == NUM_LAYERS
    # the in-memory tiny model builds the same processor class, and the saved one expands alike
    _, built = build_tiny(family, num_layers=NUM_LAYERS)
    assert type(built) is type(loaded.processor)
    assert type(getattr(built, "video_processor", None)) is type(video)
    fresh = layerprobe.load_model(f"tiny:{family}:{NUM_LAYERS}", device="cpu")
    assert torch.equal(_encode(loaded)["input_ids"], _encode(fresh)["input_ids"])


def _features_per_image(loaded, output, images) -> list[int]:
    features = getattr(output, "pooler_output", output)
    if isinstance(features, (list, tuple)):
        return [f.shape[0] for f in features]
    if features.dim() == 3 and features.shape[0] == len(images):   # (images, tokens, hidden)
        return [features.shape[1]] * len(images)
    # InternVL: (tiles, tokens, hidden), each image's tiles in turn
    tiles = loaded.processor.image_processor(images, return_tensors="pt")["num_patches"]
    assert int(tiles.sum()) == features.shape[0]
    return [int(t) * features.shape[1] for t in tiles]


@pytest.mark.parametrize("family", REAL_FAMILIES)
def test_image_token_expansion_equals_the_models_image_features(path_loaded, family, monkeypatch):
    loaded = path_loaded(family)
    images = make_images(4)
    inputs = loaded.encode(images, QUESTIONS)
    inner = loaded.model.model
    seen = []
    stock = inner.get_image_features

    def recording(*args, **kwargs):
        seen.append(stock(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(inner, "get_image_features", recording)
    with torch.no_grad():
        loaded.model(**inputs)
    assert len(seen) == 1
    tokens = (inputs["input_ids"] == loaded.adapter.image_token_id(loaded.model)).sum(1).tolist()
    features = _features_per_image(loaded, seen[0], images)
    print(f"{family}: image tokens per sample {tokens}, image features {features}")
    assert tokens == features


@pytest.mark.parametrize("family", REAL_FAMILIES)
def test_knockout_on_the_path_loaded_model_matches_hand_edited_eager_mask(path_loaded, family):
    loaded = path_loaded(family, "eager")
    inputs = _encode(loaded)
    assert (inputs["attention_mask"] == 0).any()  # left-padded: the questions differ in length
    visual = reference_visual(loaded, family, inputs["input_ids"])
    for edges in EDGE_SETS:
        check_against_hand_mask(loaded, inputs, edges, layers=(0, 1), visual=visual, label=family,
                                questions=QUESTIONS[:4])


# where a family's prompt puts a video, and the token the processor expands it into
VIDEO_MARKUP = {
    "qwen2_vl": ("<|vision_start|><|video_pad|><|vision_end|>", "<|video_pad|>"),
    "qwen2_5_vl": ("<|vision_start|><|video_pad|><|vision_end|>", "<|video_pad|>"),
    "llava_onevision": ("<video>", "<video>"),
    "internvl": ("<video>", "<IMG_CONTEXT>"),
    "smolvlm": ("<video>", "<image>"),
}


@pytest.mark.parametrize("family", list(VIDEO_MARKUP))
def test_the_real_video_processor_feeds_the_model(path_loaded, family):
    """The tiny video processors are sized like the image processors: a 4-frame video goes
    through the path-loaded processor and the model takes it (transformers checks that the video
    tokens and the video features agree)."""
    from transformers.video_utils import VideoMetadata

    loaded = path_loaded(family)
    markup, token = VIDEO_MARKUP[family]
    video = np.random.RandomState(0).randint(0, 255, (4, 70, 60, 3), dtype=np.uint8)
    extra = {"video_metadata": [VideoMetadata(total_num_frames=4, fps=1.0, frames_indices=[0, 1, 2, 3])]} \
        if family == "smolvlm" else {}
    enc = loaded.processor(text=[f"user {markup} what is shown ?"], videos=[video], return_tensors="pt", **extra)
    n = int((enc["input_ids"] == loaded.tokenizer.convert_tokens_to_ids(token)).sum())
    print(f"{family}: {n} video tokens for 4 frames")
    assert 0 < n <= 4 * 16
    with torch.no_grad():
        logits = loaded.model(**enc).logits
    assert logits.shape[:2] == enc["input_ids"].shape and torch.isfinite(logits).all()


@pytest.fixture(scope="module")
def sweeps(saved, tmp_path_factory):
    """One ``layerprobe-sweep`` multirun over every family's saved path (one process: a process
    per family would spend most of its time importing)."""
    out = tmp_path_factory.mktemp("sweeps")
    presets = ",".join(preset for preset, _, _ in REAL.values())
    cmd = [sys.executable, "-m", "layerprobe.cli.sweep", "-m", f"hydra.sweep.dir={out}", "progress=false",
           f"model={presets}", f"model.path={saved}/${{model.name}}", "data=vqav2",
           f"data.root={FIXTURES / 'vqav2' / 'official'}", "data.limit=2", f"layers=[0,{NUM_LAYERS - 1}]",
           "batch_size=2", "engine=naive", "timing_samples=0"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return out, proc.stdout + proc.stderr


@pytest.mark.parametrize("family", REAL_FAMILIES)
def test_sweep_cli_on_the_saved_path(sweeps, saved, family):
    out, log = sweeps
    preset = REAL[family][0]
    run = out / preset / "vqav2" / "image_text" / "shard0of1"
    assert f"model {saved / preset} ({NUM_LAYERS} layers)" in (run / "sweep.log").read_text()
    table = read_results(run)
    assert len(table) == 2 * 3
    assert set(table["condition"]) == {"baseline", "knockout"}
    assert sorted(table["layer"].dropna().unique().tolist()) == [0, 1]
    assert table["score"].between(0, 1).all()
    summary = pd.read_csv(run / "summary.csv")
    assert list(summary["condition"]) == ["baseline", "knockout", "knockout"]
