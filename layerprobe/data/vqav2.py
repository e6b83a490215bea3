"""VQAv2: COCO questions with ten human answers each, scored by VQA accuracy.

    from layerprobe.data import vqav2
    samples, skipped = vqav2.load("/data/vqav2", "val", layout="auto", on_error="raise")
    vqav2.build_prompt(samples[0])   # "...?\nAnswer the question using a single word or phrase."

Official layout: v2_OpenEnded_mscoco_{val2014,test-dev2015,test2015}_questions.json and
v2_mscoco_val2014_annotations.json in root, images in val2014/ (test2015/ for both test splits).
Parquet mirror (lmms-lab-encoder/VQAv2): data/{validation,testdev,test}-*.parquet. TextVQA's mirror uses
the same path; its files (they have ocr_tokens) are refused rather than read as VQAv2.
"""

from layerprobe.data._io import mirror_pattern, pick_split
from layerprobe.data._prompts import short_answer
from layerprobe.data._vqa_common import VqaSplit, load_vqa

NAME = "vqav2"
TITLE = "VQAv2"
METRIC = "vqa_accuracy"
MAX_NEW_TOKENS = 16
DEFAULT_SPLIT = "val"
HUB_REPO = "lmms-lab-encoder/VQAv2"   # the parquet mirror lmms-eval reads (layerprobe.data.hub)
SPLITS = {
    "val": VqaSplit("v2_OpenEnded_mscoco_val2014_questions.json", "v2_mscoco_val2014_annotations.json",
                    images="val2014", parquet="validation"),
    # test-dev questions use test2015 images; answers exist only on the evaluation server.
    "testdev": VqaSplit("v2_OpenEnded_mscoco_test-dev2015_questions.json", None, images="test2015", parquet="testdev"),
    "test": VqaSplit("v2_OpenEnded_mscoco_test2015_questions.json", None, images="test2015", parquet="test"),
}


def load(root, split: str = DEFAULT_SPLIT, layout: str = "auto", on_error: str = "raise"):
    return load_vqa(NAME, TITLE, root, pick_split(NAME, SPLITS, split), layout, on_error,
                    foreign=(("ocr_tokens", "TextVQA"),))


def mirror_patterns(split: str) -> tuple[str, ...]:
    return (mirror_pattern("data", pick_split(NAME, SPLITS, split).parquet),)


def build_prompt(sample) -> str:
    return short_answer(sample.question)
