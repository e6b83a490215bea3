"""The six benchmark loaders on the real-image fixture (tests/fixtures/benchmarks/), both layouts."""

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from layerprobe.data import load_benchmark, registry
from layerprobe.data._parquet import ParquetImage
from layerprobe.errors import ConfigError, DataError
from layerprobe.data.metrics import score
from layerprobe_testing import one_line_error

FIXTURE = Path(__file__).parent / "fixtures" / "benchmarks"
CONF = Path(__file__).parents[1] / "conf" / "data"
SIZES = {"vqav2": 8, "gqa": 7, "textvqa": 4, "okvqa": 5, "vizwiz": 5, "docvqa": 4}
BENCHES = list(SIZES)


def ids(samples):
    return [s.sample_id for s in samples]


def root(bench, layout):
    return FIXTURE / bench / layout


def pixels(sample):
    return np.asarray(sample.load_image())


@pytest.fixture
def copy_of(tmp_path):
    def copy(bench, layout):
        dst = tmp_path / bench / layout
        shutil.copytree(root(bench, layout), dst)
        return dst
    return copy


def rewrite_parquet(path, edit):
    rows = pq.read_table(path).to_pylist()
    edit(rows)
    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.mark.parametrize("bench", BENCHES)
def test_both_layouts_load_identical_samples(bench):
    official = load_benchmark(bench, root=root(bench, "official"), layout="official")
    mirror = load_benchmark(bench, root=root(bench, "parquet"), layout="parquet")
    assert len(official.samples) == len(mirror.samples) == SIZES[bench]
    assert official.skipped == mirror.skipped == []
    for a, b in zip(official.samples, mirror.samples):
        assert (a.sample_id, a.question, a.answers, a.extra) == (b.sample_id, b.question, b.answers, b.extra)
        assert isinstance(a.image, str) and isinstance(b.image, bytes)
        pa_, pb = pixels(a), pixels(b)
        assert pa_.shape == pb.shape and pa_.shape[2] == 3 and np.array_equal(pa_, pb)
    assert len({s.sample_id for s in official.samples}) == SIZES[bench]


@pytest.mark.parametrize("bench", BENCHES)
def test_auto_layout_detects_each_layout(bench):
    for layout in ("official", "parquet"):
        data = load_benchmark(bench, root=root(bench, layout))
        assert isinstance(data.samples[0].image, str if layout == "official" else bytes)


