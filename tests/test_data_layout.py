"""Each benchmark loader reads only the paths its own layouts define below data.root: a folder
that also holds other benchmarks' files is never misread, and nothing is searched recursively."""

import shutil
from pathlib import Path

import pytest

from layerprobe.data import _io, _parquet, gqa, load_benchmark, registry
from layerprobe.errors import DataError
from layerprobe_testing import one_line_error

FIXTURE = Path(__file__).parent / "fixtures" / "benchmarks"
BENCHES = ["vqav2", "gqa", "textvqa", "okvqa", "vizwiz", "docvqa"]
# Where each benchmark's files sit in its parquet mirror, relative to data.root.
PARQUET = {"vqav2": "data/validation-*.parquet", "gqa": "testdev_balanced_instructions/testdev-*.parquet",
           "textvqa": "data/validation-*.parquet", "okvqa": "data/val2014-*.parquet",
           "vizwiz": "data/val-*.parquet", "docvqa": "DocVQA/validation-*.parquet"}
OFFICIAL = {"vqav2": "v2_OpenEnded_mscoco_val2014_questions.json", "gqa": "testdev_balanced_questions.json",
            "textvqa": "TextVQA_0.5.1_val.json", "okvqa": "OpenEnded_mscoco_val2014_questions.json",
            "vizwiz": "Annotations/val.json", "docvqa": "val_v1.0_withQT.json"}


def ids(data):
    return [s.sample_id for s in data.samples]


def fixture_ids(bench):
    return ids(load_benchmark(bench, root=FIXTURE / bench / "official"))


def merge(dst: Path, *sources: Path) -> Path:
    for src in sources:
        shutil.copytree(src, dst, dirs_exist_ok=True)
    return dst


@pytest.fixture
def no_reading(monkeypatch):
    """Fail the test if any JSON or parquet file is opened."""
    def refuse(path, *args, **kwargs):
        raise AssertionError(f"{path} was read")

    for module in (_io, gqa):
        monkeypatch.setattr(module, "read_json", refuse)
    for module in (_parquet, gqa):
        monkeypatch.setattr(module, "read_rows", refuse)


def test_root_holding_other_benchmarks_folders_is_refused_unread(tmp_path, no_reading):
    # data.root for vqav2 is a folder of other benchmarks' folders, e.g. docvqa/parquet/DocVQA/*.parquet.
    for bench in BENCHES:
        if bench != "vqav2":
            shutil.copytree(FIXTURE / bench, tmp_path / bench)
    with pytest.raises(DataError) as err:
        load_benchmark("vqav2", root=tmp_path)
    one_line_error(err, f"{tmp_path}: no VQAv2 files", "v2_OpenEnded_mscoco_val2014_questions.json",
             "data/validation-*.parquet")


@pytest.mark.parametrize("bench", BENCHES)
def test_other_benchmarks_in_subfolders_are_never_read(bench, tmp_path, no_reading):
    for other in BENCHES:
        if other != bench:
            shutil.copytree(FIXTURE / other, tmp_path / other)
    title = registry.BENCHMARKS[bench].TITLE
    for layout, looked_for in (("auto", (OFFICIAL[bench], PARQUET[bench])), ("official", (OFFICIAL[bench],)),
                               ("parquet", (PARQUET[bench],))):
        with pytest.raises(DataError) as err:
            load_benchmark(bench, root=tmp_path, layout=layout)
        one_line_error(err, tmp_path, f"no {title} files", *looked_for)


@pytest.mark.parametrize("bench", BENCHES)
def test_own_files_found_next_to_other_benchmarks(bench, tmp_path):
    for layout in ("official", "parquet"):
        root = merge(tmp_path / layout, FIXTURE / bench / layout)
        for other in BENCHES:
            if other != bench:
                shutil.copytree(FIXTURE / other, root / "others" / other)
        assert ids(load_benchmark(bench, root=root, layout=layout)) == fixture_ids(bench)
        assert ids(load_benchmark(bench, root=root)) == fixture_ids(bench)


def test_official_layouts_of_all_six_share_one_root(tmp_path):
    root = merge(tmp_path, *(FIXTURE / b / "official" for b in BENCHES))
    for bench in BENCHES:
        data = load_benchmark(bench, root=root)
        assert ids(data) == fixture_ids(bench)
        assert all(isinstance(s.image, str) for s in data.samples)


@pytest.mark.parametrize("same_path", ["vqav2", "textvqa"])
def test_parquet_mirrors_share_one_root(tmp_path, same_path):
    # VQAv2 and TextVQA both use data/validation-*.parquet, so only one of them fits in a root.
    benches = [same_path, "gqa", "okvqa", "vizwiz", "docvqa"]
    root = merge(tmp_path, *(FIXTURE / b / "parquet" for b in benches))
    for bench in benches:
        data = load_benchmark(bench, root=root)
        assert ids(data) == fixture_ids(bench)
        assert all(isinstance(s.image, bytes) for s in data.samples)


@pytest.mark.parametrize("bench, other, column", [("vqav2", "textvqa", "ocr_tokens"),
                                                  ("textvqa", "vqav2", "multiple_choice_answer")])
def test_the_other_mirror_at_the_same_path_is_refused(bench, other, column):
    root = FIXTURE / other / "parquet"
    with pytest.raises(DataError) as err:
        load_benchmark(bench, root=root)
    one_line_error(err, root / "data" / "validation-00000-of-00002.parquet", repr(column),
             registry.BENCHMARKS[other].TITLE)


def test_no_recursive_search(tmp_path, no_reading):
    # The benchmark's own files one level below where its layouts put them are not found.
    for bench in BENCHES:
        root = tmp_path / bench
        shutil.copytree(FIXTURE / bench, root / "nested")
        with pytest.raises(DataError) as err:
            load_benchmark(bench, root=root)
        one_line_error(err, root, OFFICIAL[bench], PARQUET[bench])


@pytest.mark.parametrize("bench, folder", [("vqav2", "data"), ("docvqa", "DocVQA"), ("vizwiz", "data")])
def test_root_may_be_the_parquet_folder_itself(bench, folder):
    assert ids(load_benchmark(bench, root=FIXTURE / bench / "parquet" / folder)) == fixture_ids(bench)


def test_official_alternatives(tmp_path):
    # DocVQA's release without question types; VizWiz's annotations without the Annotations/ folder.
    docvqa = merge(tmp_path / "docvqa", FIXTURE / "docvqa" / "official")
    (docvqa / "val_v1.0_withQT.json").rename(docvqa / "val_v1.0.json")
    assert ids(load_benchmark("docvqa", root=docvqa)) == fixture_ids("docvqa")
    vizwiz = merge(tmp_path / "vizwiz", FIXTURE / "vizwiz" / "official")
    (vizwiz / "Annotations" / "val.json").rename(vizwiz / "val.json")
    assert ids(load_benchmark("vizwiz", root=vizwiz)) == fixture_ids("vizwiz")
