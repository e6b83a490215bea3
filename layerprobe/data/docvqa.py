"""DocVQA: questions about scanned document pages, scored by ANLS (partial credit for near-misses).

    from layerprobe.data import docvqa
    samples, skipped = docvqa.load("/data/docvqa", "val")
    docvqa.MAX_NEW_TOKENS          # 32: answers are longer than one word

Official layout: {split}_v1.0_withQT.json (or {split}_v1.0.json) in root, images at the path each
record names (documents/*.png), relative to root.
Parquet mirror (lmms-lab/DocVQA, config DocVQA): DocVQA/{validation,test}-*.parquet.
"""

from layerprobe.data._io import Collector, Record, benchmark_root, detect_layout, json_records, pick_split
from layerprobe.data._parquet import parquet_records, split_files
from layerprobe.data._prompts import short_answer
from layerprobe.data.sample import Sample

NAME = "docvqa"
METRIC = "anls"
MAX_NEW_TOKENS = 32
DEFAULT_SPLIT = "val"
SPLITS = {"val": ("validation", True), "test": ("test", False), "train": ("train", True)}  # -> mirror split, answers
CONFIG = "DocVQA"
EXTRA_KEYS = {"docId": "doc_id", "question_types": "question_types", "ucsf_document_id": "ucsf_document_id",
              "ucsf_document_page_no": "ucsf_document_page_no"}


def load(root, split: str = DEFAULT_SPLIT, layout: str = "auto", on_error: str = "raise"):
    mirror_split, has_answers = pick_split(NAME, SPLITS, split)
    root = benchmark_root(NAME, root, f"{split}_v1.0_withQT.json")
    # The "withQT" release adds question types; the plain one is otherwise the same.
    official = root / f"{split}_v1.0_withQT.json"
    if not official.is_file() and (root / f"{split}_v1.0.json").is_file():
        official = root / f"{split}_v1.0.json"
    kind, files = detect_layout(NAME, root, layout, official, lambda: split_files(root, mirror_split, CONFIG),
                                f"{CONFIG}/{mirror_split}-*.parquet")
    records = Collector(on_error)
    if kind == "official":
        records.run(((rec, has_answers, root) for rec in json_records(official, "data")), _official)
    else:
        records.run(((rec, has_answers, image) for rec, image in parquet_records(files, ("questionId", "question"))),
                    _sample)
    return records.result


def _official(record: Record, has_answers: bool, root) -> Sample:
    record.ident("questionId")  # so that an error about the image names the question
    return _sample(record, has_answers, str(root / record.text("image")))


def _sample(record: Record, has_answers: bool, image) -> Sample:
    qid = record.ident("questionId")
    extra = {ours: record.get(theirs) for theirs, ours in EXTRA_KEYS.items() if record.get(theirs) is not None}
    return Sample(qid, image, record.text("question"), record.answers("answers", required=has_answers), extra)


def build_prompt(sample: Sample) -> str:
    return short_answer(sample.question)