@pytest.mark.parametrize("bench", BENCHES)
def test_loading_decodes_no_image(bench, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an image was decoded while loading")

    monkeypatch.setattr(Image, "open", refuse)
    for layout in ("official", "parquet"):
        data = load_benchmark(bench, root=root(bench, layout))
        assert all(isinstance(s.image, (str, bytes)) for s in data.samples)


def test_parquet_loader_returns_references_until_selected():
    samples, _ = registry.BENCHMARKS["vqav2"].load(root("vqav2", "parquet"))
    assert all(isinstance(s.image, ParquetImage) for s in samples)
    # The second shard file's first row: references count rows per file.
    assert samples[4].image.row == 0 and samples[4].image.file.endswith("validation-00001-of-00002.parquet")
    official = load_benchmark("vqav2", root=root("vqav2", "official")).samples
    assert np.array_equal(pixels(samples[6]), pixels(official[6]))


@pytest.mark.parametrize("bench", BENCHES)
def test_fixture_answers_score_under_the_official_metric(bench):
    data = load_benchmark(bench, root=root(bench, "official"))
    for sample in data.samples:
        consensus = Counter(sample.answers).most_common(1)[0][0]
        assert score(data.metric, consensus, sample.answers) >= 0.9, sample.sample_id
        assert score(data.metric, "zebra crossing", sample.answers) == 0.0


def test_vqav2_record_content():
    data = load_benchmark("vqav2", root=root("vqav2", "official"))
    first = data.samples[0]
    assert first.sample_id == "1001000" and first.question == "What color is her suit?"
    assert first.answers.count("orange") == 7 and len(first.answers) == 10
    assert first.image.endswith("val2014/COCO_val2014_000000001001.jpg")
    assert first.extra == {"image_id": 1001, "answer_type": "other", "question_type": "what color is",
                           "multiple_choice_answer": "orange"}
    assert pixels(data.samples[-1]).shape == (160, 160, 3)  # the grayscale photo comes back RGB


def test_subsampling_is_seeded_and_keeps_file_order():
    everything = [s.sample_id for s in load_benchmark("vqav2", root=root("vqav2", "official")).samples]
    pick = lambda **kw: [s.sample_id for s in load_benchmark("vqav2", root=root("vqav2", "official"), **kw).samples]
    subset = pick(limit=4, seed=3)
    assert len(subset) == 4 and subset == pick(limit=4, seed=3)
    assert [everything.index(i) for i in subset] == sorted(everything.index(i) for i in subset)
    assert {tuple(pick(limit=4, seed=s)) for s in range(6)} != {tuple(subset)}
    assert pick(limit=100) == everything
    # The parquet mirror draws the same subset for the same seed.
    mirror = [s.sample_id for s in load_benchmark("vqav2", root=root("vqav2", "parquet"), limit=4, seed=3).samples]
    assert mirror == subset


def test_shards_partition_the_subset():
    base = dict(name="vqav2", root=root("vqav2", "parquet"), limit=7, seed=1)
    subset = [s.sample_id for s in load_benchmark(**base).samples]
    shards = [[s.sample_id for s in load_benchmark(**base, num_shards=3, shard=k).samples] for k in range(3)]
    assert [len(s) for s in shards] == [3, 2, 2]
    assert shards[1] == subset[1::3]
    assert sorted(sum(shards, [])) == sorted(subset)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(limit=0), "data.limit"), (dict(limit=2.5), "data.limit"), (dict(num_shards=0), "data.num_shards"),
    (dict(num_shards=2, shard=2), "data.shard"), (dict(layout="hf"), "data.layout"),
    (dict(on_error="ignore"), "data.on_error"), (dict(split="minival"), "known: val, testdev, test"),
    (dict(prompt={"ocr_tokens": True}), "data.prompt.ocr_tokens"),
    (dict(metric="bleu"), "data.metric='bleu'"), (dict(metric="bleu"), "known: vqa_accuracy, gqa_accuracy, anls"),
    (dict(max_new_tokens=0), "data.max_new_tokens=0"), (dict(max_new_tokens=2.5), "data.max_new_tokens=2.5"),
    (dict(max_new_tokens="16"), "data.max_new_tokens='16'"), (dict(max_new_tokens=True), "data.max_new_tokens"),
])
def test_bad_options_are_config_errors(kwargs, fragment):
    with pytest.raises(ConfigError) as err:
        load_benchmark("vqav2", root=root("vqav2", "official"), **kwargs)
    one_line_error(err, fragment)


def test_metric_and_max_new_tokens_override_the_benchmark_defaults():
    default = load_benchmark("docvqa", root=root("docvqa", "parquet"))
    assert (default.metric, default.max_new_tokens) == ("anls", 32)
    custom = load_benchmark("docvqa", root=root("docvqa", "parquet"), metric="exact_match", max_new_tokens=5)
    assert (custom.metric, custom.max_new_tokens) == ("exact_match", 5)
    assert ids(custom.samples) == ids(default.samples)


def test_load_data_from_passes_the_config_through():
    from layerprobe.cli.common import load_data_from

    cfg = yaml.safe_load((CONF / "gqa.yaml").read_text())
    cfg.update(root=str(root("gqa", "official")), metric="vqa_accuracy", max_new_tokens=3)
    data = load_data_from(cfg)
    assert (data.metric, data.max_new_tokens, len(data.samples)) == ("vqa_accuracy", 3, SIZES["gqa"])
    cfg.update(metric=None, max_new_tokens=None)  # null: the benchmark's own
    assert (load_data_from(cfg).metric, load_data_from(cfg).max_new_tokens) == ("gqa_accuracy", 16)
    for key, value in (("metric", "accuracy"), ("max_new_tokens", -1)):
        with pytest.raises(ConfigError) as err:
            load_data_from({**cfg, key: value})
        one_line_error(err, f"data.{key}={value!r}")


