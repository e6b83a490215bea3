"""What a task's ``generation_kwargs`` ask of layerprobe: a greedy budget and stop strings.

    decoding("textvqa_val", {"until": ["ASSISTANT:"]}, 16)      # (16, ["ASSISTANT:"])
    decoding("mmmu", {"temperature": 0.7}, 16)                 # ConfigError: ... decode greedily
    cut_at("red\nASSISTANT: blue", ["ASSISTANT:"])             # "red\n"
"""

from __future__ import annotations

from layerprobe.errors import ConfigError

_SAMPLING = ("temperature", "top_p", "top_k")


def cut_at(text: str, until: list[str]) -> str:
    """``text`` up to the first of the ``until`` strings, as lmms-eval's own models cut answers."""
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text


def decoding(task: str, gen: dict, default_max_new_tokens: int) -> tuple[int, list[str]]:
    """(max_new_tokens, until) of a task's generation kwargs; sampling or beams are refused,
    since every layerprobe method is defined on greedy decoding."""
    for key in _SAMPLING:
        if key in gen and gen[key] not in (None, 0, 0.0) and not (key == "top_p" and gen[key] == 1.0):
            raise ConfigError(f"task {task}: generation_kwargs {key}={gen[key]!r}; layerprobe methods decode "
                              "greedily (temperature 0)")
    if gen.get("do_sample") or (gen.get("num_beams") or 1) > 1:
        raise ConfigError(f"task {task}: generation_kwargs ask for sampling or beam search; layerprobe methods "
                          "decode greedily")
    until = gen.get("until") or []
    until = [until] if isinstance(until, str) else list(until)
    return int(gen.get("max_new_tokens") or default_max_new_tokens), until
