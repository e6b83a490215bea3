"""VizWiz-VQA: photos taken by blind people, ten answers each (often 'unanswerable'), VQA accuracy.

    from layerprobe.data import vizwiz
    samples, skipped = vizwiz.load("/data/vizwiz", "val")
    samples[0].sample_id           # "VizWiz_val_00000000": the image name, VizWiz has no question ids

Official layout: Annotations/{split}.json (a list of records; also found as
annotations/{split}.json or {split}.json in root), images in {split}/ (or images/{split}/).
Parquet mirror (lmms-lab-encoder/VizWiz-VQA): data/{val,train,test}-*.parquet.
"""

from pathlib import Path

from layerprobe.data._io import (Collector, Layouts, Record, benchmark_root, find_dir, json_records, locate,
                                 mirror_pattern, pick_split)
from layerprobe.data._parquet import parquet_records
from layerprobe.data._prompts import unanswerable
from layerprobe.data.sample import Sample

NAME = "vizwiz"
TITLE = "VizWiz"
METRIC = "vqa_accuracy"
MAX_NEW_TOKENS = 16
DEFAULT_SPLIT = "val"
SPLITS = {"val": True, "train": True, "test": False}   # split -> has answers
HUB_REPO = "lmms-lab-encoder/VizWiz-VQA"   # the parquet mirror lmms-eval reads (layerprobe.data.hub)


def load(root, split: str = DEFAULT_SPLIT, layout: str = "auto", on_error: str = "raise"):
    has_answers = pick_split(NAME, SPLITS, split)
    root = benchmark_root(NAME, root, f"Annotations/{split}.json")
    official = (f"Annotations/{split}.json", f"annotations/{split}.json", f"{split}.json")
    found = locate(Layouts(TITLE, official, "data", split), root, layout)
    records = Collector(on_error)
    if found.kind == "official":
        image_dir = find_dir(root, [split, f"images/{split}"])
        records.run(((rec, has_answers, image_dir) for rec in json_records(found.official, None)), _official)
    else:
        rows = parquet_records(found.files, ("question_id", "question"))
        records.run(((rec, has_answers, image) for rec, image in rows), _sample)
    return records.result


def mirror_patterns(split: str) -> tuple[str, ...]:
    pick_split(NAME, SPLITS, split)
    return (mirror_pattern("data", split),)


def _official(record: Record, has_answers: bool, image_dir: Path) -> Sample:
    # The image file name is the only id VizWiz has; the mirror's question_id is its stem.
    image = record.text("image")
    record.data["question_id"] = Path(image).stem
    record.data.setdefault("category", record.get("answer_type"))
    return _sample(record, has_answers, record.inside(image_dir, image, "image"))


def _sample(record: Record, has_answers: bool, image) -> Sample:
    return Sample(record.ident("question_id"), image, record.text("question"),
                  record.answers("answers", required=has_answers), {"answer_type": record.get("category")})


def build_prompt(sample: Sample) -> str:
    return unanswerable(sample.question)
