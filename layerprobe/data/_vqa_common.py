"""The VQA file layout (questions file + annotations file, COCO images) that VQAv2 and OK-VQA share.

    spec = VqaSplit("v2_OpenEnded_mscoco_val2014_questions.json", "v2_mscoco_val2014_annotations.json",
                    images="val2014", parquet="validation")
    samples, skipped = load_vqa("vqav2", "VQAv2", "/data/vqav2", spec, layout="auto", on_error="raise")

Official layout: the questions and annotations files in root, images in {images}/ (or
images/{images}/, or images/). Parquet mirror: data/{parquet}-*.parquet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from layerprobe.data._io import Collector, Layouts, Record, benchmark_root, find_dir, json_records, locate
from layerprobe.data._parquet import parquet_records
from layerprobe.data.sample import Sample

# Annotation fields kept in Sample.extra (per-type accuracy breakdowns need them).
EXTRA_KEYS = ("answer_type", "question_type", "multiple_choice_answer")


@dataclass(frozen=True)
class VqaSplit:
    questions: str                # official questions file, e.g. v2_OpenEnded_mscoco_val2014_questions.json
    annotations: str | None       # None for test splits: no answers, scored on the server
    images: str                   # COCO image folder and file prefix: val2014 -> val2014/COCO_val2014_*.jpg
    parquet: str                  # split name in the Hugging Face mirror

    @property
    def has_answers(self) -> bool:
        return self.annotations is not None


def load_vqa(name: str, title: str, root, spec: VqaSplit, layout: str, on_error: str,
             foreign: tuple[tuple[str, str], ...] = ()):
    """``name`` as in data=..., ``title`` as the benchmark is written; ``foreign``: columns that
    mark another benchmark's mirror at the same path (column -> that benchmark)."""
    root = benchmark_root(name, root, spec.questions)
    found = locate(Layouts(title, (spec.questions,), "data", spec.parquet), root, layout)
    records = Collector(on_error)
    if found.kind == "official":
        _official(root, spec, records)
    else:
        required = ("question_id", "question", *(("answers",) if spec.has_answers else ()))
        records.run(((rec, image, spec) for rec, image in parquet_records(found.files, required, foreign=foreign)),
                    _sample)
    return records.result


def _sample(question: Record, image, spec: VqaSplit, annotation: Record | None = None) -> Sample:
    qid = question.ident("question_id")
    text = question.text("question")
    annotation = annotation or question  # the parquet mirror keeps both in one row
    answers = annotation.answers("answers", required=spec.has_answers)
    extra = {"image_id": question.get("image_id")}
    extra.update((k, annotation.get(k)) for k in EXTRA_KEYS if annotation.get(k) is not None)
    return Sample(qid, image, text, answers, extra)


def _official(root: Path, spec: VqaSplit, records: Collector) -> None:
    by_id: dict[str, Record] | None = None
    if spec.has_answers:
        keyed = (records.guard(_keyed, rec) for rec in json_records(root / spec.annotations, "annotations"))
        by_id = {rec.sample_id: rec for rec in keyed if rec is not None}
    image_dir = find_dir(root, [spec.images, f"images/{spec.images}", "images"])

    def build(q: Record) -> Sample:
        qid = q.ident("question_id")
        image = image_dir / f"COCO_{spec.images}_{q.integer('image_id'):012d}.jpg"
        annotation = None
        if by_id is not None:
            annotation = by_id.get(qid) or q.fail(f"no entry in {spec.annotations} has this question_id")
        return _sample(q, str(image), spec, annotation)

    records.run(((q,) for q in json_records(root / spec.questions, "questions")), build)


def _keyed(rec: Record) -> Record:
    rec.ident("question_id")  # annotations are joined to questions by it
    return rec