def test_unknown_benchmark_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        load_benchmark("vqa3")
    one_line_error(err, "vqa3", "known: ", *BENCHES)


def test_root_missing_or_empty_names_the_expected_file(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # the tests run offline
    with pytest.raises(DataError) as err:
        load_benchmark("docvqa", root=None)
    one_line_error(err, "docvqa: mirror lmms-lab-encoder/DocVQA (DocVQA/validation-*.parquet) is not in the Hugging "
                   "Face cache", "HF_HUB_OFFLINE=1", "or set data.root=")
    with pytest.raises(DataError) as err:
        load_benchmark("gqa", root=tmp_path / "nowhere")
    one_line_error(err, tmp_path / "nowhere", "testdev_balanced_questions.json")
    with pytest.raises(DataError) as err:
        load_benchmark("textvqa", root=tmp_path)
    one_line_error(err, tmp_path, "TextVQA_0.5.1_val.json", "validation-*.parquet")
    with pytest.raises(DataError) as err:
        load_benchmark("okvqa", root=root("okvqa", "parquet"), layout="official")
    one_line_error(err, root("okvqa", "parquet"), "no OK-VQA files in the official layout",
                   "OpenEnded_mscoco_val2014_questions.json")
    with pytest.raises(DataError) as err:
        load_benchmark("vizwiz", root=root("vizwiz", "official"), layout="parquet")
    one_line_error(err, "no VizWiz files in the parquet layout", "data/val-*.parquet")


def test_malformed_json_names_the_file(copy_of):
    path = copy_of("docvqa", "official") / "val_v1.0_withQT.json"
    path.write_text(path.read_text()[:200])
    for on_error in ("raise", "skip"):  # a broken file has no good records to keep
        with pytest.raises(DataError) as err:
            load_benchmark("docvqa", root=path.parent, on_error=on_error)
        one_line_error(err, path, "malformed JSON", "line")


def test_missing_key_names_file_and_sample(copy_of):
    rootdir = copy_of("vqav2", "official")
    path = rootdir / "v2_OpenEnded_mscoco_val2014_questions.json"
    data = json.loads(path.read_text())
    del data["questions"][2]["question"]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as err:
        load_benchmark("vqav2", root=rootdir)
    one_line_error(err, path, "questions[2]", "sample 1002002", "missing key 'question'")
    data = load_benchmark("vqav2", root=rootdir, on_error="skip")
    assert len(data.samples) == 7 and "1002002" not in {s.sample_id for s in data.samples}
    assert data.skipped == [("1002002", f"{path}: questions[2] (sample 1002002): missing key 'question'")]


def test_question_without_annotation(copy_of):
    rootdir = copy_of("okvqa", "official")
    path = rootdir / "mscoco_val2014_annotations.json"
    data = json.loads(path.read_text())
    del data["annotations"][1]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as err:
        load_benchmark("okvqa", root=rootdir)
    one_line_error(err, "sample 1005001", "mscoco_val2014_annotations.json has this question_id")


@pytest.mark.parametrize("bad", ["cat", [1, 2], [{"answer_confidence": "yes"}]])
def test_answers_of_the_wrong_type(copy_of, bad):
    rootdir = copy_of("textvqa", "official")
    path = rootdir / "TextVQA_0.5.1_val.json"
    data = json.loads(path.read_text())
    data["data"][3]["answers"] = bad
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as err:
        load_benchmark("textvqa", root=rootdir)
    one_line_error(err, path, "data[3]", "sample 34605", "answers")
    data = load_benchmark("textvqa", root=rootdir, on_error="skip")
    assert [s.sample_id for s in data.samples] == ["34602", "34603", "34604"]
    assert [sid for sid, _ in data.skipped] == ["34605"]


def test_vizwiz_answer_objects_without_answer(copy_of):
    rootdir = copy_of("vizwiz", "official")
    path = rootdir / "Annotations" / "val.json"
    records = json.loads(path.read_text())
    records[0]["answers"][4] = {"answer_confidence": "yes"}
    records[2] = "not a record"
    path.write_text(json.dumps(records))
    data = load_benchmark("vizwiz", root=rootdir, on_error="skip")
    assert len(data.samples) == 3
    (first, reason0), (second, reason2) = data.skipped
    assert first == "VizWiz_val_00000000" and "answers[4]" in reason0 and str(path) in reason0
    assert second == "[2]" and "expected an object" in reason2


def test_gqa_official_record_errors(copy_of):
    rootdir = copy_of("gqa", "official")
    path = rootdir / "testdev_balanced_questions.json"
    data = json.loads(path.read_text())
    data["20100004"]["answer"] = 7
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as err:
        load_benchmark("gqa", root=rootdir)
    one_line_error(err, path, "sample 20100004", "answer must be a string")


def test_parquet_record_errors(copy_of):
    rootdir = copy_of("vizwiz", "parquet")
    path = rootdir / "data" / "val-00000-of-00001.parquet"
    rewrite_parquet(path, lambda rows: rows[1].update(question=None))
    with pytest.raises(DataError) as err:
        load_benchmark("vizwiz", root=rootdir)
    one_line_error(err, path, "row 1", "sample VizWiz_val_00000001", "question is null")
    data = load_benchmark("vizwiz", root=rootdir, on_error="skip")
    assert len(data.samples) == 4 and data.skipped[0][0] == "VizWiz_val_00000001"


def test_parquet_missing_column(copy_of):
    rootdir = copy_of("docvqa", "parquet")
    path = rootdir / "DocVQA" / "validation-00000-of-00001.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["question"]), path)
    with pytest.raises(DataError) as err:
        load_benchmark("docvqa", root=rootdir, on_error="skip")
    one_line_error(err, path, "missing column 'question'")


def test_gqa_parquet_image_missing_from_the_images_config(copy_of):
    rootdir = copy_of("gqa", "parquet")
    path = rootdir / "testdev_balanced_images" / "testdev-00000-of-00001.parquet"
    rewrite_parquet(path, lambda rows: rows.pop(0))  # n100001, the astronaut
    with pytest.raises(DataError) as err:
        load_benchmark("gqa", root=rootdir)
    one_line_error(err, "sample 20100004", "imageId n100001")


def test_missing_and_corrupt_image_files_fail_at_image_load(copy_of):
    rootdir = copy_of("vqav2", "official")
    (rootdir / "val2014" / "COCO_val2014_000000001002.jpg").unlink()
    (rootdir / "val2014" / "COCO_val2014_000000001003.jpg").write_bytes(b"not a jpeg")
    data = load_benchmark("vqav2", root=rootdir)          # lazy: loading still succeeds
    by_id = {s.sample_id: s for s in data.samples}
    with pytest.raises(DataError) as err:
        by_id["1002002"].load_image()
    one_line_error(err, "COCO_val2014_000000001002.jpg", "not found", "1002002")
    with pytest.raises(DataError) as err:
        by_id["1003003"].load_image()
    one_line_error(err, "COCO_val2014_000000001003.jpg", "cannot decode", "1003003")


def test_parquet_image_without_bytes(copy_of):
    rootdir = copy_of("okvqa", "parquet")
    path = rootdir / "data" / "val2014-00000-of-00001.parquet"
    rewrite_parquet(path, lambda rows: rows[2].update(image={"bytes": None, "path": "x.jpg"}))
    with pytest.raises(DataError) as err:
        load_benchmark("okvqa", root=rootdir)
    one_line_error(err, path, "row 2", "sample 1002002", "no image bytes")
    data = load_benchmark("okvqa", root=rootdir, on_error="skip")
    assert len(data.samples) == 4 and data.skipped[0][0] == "1002002"


def test_prompts():
    vqav2 = load_benchmark("vqav2", root=root("vqav2", "official"))
    assert vqav2.prompt(vqav2.samples[0]) == "What color is her suit?\nAnswer the question using a single word or phrase."
    unanswerable = ("\nWhen the provided information is insufficient, respond with 'Unanswerable'."
                    "\nAnswer the question using a single word or phrase.")
    for bench in ("vizwiz", "okvqa"):
        data = load_benchmark(bench, root=root(bench, "parquet"))
        assert data.prompt(data.samples[0]) == data.samples[0].question + unanswerable
    plain = load_benchmark("textvqa", root=root("textvqa", "official"))
    assert "OCR" not in plain.prompt(plain.samples[2])
    for layout in ("official", "parquet"):
        ocr = load_benchmark("textvqa", root=root("textvqa", layout), prompt={"ocr_tokens": True})
        assert ocr.prompt(ocr.samples[2]) == ("what name is on the tag?\nReference OCR token: COMO, HOPPER"
                                              "\nAnswer the question using a single word or phrase.")
    docvqa = load_benchmark("docvqa", root=root("docvqa", "parquet"))
    assert (docvqa.metric, docvqa.max_new_tokens, vqav2.max_new_tokens) == ("anls", 32, 16)


def test_ocr_prompt_without_ocr_tokens_says_where_to_put_them(copy_of):
    rootdir = copy_of("textvqa", "official")
    (rootdir / "TextVQA_Rosetta_OCR_v0.2_val.json").unlink()
    data = load_benchmark("textvqa", root=rootdir, prompt={"ocr_tokens": True})
    with pytest.raises(ConfigError) as err:
        data.prompt(data.samples[0])
    one_line_error(err, "34602", "TextVQA_Rosetta_OCR_v0.2_<split>.json")


@pytest.mark.parametrize("bench", BENCHES)
def test_config_files_match_load_benchmark(bench):
    cfg = yaml.safe_load((CONF / f"{bench}.yaml").read_text())
    module = registry.BENCHMARKS[bench]
    assert cfg["root"] is None and cfg["repo"] is None and cfg["download"] is True and cfg["name"] == bench
    assert (cfg["metric"], cfg["max_new_tokens"]) == (module.METRIC, module.MAX_NEW_TOKENS)
    assert cfg["split"] == module.DEFAULT_SPLIT
    cfg["root"] = str(root(bench, "parquet"))
    data = load_benchmark(**cfg)
    assert (len(data.samples), data.metric, data.max_new_tokens) == (SIZES[bench], module.METRIC, module.MAX_NEW_TOKENS)


def test_register_benchmark(monkeypatch):
    monkeypatch.setattr(registry, "BENCHMARKS", dict(registry.BENCHMARKS))
    from layerprobe.data import Sample

    class Toy:
        NAME, METRIC, MAX_NEW_TOKENS, DEFAULT_SPLIT = "toy", "exact_match", 4, "test"

        @staticmethod
        def load(root, split, layout, on_error):
            return [Sample(str(i), Image.new("RGB", (4, 4)), f"q{i}?", ["a"]) for i in range(5)], [("9", "bad")]

        @staticmethod
        def build_prompt(sample, shout=False):
            return sample.question.upper() if shout else sample.question

    registry.register_benchmark(Toy)
    data = load_benchmark("toy", limit=4, num_shards=2, shard=0, prompt={"shout": True})
    assert data.prompt(data.samples[0]) == data.samples[0].question.upper()
    assert data.skipped == [("9", "bad")] and len(data.samples) == 2
    with pytest.raises(ConfigError) as err:
        registry.register_benchmark(object())
    one_line_error(err, "NAME", "build_prompt")
