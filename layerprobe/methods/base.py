"""What ``layerprobe-eval`` asks of an inference method, and the defaults.

    method.check(loaded)                       # refuse a model/option mismatch before any work
    method.answer_batch(loaded, samples, images, texts, max_new_tokens)   # one dict per sample
    method.keep_maps_for(8)                    # keep per-sample maps for the first 8 samples
    method.draw(run_dir, loaded, data, n=4)    # the method's own per-sample figures

A record holds ``prediction, prefill_s, total_s, n_tokens`` (seconds for the whole batch, as
``generate_answers`` measures them) plus the method's own fields, which go into the results rows
as they are.
"""

from __future__ import annotations


def answer_records(answers) -> list[dict]:
    return [a.record() for a in answers]


class Method:
    name = "method"

    def check(self, loaded) -> None:
        """Raise ConfigError when this method cannot run on ``loaded`` as configured."""

    def answer_batch(self, loaded, samples, images, texts, max_new_tokens) -> list[dict]:
        raise NotImplementedError

    def keep_maps_for(self, n_samples: int) -> None:
        """Methods with per-sample maps keep them (in the records) for ``n_samples`` samples."""

    def draw(self, run_dir, loaded, data, n: int) -> list:
        """Per-sample figures of a finished run (its results rows and the benchmark's images)."""
        return []
