"""GQA: compositional questions on Visual Genome images, one answer each, scored by exact match.

    from layerprobe.data import gqa
    samples, skipped = gqa.load("/data/gqa", "testdev_balanced")
    samples[0].answers               # ["cat"]: the single answer, as a list like every benchmark

Official layout: {tier}_questions.json (dict questionId -> record) in root, images/{imageId}.jpg
(or {imageId}.jpg in root when there is no images/ folder).
Parquet mirror (lmms-lab-encoder/GQA): two configs joined on imageId == id,
{tier}_instructions/{split}-*.parquet and {tier}_images/{split}-*.parquet.
"""

from pathlib import Path

from layerprobe.data._io import (Collector, Layouts, Record, benchmark_root, find_dir, locate, mirror_files,
                                 mirror_pattern, pick_split, read_json)
from layerprobe.data._parquet import ParquetImage, parquet_records, read_rows
from layerprobe.data._prompts import short_answer
from layerprobe.data.sample import Sample
from layerprobe.errors import DataError

NAME = "gqa"
TITLE = "GQA"
METRIC = "gqa_accuracy"
MAX_NEW_TOKENS = 16
DEFAULT_SPLIT = "testdev_balanced"
# tier -> split name inside the mirror's configs; LLaVA reports testdev_balanced.
SPLITS = {"testdev_balanced": "testdev", "testdev_all": "testdev", "val_balanced": "val",
          "train_balanced": "train", "challenge_balanced": "challenge"}
HUB_REPO = "lmms-lab-encoder/GQA"   # the parquet mirror lmms-eval reads (layerprobe.data.hub)


def load(root, split: str = DEFAULT_SPLIT, layout: str = "auto", on_error: str = "raise"):
    mirror_split = pick_split(NAME, SPLITS, split)
    questions = f"{split}_questions.json"
    root = benchmark_root(NAME, root, questions)
    found = locate(Layouts(TITLE, (questions,), f"{split}_instructions", mirror_split), root, layout)
    records = Collector(on_error)
    if found.kind == "official":
        path = found.official
        data = read_json(path)
        if not isinstance(data, dict):
            raise DataError(f"{path}: top level must be an object questionId -> question, got {type(data).__name__}")
        image_dir = find_dir(root, ["images", "."])
        records.run(((Record(item, path, f"question {qid}"), qid, lambda image_id, rec: rec.inside(image_dir, f"{image_id}.jpg", "imageId"))
                     for qid, item in data.items()), _sample)
    else:
        images = _image_index(root, mirror_split, f"{split}_images")
        rows = parquet_records(found.files, ("id", "imageId", "question", "answer"), image_column=None)
        records.run(((rec, None, lambda image_id, _: images.get(image_id)) for rec, _ in rows), _sample)
    return records.result


def mirror_patterns(split: str) -> tuple[str, ...]:
    """The questions and the images of ``split``: two configs of the mirror, joined on imageId."""
    mirror_split = pick_split(NAME, SPLITS, split)
    return tuple(mirror_pattern(f"{split}_{config}", mirror_split) for config in ("instructions", "images"))


def _sample(record: Record, question_id, image_of) -> Sample:
    # The official file keys records by questionId; the mirror has it as column "id".
    if question_id is None:
        question_id = record.ident("id")
    record.sample_id = str(question_id)
    image_id = record.key("imageId")
    image = image_of(image_id, record) or record.fail(f"imageId {image_id} is not in the images parquet files")
    return Sample(str(question_id), image, record.text("question"), [record.text("answer")],
                  {"image_id": image_id, "full_answer": record.get("fullAnswer"),
                   "is_balanced": record.get("isBalanced")})


def _image_index(root: Path, split: str, config: str) -> dict[str, ParquetImage]:
    """imageId -> where its image is; reads only the id column."""
    files = mirror_files(root, config, split)
    if not files:
        raise DataError(f"{root}: no {config}/{split}-*.parquet files (the GQA images, joined on imageId)")
    index: dict[str, ParquetImage] = {}
    for path in files:
        for i, row in enumerate(read_rows(path, required=("id",))):
            index.setdefault(str(row["id"]), ParquetImage(str(path), i))
    return index


def build_prompt(sample: Sample) -> str:
    return short_answer(sample.question)
