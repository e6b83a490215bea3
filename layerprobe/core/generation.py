"""Batched greedy answering with honest timing: prefill latency (time to the first token) and
total latency, synchronised on CUDA, warm-up excluded by the caller running :func:`warm_up`.

    inputs = loaded.encode(images, questions)
    warm_up(loaded, inputs)
    answers = generate_answers(loaded, inputs, max_new_tokens=16)
    answers[0].text, answers[0].prefill_s, answers[0].total_s, answers[0].n_tokens
    answers, logits, first = generate_with_first_logits(loaded, inputs, 16)   # + the first step's logits
    generate_answers(loaded, inputs, 16, logits_processor=LogitsProcessorList([proc]))   # extra generate() kwargs

``prefill_s`` and ``total_s`` are wall-clock seconds of the whole batch's call. An answer whose
logits held NaN or inf at some step is flagged (``nonfinite``, ``layerprobe.core.finite_logits``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from layerprobe.core.finite_logits import watch_model


@dataclass
class Answer:
    text: str
    prefill_s: float
    total_s: float
    n_tokens: int
    nonfinite: bool = False   # the logits held NaN or inf: the answer means nothing
    first_step: dict | None = None   # answer probabilities (layerprobe.core.first_step), where computed

    def record(self) -> dict:
        """The fields of a results row this answer fills."""
        flag = {"nonfinite_logits": True} if self.nonfinite else {}
        return {"prediction": self.text, "prefill_s": self.prefill_s, "total_s": self.total_s,
                "n_tokens": self.n_tokens, **(self.first_step or {}), **flag}


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so wall-clock time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _PrefillClock:
    """Stamps the end of the first forward call of a generate(): the prefill."""

    def __init__(self, model, start: float):
        self.start, self.prefill_s, self.device = start, None, next(model.parameters()).device
        self._handle = model.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        if self.prefill_s is None:
            sync(self.device)
            self.prefill_s = time.perf_counter() - self.start

    def close(self):
        self._handle.remove()


def greedy_kwargs(loaded, max_new_tokens: int) -> dict:
    tok = loaded.tokenizer
    gen = loaded.model.generation_config
    return dict(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
        pad_token_id=gen.pad_token_id if gen.pad_token_id is not None else tok.pad_token_id,
        eos_token_id=gen.eos_token_id if gen.eos_token_id is not None else tok.eos_token_id,
        temperature=None, top_p=None, top_k=None,
    )


def decode_new_tokens(loaded, new_tokens: torch.Tensor) -> tuple[list[str], list[int]]:
    """Answer strings and generated-token counts (up to and including the first EOS)."""
    eos = greedy_kwargs(loaded, 1)["eos_token_id"]
    eos_ids = torch.tensor(eos if isinstance(eos, list) else [eos], device=new_tokens.device)
    is_eos = torch.isin(new_tokens, eos_ids)
    first = torch.where(is_eos.any(1), is_eos.float().argmax(1), torch.full_like(is_eos[:, 0], new_tokens.shape[1], dtype=torch.long))
    counts = torch.clamp(first + is_eos.any(1).long(), max=new_tokens.shape[1]).tolist()
    texts = [
        loaded.tokenizer.decode(row[:n], skip_special_tokens=True).strip()
        for row, n in zip(new_tokens.tolist(), first.tolist())
    ]
    return texts, counts


def _generate(loaded, inputs: dict, max_new_tokens: int, **generate_kwargs):
    device = loaded.device
    sync(device)
    start = time.perf_counter()
    clock = _PrefillClock(loaded.model, start)
    try:
        with watch_model(loaded.model) as watch:
            out = loaded.model.generate(**inputs, **greedy_kwargs(loaded, max_new_tokens), **generate_kwargs)
    finally:
        clock.close()
    sync(device)
    total = time.perf_counter() - start
    sequences = out if isinstance(out, torch.Tensor) else out.sequences
    new_tokens = sequences[:, inputs["input_ids"].shape[1]:]
    texts, counts = decode_new_tokens(loaded, new_tokens)
    prefill = clock.prefill_s if clock.prefill_s is not None else total
    bad = watch.flags(None, len(texts))
    return [Answer(t, prefill, total, n, b) for t, n, b in zip(texts, counts, bad)], out, new_tokens


@torch.no_grad()
def generate_answers(loaded, inputs: dict, max_new_tokens: int, **generate_kwargs) -> list[Answer]:
    """Greedy answers of one batch; ``generate_kwargs`` go to ``model.generate`` as well (a logits
    processor, for example)."""
    return _generate(loaded, inputs, max_new_tokens, **generate_kwargs)[0]


@torch.no_grad()
def generate_with_first_logits(loaded, inputs: dict, max_new_tokens: int
                               ) -> tuple[list[Answer], torch.Tensor, torch.Tensor]:
    """Greedy answers, the raw logits of the first answer step (B, V) and the first generated
    tokens (B,): what generate() computes anyway, kept instead of dropped."""
    answers, out, new_tokens = _generate(loaded, inputs, max_new_tokens, output_logits=True,
                                         return_dict_in_generate=True)
    return answers, out.logits[0], new_tokens[:, 0]


@torch.no_grad()
def warm_up(loaded, inputs: dict, max_new_tokens: int = 2) -> None:
    """One untimed generation: kernels, allocator and caches are ready before timing."""
    loaded.model.generate(**inputs, **greedy_kwargs(loaded, max_new_tokens))
