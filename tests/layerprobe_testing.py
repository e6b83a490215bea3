"""What several test modules share: images, questions, the independent knockout reference (a
hand-edited eager mask), the families' image documents found by token string, and the sweep
CLI helpers. A plain module on the suite's path (``pythonpath`` in pyproject.toml), imported as
``layerprobe_testing``: an installed distribution that ships a top-level ``tests`` package (as
latex2sympy2 does) cannot shadow it.

    from layerprobe_testing import QUESTIONS, make_images, check_against_hand_mask
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

import layerprobe
from layerprobe.core.edges import edge_sets
from layerprobe.core.generation import generate_answers
from layerprobe.io.results import read_results

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "benchmarks"
LLAVA_FAMILIES = ["llava", "llava_next"]  # the families most tests run on (32-layer tiny models)
EDGE_SETS = [e.name for e in edge_sets()]  # registered by the library (a test's own come later)
SUFFIX = "\nAnswer the question using a single word or phrase."
QUESTIONS = [
    "what color is the cat ?",
    "how many people are there ?",
    "is the sky blue ?",
    "what is on the table ?",
]


def make_images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.RandomState(seed)
    sizes = [(60, 80), (90, 40), (56, 56), (40, 100), (70, 70), (100, 50)]
    return [Image.fromarray(rng.randint(0, 255, (*sizes[i % len(sizes)], 3), dtype=np.uint8)) for i in range(n)]


def make_samples(images, questions) -> list:
    """Samples with ids "0", "1", ... whose prompts are their questions (no reference answers)."""
    from layerprobe.data.sample import Sample

    return [Sample(str(i), image, q, []) for i, (image, q) in enumerate(zip(images, questions))]


def texts_of(result) -> dict:
    """An engine's answers as {condition key: [answer text per sample]}."""
    return {key: [a.text for a in answers] for key, answers in result.items()}


