"""VizWiz-VQA: photos taken by blind people, ten answers each (often 'unanswerable'), VQA accuracy.

    from layerprobe.data import vizwiz
    samples, skipped = vizwiz.load("/data/vizwiz", "val")
    samples[0].sample_id           # "VizWiz_val_00000000": the image name, VizWiz has no question ids

Official layout: Annotations/{split}.json (a list of records) in root, images in {split}/.
Parquet mirror (lmms-lab/VizWiz-VQA): data/{val,train,test}-*.parquet.
"""

from pathlib import Path

from layerprobe.data._io import Collector, Record, benchmark_root, detect_layout, find_dir, json_records, pick_split
from layerprobe.data._parquet import parquet_records, split_files
from layerprobe.data._prompts import unanswerable
from layerprobe.data.sample import Sample

NAME = "vizwiz"
METRIC = "vqa_accuracy"
MAX_NEW_TOKENS = 16
DEFAULT_SPLIT = "val"
SPLITS = {"val": True, "train": True, "test": False}   # split -> has answers


def load(root, split: str = DEFAULT_SPLIT, layout: str = "auto", on_error: str = "raise"):
    has_answers = pick_split(NAME, SPLITS, split)
    root = benchmark_root(NAME, root, f"Annotations/{split}.json")
    official = find_dir(root, ["Annotations", "annotations", "."]) / f"{split}.json"
    kind, files = detect_layout(NAME, root, layout, official,
                                lambda: split_files(root, split), f"{split}-*.parquet")
    records = Collector(on_error)
    if kind == "official":
        image_dir = find_dir(root, [split, f"images/{split}"])
        records.run(((rec, has_answers, image_dir) for rec in json_records(official, None)), _official)
    else:
        records.run(((rec, has_answers, image) for rec, image in parquet_records(files, ("question_id", "question"))),
                    _sample)
    return records.result


def _official(record: Record, has_answers: bool, image_dir: Path) -> Sample:
    # The image file name is the only id VizWiz has; the mirror's question_id is its stem.
    image = record.text("image")
    record.data["question_id"] = Path(image).stem
    record.data.setdefault("category", record.get("answer_type"))
    return _sample(record, has_answers, str(image_dir / image))


def _sample(record: Record, has_answers: bool, image) -> Sample:
    return Sample(record.ident("question_id"), image, record.text("question"),
                  record.answers("answers", required=has_answers), {"answer_type": record.get("category")})


def build_prompt(sample: Sample) -> str:
    return unanswerable(sample.question)
