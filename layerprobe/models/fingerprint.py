"""A planted checkpoint's fingerprint (the model organism's): what it answers, and its colour
logits, on a few fixed grids of its synthetic task, recorded when it is saved and checked every
time it is loaded (``layerprobe.models.planted.install_from_checkpoint``). A transformers or
torch release that loads or runs the weights differently (a renamed checkpoint key, another image
preprocessing, a changed mask) then stops the run at load time instead of yielding a sweep of
chance-level accuracies.

    spec["fingerprint"] = record(loaded)      # at save time (layerprobe.organism.train)
    verify(loaded, spec["fingerprint"])       # at load time (load_model); raises ModelError

The inputs go through the full user path (processor, chat template, planted mask), so a
preprocessing change is caught as well as a modelling one.
"""

from __future__ import annotations

import torch

from layerprobe.data import synthetic
from layerprobe.errors import ModelError

NUM_INPUTS = 8
SEED = 4242  # far from every split's seed: these grids are not test items
# float32 reruns agree to ~1e-5; reduced precision moves colour logits by a few tenths
ATOL = {torch.float32: 0.05, torch.float64: 0.05}
ATOL_REDUCED = 0.75


def _versions() -> dict:
    import transformers

    return {"transformers": transformers.__version__, "torch": torch.__version__}


@torch.no_grad()
def _observe(loaded) -> tuple[list[str], torch.Tensor]:
    samples = synthetic.make_samples(NUM_INPUTS, SEED, prefix="fingerprint")
    inputs = loaded.encode([s.load_image() for s in samples], [synthetic.build_prompt(s) for s in samples])
    logits = loaded.model(**inputs, logits_to_keep=1).logits[:, -1].float().cpu()
    colour_ids = torch.tensor(loaded.tokenizer.convert_tokens_to_ids(synthetic.COLORS))
    answers = [loaded.tokenizer.convert_ids_to_tokens(int(i)) for i in logits.argmax(-1)]
    return answers, logits[:, colour_ids]


def record(loaded) -> dict:
    """The fingerprint of ``loaded`` (with its planted structure installed)."""
    answers, colour_logits = _observe(loaded)
    return {
        "inputs": f"synthetic.make_samples({NUM_INPUTS}, {SEED}), first-token logits",
        "answers": answers,
        "colour_logits": [[round(float(v), 3) for v in row] for row in colour_logits],
        "recorded_with": _versions(),
    }


def verify(loaded, fingerprint: dict, where: str = "organism") -> None:
    """Raise a one-line ModelError when ``loaded`` does not reproduce ``fingerprint``."""
    answers, colour_logits = _observe(loaded)
    expected = torch.tensor(fingerprint["colour_logits"])
    error = float((colour_logits - expected).abs().max())
    wrong = sum(a != b for a, b in zip(answers, fingerprint["answers"]))
    atol = ATOL.get(loaded.model.dtype, ATOL_REDUCED)
    if wrong == 0 and error <= atol:
        return
    now, then = _versions(), fingerprint.get("recorded_with", {})
    raise ModelError(
        f"{where}: the model does not reproduce its fingerprint ({wrong}/{len(answers)} answers differ, "
        f"largest colour-logit error {error:.3g} > {atol}) under transformers {now['transformers']} and "
        f"torch {now['torch']} (recorded with transformers {then.get('transformers', '?')}, torch "
        f"{then.get('torch', '?')}); the weights are damaged or this release loads them differently: "
        "install the versions in constraints.txt or retrain it"
    )