def one_line_error(exc_info, *fragments):
    message = str(exc_info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert str(fragment) in message, message
    return message


def forward(loaded, inputs, **kw):
    with torch.no_grad():
        return loaded.model(**inputs, **kw)


# the image document of each family --------------------------------------------------------
# First and last token of one image's document, as each family's processor writes it.
DOCUMENT = {
    "llava": ("<image>", "<image>"),
    "llava_next": ("<image>", "<image>"),
    "qwen2_vl": ("<|vision_start|>", "<|vision_end|>"),
    "qwen2_5_vl": ("<|vision_start|>", "<|vision_end|>"),
    "llava_onevision": ("<image>", "<image>"),
    "internvl": ("<img>", "</img>"),
    "idefics3": ("<fake_token_around_image>", "<fake_token_around_image>"),
    "smolvlm": ("<fake_token_around_image>", "<fake_token_around_image>"),
    "gemma3": ("<start_of_image>", "<end_of_image>"),
}


def reference_visual(loaded, family, ids):
    """(B, T) bool: from the first document token through the last, found by token string."""
    start, end = (loaded.tokenizer.convert_tokens_to_ids(t) for t in DOCUMENT[family])
    pos = torch.arange(ids.shape[1])
    first = torch.where(ids == start, pos, ids.shape[1]).min(dim=1).values
    last = torch.where(ids == end, pos, -1).max(dim=1).values
    return (pos[None] >= first[:, None]) & (pos[None] <= last[:, None])


# the knockout's independent reference ------------------------------------------------------
def question_positions(loaded, ids, questions):
    """(B, T): where each question's own token ids sit, found by searching the row for them (the
    tiny models' word-level tokenizer gives a question the same ids wherever it stands)."""
    out = torch.zeros_like(ids, dtype=torch.bool)
    for b, q in enumerate(questions):
        q_ids = loaded.tokenizer(q, add_special_tokens=False)["input_ids"]
        row = ids[b].tolist()
        starts = [i for i in range(len(row) - len(q_ids) + 1) if row[i:i + len(q_ids)] == q_ids]
        out[b, starts[-1]:starts[-1] + len(q_ids)] = True
    return out


def reference_queries(loaded, inputs, edges, visual, questions=None):
    """(B, T) query positions of each built-in edge set, from the input ids alone (independent of
    TokenLayout and of the edge-set registry)."""
    ids, valid = inputs["input_ids"], inputs["attention_mask"].bool()
    pos = torch.arange(ids.shape[1])
    last_visual = torch.stack([pos[v].max() for v in visual])
    after = (pos[None] > last_visual[:, None]) & valid
    last = torch.zeros_like(after)
    last[:, -1] = True
    if edges == "image->question":
        return question_positions(loaded, ids, questions)
    reference = {"image->text": after, "image->last": last, "image->prompt": after & ~last}
    assert edges in reference, f"edge set {edges!r} has no independent reference here: write one"
    return reference[edges]


def reference_blocked(loaded, inputs, edges, visual=None, questions=None):
    """(B, T, T) pairs to block; other families pass their image-document positions as ``visual``."""
    visual = inputs["input_ids"] == loaded.model.config.image_token_id if visual is None else visual
    return reference_queries(loaded, inputs, edges, visual, questions)[:, :, None] & visual[:, None, :]


class HandMask:
    """Reference: a pre-hook on one layer's self_attn that edits its eager float mask by hand."""

    def __init__(self, loaded, layer, blocked):
        attn = loaded.decoder_layers[layer].self_attn
        self.blocked = blocked
        self.handle = attn.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        mask = kwargs["attention_mask"].clone()
        mask[self.blocked[:, None]] = torch.finfo(mask.dtype).min
        kwargs["attention_mask"] = mask
        return args, kwargs


def check_against_hand_mask(loaded, inputs, edges, layers=(3, 17), visual=None, label="", questions=None):
    """Knockout at ``layers`` equals the hand-edited eager mask, and changes the logits."""
    with layerprobe.knockout(loaded, layers=layers, edges=edges):
        ours = forward(loaded, inputs).logits
    blocked = reference_blocked(loaded, inputs, edges, visual, questions)
    hooks = [HandMask(loaded, layer, blocked) for layer in layers]
    try:
        reference = forward(loaded, inputs).logits
    finally:
        for h in hooks:
            h.handle.remove()
    unedited = forward(loaded, inputs).logits
    diff = (ours - reference).abs().max().item()
    print(f"{label} {edges}: max |knockout - reference| = {diff:.2e}")
    assert diff < 1e-5
    assert (ours - unedited).abs().max().item() > 1e-3  # the knockout did something


def check_no_op_is_bit_identical(loaded, inputs, attn):
    """An empty knockout installs layerprobe's backend and changes no bit; leaving restores it."""
    stock = forward(loaded, inputs).logits
    with layerprobe.knockout(loaded, layers=[]):
        assert loaded.model.config.get_text_config()._attn_implementation == f"layerprobe_{attn}"
        empty = forward(loaded, inputs).logits
    assert torch.equal(stock, empty)
    assert loaded.model.config.get_text_config()._attn_implementation == attn  # restored


def check_knockout_is_local(loaded, inputs, visual, layer=11):
    """Knockout at ``layer`` changes nothing below it nor before the first text token after ``visual``."""
    ref = forward(loaded, inputs, output_hidden_states=True).hidden_states
    with layerprobe.knockout(loaded, layers=[layer]):
        ko = forward(loaded, inputs, output_hidden_states=True).hidden_states
    # hidden_states[i] is the input of layer i: the outputs of layers < l are untouched
    for i in range(layer + 1):
        assert torch.equal(ref[i], ko[i]), f"layer {i - 1} output changed"
    pos = torch.arange(visual.shape[1])
    first_text = torch.stack([pos[v].max() + 1 for v in visual])
    before_text = pos[None] < first_text[:, None]
    for i in range(layer + 1, len(ref)):
        assert torch.equal(ref[i][before_text], ko[i][before_text]), f"prefix changed after layer {i - 1}"
    assert not torch.allclose(ref[layer + 1][~before_text], ko[layer + 1][~before_text])


def check_batch_answers_equal_single_answers(loaded):
    """Under a knockout, a left-padded batch answers what each sample answers alone."""
    imgs = make_images(4, seed=3)
    with layerprobe.knockout(loaded, layers=[7]):
        batched = [a.text for a in generate_answers(loaded, loaded.encode(imgs, QUESTIONS), 5)]
        single = [generate_answers(loaded, loaded.encode([im], [q]), 5)[0].text for im, q in zip(imgs, QUESTIONS)]
    assert batched == single


# the sweep CLI ------------------------------------------------------------------------------
def sweep_cmd(run_dir, *overrides):
    return [sys.executable, "-m", "layerprobe.cli.sweep", f"run_dir={run_dir}", "progress=false", *overrides]


def run_sweep_cli(run_dir, *overrides, check=True):
    proc = subprocess.run(sweep_cmd(run_dir, *overrides), capture_output=True, text=True, cwd=ROOT, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def run_multirun(out, *overrides) -> None:
    """One ``layerprobe-sweep -m`` process; run k lands in ``out/<model>/<data>/image_text/shard0of1``."""
    cmd = [sys.executable, "-m", "layerprobe.cli.sweep", "-m", f"hydra.sweep.dir={out}", "progress=false",
           "timing_samples=0", *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def check_two_layer_run(run, n_samples: int) -> None:
    table = read_results(run)
    assert len(table) == n_samples * 3
    assert set(table["condition"]) == {"baseline", "knockout"}
    assert sorted(table["layer"].dropna().unique().tolist()) == [0, 1]
    assert table["score"].between(0, 1).all()
    summary = pd.read_csv(run / "summary.csv")
    assert list(summary["condition"]) == ["baseline", "knockout", "knockout"]
    assert {"accuracy", "ci_low", "ci_high", "latency_s"} <= set(summary.columns)
