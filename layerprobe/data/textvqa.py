"""TextVQA: questions that need reading text in the image, ten answers each, VQA accuracy.

    from layerprobe.data import textvqa
    samples, skipped = textvqa.load("/data/textvqa", "val")
    textvqa.build_prompt(samples[0], ocr_tokens=True)   # adds "Reference OCR token: ..." (LLaVA-1.5)

Official layout: TextVQA_0.5.1_{split}.json in root, images in train_images/ (val and train)
or test_images/ (or images/train_images/, images/test_images/); the Rosetta OCR tokens,
TextVQA_Rosetta_OCR_v0.2_{split}.json, are optional.
Parquet mirror (lmms-lab-encoder/textvqa): data/{validation,train,test}-*.parquet (with ocr_tokens).
VQAv2's mirror uses the same path; its files (they have multiple_choice_answer) are refused.
"""

from dataclasses import dataclass
from pathlib import Path

from layerprobe.data._io import (Collector, Layouts, Record, benchmark_root, find_dir, json_records, locate,
                                 mirror_pattern, pick_split)
from layerprobe.data._parquet import parquet_records
from layerprobe.data._prompts import short_answer
from layerprobe.data.sample import Sample
from layerprobe.errors import ConfigError

NAME = "textvqa"
TITLE = "TextVQA"
METRIC = "vqa_accuracy"
MAX_NEW_TOKENS = 16
DEFAULT_SPLIT = "val"
HUB_REPO = "lmms-lab-encoder/textvqa"   # the parquet mirror lmms-eval reads (layerprobe.data.hub)


@dataclass(frozen=True)
class _Split:
    official: str   # the token in TextVQA_0.5.1_{official}.json
    images: str     # val images are a subset of train_images/
    parquet: str
    has_answers: bool = True


SPLITS = {"val": _Split("val", "train_images", "validation"), "train": _Split("train", "train_images", "train"),
          "test": _Split("test", "test_images", "test", has_answers=False)}


def load(root, split: str = DEFAULT_SPLIT, layout: str = "auto", on_error: str = "raise"):
    spec = pick_split(NAME, SPLITS, split)
    questions = f"TextVQA_0.5.1_{spec.official}.json"
    root = benchmark_root(NAME, root, questions)
    found = locate(Layouts(TITLE, (questions,), "data", spec.parquet), root, layout)
    records = Collector(on_error)
    if found.kind == "official":
        path = found.official
        ocr = _rosetta_tokens(root / f"TextVQA_Rosetta_OCR_v0.2_{spec.official}.json", records)
        image_dir = find_dir(root, [spec.images, f"images/{spec.images}"])
        records.run(((rec, spec, image_dir, ocr) for rec in json_records(path, "data")), _sample)
    else:
        rows = parquet_records(found.files, ("question_id", "question", "image_id"),
                               foreign=(("multiple_choice_answer", "VQAv2"),))
        records.run(((rec, spec, image, None) for rec, image in rows), _sample)
    return records.result


def mirror_patterns(split: str) -> tuple[str, ...]:
    return (mirror_pattern("data", pick_split(NAME, SPLITS, split).parquet),)


def _sample(record: Record, spec: _Split, image, ocr: dict | None) -> Sample:
    qid = record.ident("question_id")
    image_id = record.key("image_id")
    extra = {"image_id": image_id}
    if ocr is not None:
        extra["ocr_tokens"] = ocr.get(image_id, [])
    elif "ocr_tokens" in record.data:  # the parquet mirror carries them per row
        extra["ocr_tokens"] = record.strings("ocr_tokens", required=False)
    if isinstance(image, Path):  # official layout: the image folder; files are named by image id
        image = record.inside(image, f"{image_id}.jpg", "image_id")
    return Sample(qid, image, record.text("question"),
                  record.answers("answers", required=spec.has_answers), extra)


def _rosetta_tokens(path, records: Collector) -> dict[str, list[str]] | None:
    """image_id -> OCR tokens from the Rosetta file, or None when the file is absent."""
    if not path.is_file():
        return None
    entries = (records.guard(lambda rec: (rec.key("image_id"), rec.strings("ocr_tokens")), rec)
               for rec in json_records(path, "data"))
    return dict(e for e in entries if e is not None)


def build_prompt(sample: Sample, ocr_tokens: bool = False) -> str:
    """lmms-eval's task (the default): the question as ``str.capitalize`` writes it (first letter
    upper, the rest lower, as its ``doc_to_text``), no OCR tokens. ``ocr_tokens``: LLaVA-1.5's
    paper prompt, the question as given plus its OCR tokens."""
    if not ocr_tokens:
        return short_answer(sample.question.capitalize())
    if "ocr_tokens" not in sample.extra:
        raise ConfigError(f"textvqa: data.prompt.ocr_tokens is on but sample {sample.sample_id} has no OCR "
                          "tokens (official layout: put TextVQA_Rosetta_OCR_v0.2_<split>.json in data.root)")
    tokens = sample.extra["ocr_tokens"]
    return short_answer(sample.question, *([f"Reference OCR token: {', '.join(tokens)}"] if tokens else []))
