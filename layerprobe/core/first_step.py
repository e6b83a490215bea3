"""Answer probabilities at the first answer step, from logits a generation computes anyway: the
one place both sweep engines turn a condition's first-step logits into results fields.

    candidates = reference_candidates(loaded.tokenizer, [s.answers for s in samples])
    ref_ids = choose_reference(baseline_logits, candidates)     # (B,), -1 where no reference
    fields = first_step_fields(logits, baseline_first_tokens, ref_ids)
    fields[0]   # {"answer_logprob": ..., "reference_logprob": ... or None, "margin": ...}

- ``answer_logprob``: log p of the baseline's greedy first token under this condition's logits
  (for the baseline itself, its own token).
- ``reference_logprob``: log p of the reference answer's first token, or None without a reference.
- ``margin``: top-1 minus top-2 logit at that step (raw logits, the model's own scale).

Log-probabilities are taken in float32 whatever the model's dtype.

**Which token starts the reference.** The reference (the most frequent of a sample's reference
answers) is tokenized as a continuation, after a newline, in up to four forms: as given and with
its first letter upper-cased, each with and without a leading space. Tokenizers that fold a
leading space into the word (SentencePiece/Llama: ``▁Yes``; byte-level BPE: ``ĠYes``) give
different ids for the two spacings, and which one a model writes after its prompt depends on the
chat template (``ASSISTANT:`` then ``▁Yes``; ``assistant\\n`` then ``Yes``); a word-level tokenizer
(the organisms') gives the same id for both. A form whose first token is unknown to the
vocabulary, or only whitespace (a bare ``▁``), is dropped. Of the remaining ids, the reference's
first token is the one the **baseline's** first-step logits rank highest: the reference as this
model would start writing it. It is chosen once per sample, so every condition of the sample is
scored on the same token.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch

CONTEXT = "\n"


def most_frequent(answers: Sequence[str]) -> str | None:
    """The most frequent non-empty reference answer (ties: the first given), or None."""
    counts = Counter(a.strip() for a in answers if isinstance(a, str) and a.strip())
    return counts.most_common(1)[0][0] if counts else None


def _first_continuation_id(tokenizer, text: str) -> int | None:
    """The first token ``text`` adds after ``CONTEXT``; None if it adds none."""
    base = tokenizer(CONTEXT, add_special_tokens=False)["input_ids"]
    full = tokenizer(CONTEXT + text, add_special_tokens=False)["input_ids"]
    if full[:len(base)] == base:
        rest = full[len(base):]
    else:   # the context merged with the text: tokenize the text alone
        rest = tokenizer(text, add_special_tokens=False)["input_ids"]
    return int(rest[0]) if rest else None


def reference_ids(tokenizer, reference: str | None) -> list[int]:
    """Candidate first-token ids of ``reference`` (see the module docstring); [] for None."""
    if not reference:
        return []
    forms = dict.fromkeys([reference, reference[:1].upper() + reference[1:]])
    found = []
    for form in forms:
        for text in (form, " " + form):
            token = _first_continuation_id(tokenizer, text)
            if token is None or token == tokenizer.unk_token_id or not tokenizer.decode([token]).strip():
                continue
            if token not in found:
                found.append(token)
    return found


def reference_candidates(tokenizer, answers_per_sample: Sequence[Sequence[str]]) -> list[list[int]]:
    """Per sample, the candidate first-token ids of its most frequent reference answer."""
    return [reference_ids(tokenizer, most_frequent(answers)) for answers in answers_per_sample]


def choose_reference(base_logits: torch.Tensor, candidates: Sequence[Sequence[int]] | None) -> torch.Tensor:
    """Per sample, the candidate id with the highest baseline logit; -1 where there is none."""
    B = base_logits.shape[0]
    chosen = torch.full((B,), -1, dtype=torch.long, device=base_logits.device)
    for i, ids in enumerate(candidates or [[]] * B):
        if ids:
            ids_t = torch.tensor(list(ids), device=base_logits.device)
            chosen[i] = ids_t[base_logits[i, ids_t].float().argmax()]
    return chosen


@torch.no_grad()
def first_step_fields(logits: torch.Tensor, answer_ids: torch.Tensor, reference_ids: torch.Tensor | None
                      ) -> list[dict]:
    """Per row of ``logits`` (B, V): answer_logprob, reference_logprob, margin (see above)."""
    logits = logits.float()
    logprobs = torch.log_softmax(logits, dim=-1)
    rows = torch.arange(logits.shape[0], device=logits.device)
    answer = logprobs[rows, answer_ids.to(logits.device)].tolist()
    top2 = logits.topk(2, dim=-1).values
    margin = (top2[:, 0] - top2[:, 1]).tolist()
    if reference_ids is None:
        reference = [None] * len(answer)
    else:
        ref = reference_ids.to(logits.device)
        values = logprobs[rows, ref.clamp(min=0)].tolist()
        reference = [v if r >= 0 else None for v, r in zip(values, ref.tolist())]
    return [{"answer_logprob": a, "reference_logprob": r, "margin": m} for a, r, m in zip(answer, reference, margin)]
