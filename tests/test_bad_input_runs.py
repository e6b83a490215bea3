"""The bad-input catalogue, continued: run directories. A rerun resumes only the run that wrote the
results file (the resolved dtype and device, the checkpoint's weights, the data, not only the
config as written), a file layerprobe did not write is never truncated, duplicate sample ids and
empty shards are handled, and a file system without locks is named. Each refusal is one line.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from layerprobe.cli.plot import run_plot
from layerprobe.cli.sweep import sweep
from layerprobe.io.results import read_results
from layerprobe.models.tiny import save_tiny
from bad_input_testing import QUESTIONS, VQAV2, compose_sweep, data, sweep_error, vqav2_copy  # noqa: F401

QUICK = ("data.limit=2", "layers=[0]")


def _header(run: Path) -> tuple[dict, list[str]]:
    lines = (run / "results.jsonl").read_text().splitlines()
    return json.loads(lines[0])["_header"], lines


def _rewrite_header(run: Path, change) -> None:
    header, lines = _header(run)
    change(header)
    (run / "results.jsonl").write_text("\n".join([json.dumps({"_header": header}), *lines[1:]]) + "\n")


@pytest.fixture
def first_run(tmp_path) -> Path:
    run = tmp_path / "run"
    sweep(compose_sweep(run, *data(VQAV2), *QUICK))
    return run


# -- what ran: dtype, device, weights, data -----------------------------------------------------

@pytest.mark.parametrize("field, recorded, message", [
    ("dtype", "bfloat16", "model dtype bfloat16 != float32 now"),
    ("device", "cuda", "device type cuda != cpu now"),
])
def test_resume_on_another_dtype_or_device_is_refused(capsys, first_run, field, recorded, message):
    # a header as a GPU writes it with dtype: null (bfloat16 on cuda), resumed here on the CPU
    _rewrite_header(first_run, lambda h: h["identity"].update({field: recorded}))
    err = sweep_error(capsys, first_run, *data(VQAV2), *QUICK, run_dir=first_run)
    assert f"results.jsonl: was written by another run: {message}; refusing to mix results: give run_dir=" in err
    assert err.endswith("for a new run, or resume_check=false resumes it anyway")


def test_checkpoint_retrained_in_place_is_another_run(capsys, tmp_path):
    ckpt = save_tiny("llava", tmp_path / "ckpt", num_layers=2)
    model = ("model=tiny_llava15", f"model.path={ckpt}")
    run = tmp_path / "run"
    sweep(compose_sweep(run, *data(VQAV2), *QUICK, *model))
    weights = load_file(ckpt / "model.safetensors")
    name = sorted(weights)[-1]
    weights[name] = weights[name] + 0.01            # same names, shapes and sizes: only the values moved
    save_file(weights, ckpt / "model.safetensors", metadata={"format": "pt"})
    err = sweep_error(capsys, tmp_path, *data(VQAV2), *QUICK, *model, run_dir=run)
    assert "was written by another run: checkpoint weights (fingerprint) " in err


def test_data_files_edited_under_the_same_root_are_another_run(capsys, tmp_path, vqav2_copy):
    run = tmp_path / "run"
    sweep(compose_sweep(run, *data(vqav2_copy), *QUICK))
    path = vqav2_copy / QUESTIONS
    path.write_text(path.read_text().replace('"question": "', '"question": "Honestly, '))   # every question
    err = sweep_error(capsys, tmp_path, *data(vqav2_copy), *QUICK, run_dir=run)
    assert "was written by another run: data (fingerprint of the samples and files) " in err


def test_a_run_written_before_identities_were_recorded_gets_a_clear_refusal(capsys, first_run):
    _rewrite_header(first_run, lambda h: h.pop("identity"))
    err = sweep_error(capsys, first_run, *data(VQAV2), *QUICK, run_dir=first_run)
    assert ("results.jsonl: written by a layerprobe that did not record what ran (no identity in its header: "
            "dtype, device, weights, data), so it cannot be checked to be this run: give run_dir=") in err


def test_resume_check_false_resumes_and_records_what_differed(first_run, caplog):
    _rewrite_header(first_run, lambda h: (h["identity"].update(dtype="bfloat16"),
                                          h["versions"].update(transformers="4.0.0")))
    before = len(read_results(first_run))
    with caplog.at_level(logging.WARNING):
        sweep(compose_sweep(first_run, *data(VQAV2), "data.limit=2", "layers=[0]", "resume_check=false"))
    assert "resuming under other versions (transformers 4.0.0 -> " in caplog.text   # warned, not refused
    _, lines = _header(first_run)
    notes = [json.loads(line)["_resume"] for line in lines if line.startswith('{"_resume"')]
    assert len(notes) == 1 and notes[0]["differs"] == ["dtype"]
    assert len(read_results(first_run)) == before          # the note is not a row; nothing was redone


def test_a_results_file_without_header_is_refused_and_kept(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    foreign = '{"benchmark": "mine", "sample_id": "1", "condition": "x", "answer": "kept"}'   # no newline
    (run / "results.jsonl").write_text(foreign)
    err = sweep_error(capsys, tmp_path, *data(VQAV2), *QUICK, run_dir=run)
    assert "results.jsonl: has no layerprobe header line, so it is not a results file this run can resume" in err
    assert (run / "results.jsonl").read_text() == foreign   # not truncated to nothing


# -- samples ----------------------------------------------------------------------------------------

def _duplicate(root: Path) -> str:
    path = root / QUESTIONS
    doc = json.loads(path.read_text())
    doc["questions"][3]["question_id"] = doc["questions"][1]["question_id"]
    path.write_text(json.dumps(doc))
    return str(doc["questions"][1]["question_id"])


def test_duplicate_sample_ids_are_refused_naming_file_and_id(capsys, tmp_path, vqav2_copy):
    qid = _duplicate(vqav2_copy)
    err = sweep_error(capsys, tmp_path, *data(vqav2_copy))
    assert (f"{QUESTIONS}: questions[3] (sample {qid}): duplicate sample id '{qid}', first at {QUESTIONS} "
            "questions[1]; results are keyed by the id, so each sample needs its own") in err


def test_duplicate_sample_ids_with_skip_keep_the_first_and_record_the_later(tmp_path, vqav2_copy):
    qid = _duplicate(vqav2_copy)
    run = tmp_path / "run"
    sweep(compose_sweep(run, *data(vqav2_copy), "layers=[0]", "data.on_error=skip"))
    table = read_results(run)
    answered = table[table["skipped"].isna() & (table["condition"] == "baseline")]
    assert list(answered["sample_id"]).count(qid) == 1       # n counts it once
    skipped = table[table["skipped"].notna()]
    assert set(skipped["sample_id"]) == {f"{QUESTIONS} questions[3]"}
    assert "duplicate sample id" in skipped["skipped"].iloc[0]


# -- empty shards, locks, damaged metadata ----------------------------------------------------------

def test_an_empty_shard_is_a_valid_empty_run(tmp_path, caplog, capsys):
    run = tmp_path / "run"
    shard = ("data.limit=2", "data.num_shards=3", "data.shard=2", "timing_samples=2")   # 2 samples, 3 shards
    run.mkdir()
    (run / "timing.csv").write_text("\n")   # what such a shard used to leave behind
    with caplog.at_level(logging.WARNING):
        sweep(compose_sweep(run, *data(VQAV2), "layers=[0]", *shard))
    assert "no sample to answer in this run" in caplog.text
    assert (run / "summary.csv").read_text().startswith("benchmark,condition,layer,n,")
    assert len(read_results(run)) == 0
    sweep(compose_sweep(run, *data(VQAV2), "layers=[0]", *shard))     # a rerun is fine too
    run_plot({"run": str(run)})
    assert "wrote" in capsys.readouterr().out


def test_a_file_system_without_locks_is_named_with_the_way_out(capsys, tmp_path, monkeypatch):
    from layerprobe.io import results

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(results.fcntl, "flock", no_locks)
    run = tmp_path / "run"
    err = sweep_error(capsys, tmp_path, *data(VQAV2), *QUICK, run_dir=run)
    assert (f"{run}: this file system does not support file locks (flock: No locks available); run one writer "
            "per run directory with file_lock=false, or put the runs on a local disk") in err
    sweep(compose_sweep(run, *data(VQAV2), *QUICK, "file_lock=false"))   # the single-writer way out
    assert len(read_results(run)) == 2 * 2


@pytest.fixture
def organism_copy(tmp_path) -> Path:
    from layerprobe.organism import WEIGHTS_DIR

    copy = tmp_path / "organism"
    shutil.copytree(WEIGHTS_DIR, copy)
    return copy


def test_damaged_organism_metadata_is_one_line(capsys, tmp_path, organism_copy):
    meta = organism_copy / "layerprobe_organism.json"
    meta.write_text(meta.read_text()[:100])
    err = sweep_error(capsys, tmp_path, "model=organism", f"model.path={organism_copy}", "data=organism",
                      "data.limit=1", "layers=[0]")
    assert f"{meta}: not valid JSON at line " in err and "the file is damaged" in err


def test_organism_metadata_rewrite_leaves_the_old_file_when_it_cannot_finish(tmp_path, organism_copy, monkeypatch):
    import os

    from layerprobe.models.loading import load_model
    from layerprobe.organism.train import save

    loaded = load_model("tiny:llava:2", device="cpu")
    meta = organism_copy / "layerprobe_organism.json"
    before = meta.read_text()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save(loaded.model, loaded.processor, {**json.loads(before), "note": "x" * 10_000}, organism_copy)
    assert meta.read_text() == before   # the old metadata, whole: never a half-written file


def test_nonfinite_logits_name_the_condition_or_are_skipped_rows(capsys, tmp_path, monkeypatch):
    """fp16 overflow, simulated: the language model's head returns NaN for every row. Both engines
    stop in one line naming the condition; with on_error=skip every answer becomes a skipped row."""
    from layerprobe.models import loading

    real = loading.load_model

    def overflowing(*args, **kwargs):
        loaded = real(*args, **kwargs)
        loaded.model.get_output_embeddings().weight.data[3] = float("nan")
        return loaded
    monkeypatch.setattr(loading, "load_model", overflowing)
    for engine in ("fast", "naive"):
        err = sweep_error(capsys, tmp_path, *data(VQAV2), *QUICK, f"engine={engine}", run_dir=tmp_path / engine)
        assert ("baseline, sample " in err and "the model's logits held NaN or inf (an overflow: float16?); run in "
                "bfloat16 or float32 (model.dtype=...), or data.on_error=skip") in err
    run = tmp_path / "skip"
    sweep(compose_sweep(run, *data(VQAV2), *QUICK, "data.on_error=skip"))
    table = read_results(run)
    assert len(table) == 4 and table["prediction"].isna().all()
    assert set(table["skipped"]) == {"the model's logits held NaN or inf (an overflow: float16?)"}


def test_nonfinite_rows_are_flagged_per_sample(tiny_models):
    from layerprobe.core.generation import generate_answers
    from layerprobe_testing import make_images

    loaded = tiny_models("llava")
    inputs = loaded.encode(make_images(3), ["what is it ?"] * 3)
    layer = loaded.decoder_layers[1]

    def poison_second_sample(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        hidden[1] = float("inf")
    handle = layer.register_forward_hook(poison_second_sample)
    try:
        answers = generate_answers(loaded, inputs, 2)
    finally:
        handle.remove()
    assert [a.nonfinite for a in answers] == [False, True, False]
    assert answers[1].record()["nonfinite_logits"] is True and "nonfinite_logits" not in answers[0].record()
