"""``lmms-eval --model layerprobe``: lmms-eval's requests answered by a layerprobe method.

    lmms-eval --model layerprobe --model_args pretrained=organism,method=contrastive,scale=0.5 \\
      --tasks <task> --include_path <task dir> --batch_size 8 --log_samples --output_path logs/

The task's prompt text goes through the model adapter's chat template with the task's image
(exactly one per question), batches are left-padded, answers are greedy with the task's
``max_new_tokens`` and cut at its ``until`` strings. Requests are answered in the task's document
order, batch by batch, so a run equals ``layerprobe-eval`` on the same samples with the same batch
size.

Per-sample records: lmms-eval 0.7 logs, from a model, only each sample's answer and its token
counts (``--log_samples`` drops the request arguments). So each answer comes back as lmms-eval's
``GenerationResult`` whose token counts carry the method's record too: in the samples file,
``token_counts[0]`` is ``{"output_tokens": n, "layerprobe": {"method": ..., ...}}`` with
contrastive's ``pre_layer, n_suppressed, hellinger``, DoLa's ``premature_layers``, ViCrop's
``crop_box``, a knockout's ``knockout_layers, edges``, and every method's timings.

Bad model args (an unknown method option, a value out of range, a profile that does not fit)
and answers from non-finite logits end the run as in layerprobe's own commands: one line
``layerprobe: error: ...`` on stderr and exit code 2. lmms-eval reports an exception from a model
with a traceback and goes on to exit 0, so the plugin exits itself.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from dataclasses import dataclass, field

from lmms_eval.api.instance import GenerationResult, TokenCounts
from lmms_eval.api.model import lmms
from PIL import Image
from tqdm import tqdm

from layerprobe.analysis.profiles import method_profile
from layerprobe.data.sample import Sample
from layerprobe.errors import ConfigError, LayerprobeError, ModelError
from layerprobe.lmms.generation_kwargs import cut_at, decoding
from layerprobe.lmms.options import ModelArgs
from layerprobe.methods.registry import make_method
from layerprobe.models.loading import load_model

log = logging.getLogger("layerprobe.lmms")

RECORD_KEY = "layerprobe"  # the key of a sample's method record in its logged token counts


def question_of(doc: dict, context: str) -> str | None:
    """The document's question as it appears in the prompt text (lmms-eval's TextVQA capitalises
    it), or None; ``image->question`` knockouts and ViCrop's generic prompt need it."""
    question = doc.get("question") if isinstance(doc, dict) else None
    if not isinstance(question, str):
        return None
    for form in (question, question.capitalize(), question.strip()):
        if form and form in context:
            return form
    return None


def log_record(record: dict) -> dict:
    """A method record as JSON-ready values, without the answer (lmms-eval logs it) and maps."""
    out = {}
    for key, value in record.items():
        if key in ("prediction", "maps"):
            continue
        out[key] = json.loads(json.dumps(value, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))
    return out


def exits_on_bad_input(fn):
    """Bad input ends the process with one line and exit code 2 (lmms-eval would swallow it)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except LayerprobeError as err:
            print(f"layerprobe: error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
    return wrapper


@dataclass
class RecordedCounts(TokenCounts):
    """Token counts that also log the method's record of the sample."""

    record: dict = field(default_factory=dict)

    def to_dict(self):
        return {**super().to_dict(), RECORD_KEY: self.record}


class LayerprobeLMM(lmms):
    """An lmms-eval model: one layerprobe method on one loaded model."""

    is_simple = True

    @exits_on_bad_input
    def __init__(self, **model_args):
        super().__init__()
        args = ModelArgs.parse(model_args)
        self.loaded = load_model(args.pretrained, device=args.device, dtype=args.dtype,
                                 attn_implementation=args.attn_implementation, check_keys=args.check_keys)
        profile = method_profile(args.profile, self.loaded, check=args.profile_check)
        self.method = make_method(args.method, profile=profile, **args.method_options)
        self.method.check(self.loaded)
        self.batch_size = args.batch_size
        self.max_new_tokens = args.max_new_tokens
        log.info("layerprobe %s on %s (batch size %d)", self.method.name, self.loaded.name, self.batch_size)

    @exits_on_bad_input
    def generate_until(self, requests) -> list[GenerationResult]:
        answers: list[GenerationResult | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, request in enumerate(requests):
            context, gen, _, _, task, split = request.args
            key = (task, split, json.dumps(gen, sort_keys=True, default=str))
            groups.setdefault(key, []).append(i)
        with tqdm(total=len(requests), desc=f"layerprobe {self.method.name}", disable=self.rank != 0) as bar:
            for (task, split, _), indices in groups.items():
                max_new_tokens, until = decoding(task, requests[indices[0]].args[1], self.max_new_tokens)
                for start in range(0, len(indices), self.batch_size):
                    chunk = indices[start:start + self.batch_size]
                    samples, images, texts = self._batch([requests[i] for i in chunk])
                    records = self.method.answer_batch(self.loaded, samples, images, texts, max_new_tokens)
                    for i, record in zip(chunk, records):
                        if record.get("nonfinite_logits"):
                            raise ModelError(f"task {task} doc {requests[i].args[3]}: the model's logits held NaN or "
                                             "inf (an overflow: float16?); run in bfloat16 or float32 (dtype=...)")
                        counts = RecordedCounts(output_tokens=record.get("n_tokens"),
                                                record={"method": self.method.name, **log_record(record)})
                        answers[i] = GenerationResult(cut_at(record["prediction"], until), counts)
                    bar.update(len(chunk))
        return answers

    def _batch(self, requests):
        samples, images, texts = [], [], []
        for request in requests:
            context, _, doc_to_visual, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            visuals = doc_to_visual(doc)
            visuals = [v for group in visuals for v in (group if isinstance(group, list) else [group])]
            if len(visuals) != 1 or not isinstance(visuals[0], Image.Image):
                raise ConfigError(f"task {task} doc {doc_id}: layerprobe methods take exactly one image per "
                                  f"question; doc_to_visual gave {len(visuals)} visual(s)")
            image = visuals[0].convert("RGB")
            samples.append(Sample(f"{task}/{doc_id}", image, question_of(doc, context), []))
            images.append(image)
            texts.append(context)
        return samples, images, texts

    def loglikelihood(self, requests):
        raise NotImplementedError("layerprobe: loglikelihood is not supported; its methods act on greedy "
                                  "generation, so use generate_until tasks")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("layerprobe: multi-round generation is not supported")
