"""OK-VQA: COCO questions that need outside knowledge, ten answers each, scored by VQA accuracy.

    from layerprobe.data import okvqa
    samples, skipped = okvqa.load("/data/okvqa", "val")
    okvqa.build_prompt(samples[0])   # question, the 'Unanswerable' sentence, the short-answer suffix

Official layout (VQA format): OpenEnded_mscoco_val2014_questions.json and
mscoco_val2014_annotations.json in root, images in val2014/.
Parquet mirror (lmms-lab-encoder/OK-VQA): data/val2014-*.parquet.
"""

from layerprobe.data._io import mirror_pattern, pick_split
from layerprobe.data._prompts import unanswerable
from layerprobe.data._vqa_common import VqaSplit, load_vqa

NAME = "okvqa"
TITLE = "OK-VQA"
METRIC = "vqa_accuracy"
MAX_NEW_TOKENS = 16
DEFAULT_SPLIT = "val"
HUB_REPO = "lmms-lab-encoder/OK-VQA"   # the parquet mirror lmms-eval reads (layerprobe.data.hub)
SPLITS = {
    "val": VqaSplit("OpenEnded_mscoco_val2014_questions.json", "mscoco_val2014_annotations.json",
                    images="val2014", parquet="val2014"),
    "train": VqaSplit("OpenEnded_mscoco_train2014_questions.json", "mscoco_train2014_annotations.json",
                      images="train2014", parquet="train2014"),
}


def load(root, split: str = DEFAULT_SPLIT, layout: str = "auto", on_error: str = "raise"):
    return load_vqa(NAME, TITLE, root, pick_split(NAME, SPLITS, split), layout, on_error)


def mirror_patterns(split: str) -> tuple[str, ...]:
    return (mirror_pattern("data", pick_split(NAME, SPLITS, split).parquet),)


def build_prompt(sample) -> str:
    # lmms-eval's OK-VQA task asks with the same 'Unanswerable' sentence as VizWiz.
    return unanswerable(sample.question)
