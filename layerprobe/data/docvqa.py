"""DocVQA: questions about scanned document pages, scored by ANLS (partial credit for near-misses).

    from layerprobe.data import docvqa
    samples, skipped = docvqa.load("/data/docvqa", "val")
    docvqa.MAX_NEW_TOKENS          # 32: answers are longer than one word

Official layout: {split}_v1.0_withQT.json (or {split}_v1.0.json) in root, images at the path each
record names (documents/*.png), relative to root.
Parquet mirror (lmms-lab-encoder/DocVQA, config DocVQA): DocVQA/{validation,test}-*.parquet.
"""

from layerprobe.data._io import (Collector, Layouts, Record, benchmark_root, json_records, locate, mirror_pattern,
                                 pick_split)
from layerprobe.data._parquet import parquet_records
from layerprobe.data._prompts import short_answer
from layerprobe.data.sample import Sample

NAME = "docvqa"
TITLE = "DocVQA"
METRIC = "anls"
MAX_NEW_TOKENS = 32
DEFAULT_SPLIT = "val"
SPLITS = {"val": ("validation", True), "test": ("test", False), "train": ("train", True)}  # -> mirror split, answers
CONFIG = "DocVQA"
HUB_REPO = "lmms-lab-encoder/DocVQA"   # the parquet mirror lmms-eval reads (layerprobe.data.hub)
EXTRA_KEYS = {"docId": "doc_id", "question_types": "question_types", "ucsf_document_id": "ucsf_document_id",
              "ucsf_document_page_no": "ucsf_document_page_no"}


def load(root, split: str = DEFAULT_SPLIT, layout: str = "auto", on_error: str = "raise"):
    mirror_split, has_answers = pick_split(NAME, SPLITS, split)
    root = benchmark_root(NAME, root, f"{split}_v1.0_withQT.json")
    # The "withQT" release adds question types; the plain one is otherwise the same.
    official = (f"{split}_v1.0_withQT.json", f"{split}_v1.0.json")
    found = locate(Layouts(TITLE, official, CONFIG, mirror_split), root, layout)
    records = Collector(on_error)
    if found.kind == "official":
        records.run(((rec, has_answers, root) for rec in json_records(found.official, "data")), _official)
    else:
        rows = parquet_records(found.files, ("questionId", "question"))
        records.run(((rec, has_answers, image) for rec, image in rows), _sample)
    return records.result


def mirror_patterns(split: str) -> tuple[str, ...]:
    return (mirror_pattern(CONFIG, pick_split(NAME, SPLITS, split)[0]),)


def _official(record: Record, has_answers: bool, root) -> Sample:
    record.ident("questionId")  # so that an error about the image names the question
    return _sample(record, has_answers, record.inside(root, record.text("image"), "image"))


def _sample(record: Record, has_answers: bool, image) -> Sample:
    qid = record.ident("questionId")
    extra = {ours: record.get(theirs) for theirs, ours in EXTRA_KEYS.items() if record.get(theirs) is not None}
    return Sample(qid, image, record.text("question"), record.answers("answers", required=has_answers), extra)


def build_prompt(sample: Sample) -> str:
    return short_answer(sample.question)
