"""layerprobe-eval end to end on a tiny model and the real-image VQAv2 fixture (all four methods,
table and figures), and the comparison statistics against hand-computed numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from layerprobe.evaluation.compare import compare, flips
from layerprobe.io.results import read_results
from layerprobe.analysis.stats import bootstrap_ci, sign_flip_p

ROOT = Path(__file__).parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "benchmarks" / "vqav2" / "official"


def _eval(*overrides, cwd=ROOT):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "layerprobe.cli.eval", *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_eval_runs_all_four_methods_and_writes_table_and_figures(tmp_path):
    out = _eval("-m", "method=vanilla,contrastive,dola,vicrop", "model=tiny_llava15", "data=vqav2",
                f"data.root={FIXTURE}", "data.limit=4", "data.max_new_tokens=2", "profile=llava15_7b",
                f"eval_dir={tmp_path}", "progress=false", "batch_size=4", "heatmaps=1")
    assert out.returncode == 0, out.stderr[-2000:]
    table = pd.read_csv(tmp_path / "comparison.csv")
    per_bench = table[table["benchmark"] == "vqav2"].set_index("method")
    # the methods that read the profile name it in their labels (another profile is another run);
    # DoLa reads none
    methods = {"contrastive": "contrastive_profile-llava15_7b", "dola": "dola", "vicrop": "vicrop_profile-llava15_7b"}
    assert set(per_bench.index) == {"vanilla", *methods.values()}
    assert (per_bench["n"] == 4).all()
    assert np.isnan(per_bench.loc["vanilla", "delta"])
    for method in methods.values():
        row = per_bench.loc[method]
        assert row["n_paired"] == 4 and row["ci_low"] <= row["delta"] <= row["ci_high"] and 0 < row["p"] <= 1
    rows = [pd.read_json(tmp_path / "vqav2" / m / "results.jsonl", lines=True).iloc[1:]
            for m in ("vanilla", methods["contrastive"])]
    assert rows[1]["pre_layer"].isin([2, 4, 8, 11, 12, 13]).all() and (rows[1]["n_suppressed"] > 0).all()
    assert rows[1]["peak_mem_bytes"].notna().all()
    for name in ("comparison.png", "comparison.pdf", "comparison.md", "flips.csv", "pre_layers.png"):
        assert (tmp_path / name).is_file(), name
    mass = pd.read_csv(tmp_path / "attention_mass.csv")
    assert set(mass["layer"]) == {"post", "review"} and (mass["n"] == 4).all()
    assert {"suppressed", "kept", "suppressed_share_mean", "suppressed_share_mass"} == set(mass["quantity"])
    share = rows[1]["attention_mass"].map(lambda m: m["post"]["suppressed_share_mean"])
    got = mass.set_index(["layer", "quantity"]).loc[("post", "suppressed_share_mean")]
    assert got["mean"] == pytest.approx(share.mean()) and got["median"] == pytest.approx(share.median())
    assert list((tmp_path / "vqav2" / methods["contrastive"]).glob("heatmap_*.png"))
    page = (tmp_path / "report.html").read_text()  # the eval directory's page, written last
    assert all(f"<td>{m}</td>" in page for m in ("vanilla", *methods.values())) and "heatmap" in page
    # a rerun resumes: nothing is recomputed, the table is the same
    again = _eval("method=vanilla", "model=tiny_llava15", "data=vqav2", f"data.root={FIXTURE}", "data.limit=4",
                  "data.max_new_tokens=2", "profile=llava15_7b", f"eval_dir={tmp_path}", "progress=false")
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(pd.read_json(tmp_path / "vqav2" / "vanilla" / "results.jsonl", lines=True)) == 5  # header + 4


def test_contrastive_without_a_profile_is_a_one_line_error(tmp_path):
    out = _eval("method=contrastive", "model=tiny_llava15", "data=vqav2", f"data.root={FIXTURE}", "data.limit=2",
                f"eval_dir={tmp_path}", "progress=false")
    assert out.returncode == 2
    assert "needs a layer profile" in out.stderr and "Traceback" not in out.stderr


def _table(scores: dict[str, list[float]], bench="b") -> pd.DataFrame:
    rows = []
    for method, values in scores.items():
        for i, v in enumerate(values):
            rows.append({"benchmark": bench, "sample_id": str(i), "condition": method, "layer": None,
                         "prediction": f"{method}{v}", "score": v, "skipped": None, "prefill_s": 0.1,
                         "total_s": 0.4 if method == "vanilla" else 0.5, "n_tokens": 1, "batch_size": 2,
                         "peak_mem_bytes": 100.0 if method == "vanilla" else 103.0})
    return pd.DataFrame(rows)


def test_comparison_numbers_match_direct_computation():
    base = [1, 0, 0, 1, 0, 1, 0, 0, 1, 0]
    other = [1, 1, 1, 1, 0, 0, 1, 0, 1, 1]
    table = pd.concat([_table({"vanilla": base, "contrastive": other}),
                       _table({"vanilla": [1, 1], "contrastive": [1, 0]}, bench="c")])
    comp = compare(table).set_index(["benchmark", "method"])
    row = comp.loc[("b", "contrastive")]
    diff = np.array(other) - np.array(base)
    assert row["delta"] == pytest.approx(0.3)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(bootstrap_ci(diff, seed=0))
    assert row["p"] == pytest.approx(sign_flip_p(diff, seed=0))
    assert row["latency_s"] == pytest.approx(0.25) and row["latency_ratio"] == pytest.approx(1.25)
    assert row["peak_mem_ratio"] == pytest.approx(1.03)
    avg = comp.loc[("average", "contrastive")]
    assert avg["accuracy"] == pytest.approx((0.7 + 0.5) / 2) and avg["delta"] == pytest.approx((0.3 - 0.5) / 2)
    f = flips(table).set_index("benchmark")
    assert (f.loc["b", "fixed"], f.loc["b", "broken"], f.loc["b", "unchanged"]) == (4, 1, 5)
    assert (f.loc["c", "fixed"], f.loc["c", "broken"]) == (0, 1)


def test_average_row_ci_and_p_follow_a_stratified_reference():
    """The headline row: the mean of per-benchmark deltas, its CI from resampling samples within
    each benchmark, its p from flipping signs; checked against index resampling and against the
    exact sign-flip distribution (all 2**16 sign patterns)."""
    import itertools

    b_base, b_other = [0, 0, 1, 0, 1, 0, 0, 1, 0, 0], [1, 1, 1, 0, 1, 1, 0, 1, 1, 0]
    c_base, c_other = [1, 1, 0, 1, 1, 0], [1, 0, 0, 1, 1, 1]
    table = pd.concat([_table({"vanilla": b_base, "dola": b_other}),
                       _table({"vanilla": c_base, "dola": c_other}, bench="c")])
    avg = compare(table).set_index(["benchmark", "method"]).loc[("average", "dola")]
    d_b, d_c = np.subtract(b_other, b_base), np.subtract(c_other, c_base)
    assert avg["delta"] == pytest.approx((d_b.mean() + d_c.mean()) / 2)
    rng = np.random.default_rng(7)
    means = (d_b[rng.integers(0, 10, (40000, 10))].mean(1) + d_c[rng.integers(0, 6, (40000, 6))].mean(1)) / 2
    low, high = np.quantile(means, [0.025, 0.975])
    assert avg["ci_low"] == pytest.approx(low, abs=0.03) and avg["ci_high"] == pytest.approx(high, abs=0.03)
    weighted = np.concatenate([d_b / 20, d_c / 12])
    stats = np.array([abs(np.dot(signs, weighted)) for signs in itertools.product((1, -1), repeat=16)])
    exact = (stats >= abs(weighted.sum()) - 1e-12).mean()
    assert avg["p"] == pytest.approx(exact, abs=0.01)
    assert 0 < avg["p"] < 1 and avg["ci_low"] < avg["delta"] < avg["ci_high"]


def test_skipped_and_unpaired_samples_are_left_out():
    table = _table({"vanilla": [1, 0, 1], "dola": [1, 1]})
    table.loc[table.index[0], "skipped"] = "bad image"
    comp = compare(table).set_index(["benchmark", "method"])
    assert comp.loc[("b", "vanilla"), "n"] == 2 and comp.loc[("b", "dola"), "n_paired"] == 1


def test_cpu_peak_memory_counts_live_tensors_once():
    import torch

    from layerprobe.evaluation.peak_memory import peak_memory

    with peak_memory("cpu") as mem:
        a = torch.ones(1000, 1000)          # 4 MB
        b = a.view(-1)                      # a view: no new storage
        a.mul_(2)                           # in place: no new storage
        del a, b
        c = torch.zeros(500, 1000)          # 2 MB, after the 4 MB were freed
        del c
    assert mem.extra_bytes == 4_000_000
    model = torch.nn.Linear(10, 10)
    with peak_memory("cpu", model) as mem:
        model(torch.ones(1, 10))
    assert mem.peak_bytes == mem.extra_bytes + 110 * 4


def test_figures_draw_from_plain_records(tmp_path):
    from PIL import Image

    from layerprobe.plots.methods import attention_heatmap, comparison_figure, flips_gallery, plot_pre_layers
    from layerprobe.plots.save import save_figure
    import matplotlib.pyplot as plt

    image = Image.new("RGB", (80, 60), (200, 30, 30))
    maps = {"pre": list(np.linspace(0, 1, 16)), "post": list(np.linspace(1, 0, 16)),
            "contrast": list(np.abs(np.linspace(-1, 1, 16))), "suppressed": [i < 3 for i in range(16)]}
    fig = attention_heatmap(image, maps, side=4, region=(10, 0, 60, 60), pre_layer=2, post_layer=28, question="what?")
    assert len(fig.axes[3].collections) == 1  # the suppressed tokens' markers
    assert len(fig.axes[3].collections[0].get_offsets()) == 3
    save_figure(fig, tmp_path / "heatmap")
    examples = [{"image": image, "question": "what color?", "answers": ["red"], "vanilla": "blue",
                 "method": "red", "method_name": "contrastive", "kind": kind} for kind in ("fixed", "broken")]
    save_figure(flips_gallery(examples, title="gallery"), tmp_path / "gallery")
    table = pd.concat([_table({"vanilla": [1, 0], "contrastive": [1, 1]})])
    save_figure(comparison_figure(compare(table)), tmp_path / "comparison")
    fig, ax = plt.subplots()
    rows = pd.DataFrame({"benchmark": ["b"] * 3, "condition": ["contrastive"] * 3, "pre_layer": [2, 2, 8]})
    plot_pre_layers(rows, ax)
    assert sorted(int(t.get_text()) for t in ax.get_xticklabels()) == [2, 8]
    save_figure(fig, tmp_path / "pre_layers")
    assert len(list(tmp_path.glob("*.png"))) == 4 and len(list(tmp_path.glob("*.pdf"))) == 4


ORGANISM = pytest.mark.skipif(not (ROOT / "layerprobe" / "organism" / "weights" / "config.json").is_file(),
                              reason="the organism's weights are not shipped in this checkout")
DEFAULT_EVAL_DIR = Path("runs") / "eval" / "organism"


def _finite_comparison(eval_dir: Path) -> pd.Series:
    """The contrastive row of a default run's comparison, every statistic of it finite."""
    table = pd.read_csv(eval_dir / "comparison.csv").set_index(["benchmark", "method"])
    assert {("organism", "vanilla"), ("organism", "contrastive"), ("average", "contrastive")} <= set(table.index)
    row = table.loc[("organism", "contrastive")]
    for col in ("delta", "ci_low", "ci_high", "p", "latency_ratio", "peak_mem_ratio"):
        assert np.isfinite(row[col]), (col, row[col])
    assert row["ci_low"] <= row["delta"] <= row["ci_high"] and 0 < row["p"] <= 1
    assert row["n_paired"] == table.loc[("organism", "vanilla"), "n"] == row["n"]
    assert np.isfinite(table.loc[("average", "contrastive"), ["delta", "ci_low", "ci_high", "p"]].astype(float)).all()
    return row


@ORGANISM
def test_eval_defaults_run_vanilla_first_and_compare_on_the_organism(tmp_path):
    """From an empty folder, the default command (here on 32 samples) runs the missing vanilla
    baseline, then contrastive attention with the organism's planted profile, and compares them."""
    out = _eval("data.limit=32", "progress=false", "heatmaps=1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    eval_dir = tmp_path / DEFAULT_EVAL_DIR
    vanilla = read_results(eval_dir / "organism" / "vanilla")
    rows = read_results(eval_dir / "organism" / "contrastive")
    assert len(vanilla) == len(rows) == 32 and set(vanilla["sample_id"]) == set(rows["sample_id"])
    assert rows["pre_layer"].isin([2, 4, 8, 11, 12, 13]).all()
    assert (rows["n_visual"] == 16).all() and (rows["n_suppressed"] == 3).all()  # 20th percentile of 16
    row = _finite_comparison(eval_dir)
    assert row["delta"] == pytest.approx(rows["score"].mean() - vanilla["score"].mean())
    latency = (rows["total_s"] / rows["batch_size"]).mean() / (vanilla["total_s"] / vanilla["batch_size"]).mean()
    assert row["latency_ratio"] == pytest.approx(latency)
    assert pd.read_csv(eval_dir / "comparison.csv").set_index(["benchmark", "method"]).loc[
        ("organism", "vanilla"), "accuracy"] > 0.5  # the organism reads its images
    for name in ("comparison.png", "comparison.pdf"):
        assert (eval_dir / name).is_file()


@ORGANISM
@pytest.mark.slow
def test_eval_with_no_arguments_writes_a_finite_comparison(tmp_path):
    out = _eval(cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    row = _finite_comparison(tmp_path / DEFAULT_EVAL_DIR)
    assert row["n"] == 512


@ORGANISM
def test_percentile_experiment_draws_accuracy_and_latency_curves(tmp_path):
    """One command sweeps the percentile; each point of the curve is the run that used that
    percentile (its suppressed-token count), scored and timed as its own results say."""
    out = _eval("+experiment=contrastive_percentile", "data.limit=8", "progress=false", "heatmaps=0", "timing_samples=4",
                cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    eval_dir = tmp_path / DEFAULT_EVAL_DIR
    assert out.stdout.count("baseline vanilla on organism: all 8 samples already in") == 4  # run once, then found
    curves = pd.read_csv(eval_dir / "curves.csv")
    assert list(curves["value"]) == [5, 10, 20, 30, 50]
    assert set(curves["method"]) == {"contrastive"} and set(curves["option"]) == {"percentile"}
    vanilla = read_results(eval_dir / "organism" / "vanilla")
    seconds = lambda t: (t["total_s"] / t["batch_size"]).mean()  # noqa: E731
    suppressed = []
    for point in curves.itertuples():
        rows = read_results(eval_dir / "organism" / point.label)
        assert point.label == ("contrastive" if point.value == 20 else f"contrastive_percentile-{point.value}")
        assert point.n == len(rows) == 8 and point.accuracy == pytest.approx(rows["score"].mean())
        assert point.acc_low <= point.accuracy <= point.acc_high
        assert point.latency_ratio == pytest.approx(seconds(rows) / seconds(vanilla))
        timing = json.loads((eval_dir / "organism" / point.label / "timing.json").read_text())
        assert point.latency_ratio_paired == pytest.approx(timing["latency_ratio"]) and timing["n_samples"] == 4
        assert point.vanilla_accuracy == pytest.approx(vanilla["score"].mean())
        suppressed.append(rows["n_suppressed"].mean())
    assert suppressed == sorted(suppressed) and suppressed[2] == 3 and suppressed[0] < suppressed[-1]
    for ext in ("png", "pdf"):
        assert (eval_dir / f"curve_contrastive_percentile.{ext}").is_file()


@ORGANISM
def test_a_run_directory_outside_eval_dir_is_refused_up_front(tmp_path):
    for override, key in ((f"hydra.run.dir={tmp_path / 'elsewhere'}", "hydra.run.dir"),
                          (f"run_dir={tmp_path / 'elsewhere'}", "run_dir")):
        out = _eval(override, f"eval_dir={tmp_path / 'eval'}", cwd=tmp_path)
        assert out.returncode == 2, out.stderr[-2000:]
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
        assert f"{key}={tmp_path / 'elsewhere'}" in lines[0] and f"eval_dir={tmp_path / 'eval'}" in lines[0]
    assert not list(tmp_path.rglob("results.jsonl"))  # refused before any work


def test_an_eval_dir_without_results_is_a_one_line_error(tmp_path):
    from layerprobe.errors import DataError
    from layerprobe.evaluation.report import write_tables

    with pytest.raises(DataError, match="no scored results"):
        write_tables(tmp_path)
    skipped = tmp_path / "b" / "vanilla"
    skipped.mkdir(parents=True)
    (skipped / "results.jsonl").write_text(json.dumps({"benchmark": "b", "sample_id": "0", "condition": "vanilla",
                                                      "layer": None, "prediction": None, "score": None,
                                                      "skipped": "bad image"}) + "\n")
    with pytest.raises(DataError, match="no scored results"):
        write_tables(tmp_path)


def test_two_writers_of_one_results_file_take_turns(tmp_path):
    """Parallel eval jobs share the vanilla baseline: the second writer waits for the first and
    then resumes from its rows instead of writing them again."""
    import threading

    from layerprobe.io.results import ResultsWriter, row_key

    path = tmp_path / "vanilla" / "results.jsonl"
    row = {"benchmark": "b", "sample_id": "0", "condition": "vanilla", "layer": None, "score": 1.0}
    first = ResultsWriter(path, {"config_hash": "h"})
    first.open()
    seen = []

    def second():
        with ResultsWriter(path, {"config_hash": "h"}) as writer:
            seen.append(writer.done_keys())
            writer.append_many([row])

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive() and not seen  # waiting for the first writer
    first.append_many([row])
    first.close()
    thread.join(10)
    assert seen == [{row_key(row)}] and len(read_results(path)) == 1


def _run(root: Path, bench: str, label: str, options: dict, scores: list[float], seconds: float) -> None:
    from layerprobe.io.results import ResultsWriter

    rows = [{"benchmark": bench, "sample_id": str(i), "condition": label, "layer": None, "prediction": str(v),
             "score": v, "skipped": None, "prefill_s": seconds / 2, "total_s": seconds, "n_tokens": 1,
             "batch_size": 1, "peak_mem_bytes": 100.0} for i, v in enumerate(scores)]
    with ResultsWriter(root / bench / label / "results.jsonl", {"method": options}) as out:
        out.append_many(rows)


def test_option_curves_join_the_runs_that_differ_in_one_option(tmp_path):
    """A percentile sweep at two scales: one percentile line per scale, one scale line per
    percentile; a method run once has no curve. Points carry their run's numbers exactly."""
    from layerprobe.evaluation.curves import option_curves
    from layerprobe.evaluation.paired_latency import write_paired_latency
    from layerprobe.evaluation.report import write_tables
    from layerprobe.plots.option_curves import option_curve_figure

    base = {"name": "contrastive", "percentile": 20, "scale": 0.5, "target": "attention"}
    runs = {"contrastive": ({}, [1, 1, 0, 1], 0.2), "p5": ({"percentile": 5}, [1, 0, 0, 1], 0.3),
            "s25": ({"scale": 0.25}, [1, 1, 1, 1], 0.25), "p5_s25": ({"percentile": 5, "scale": 0.25}, [0, 0, 0, 1], 0.4)}
    _run(tmp_path, "b", "vanilla", {"name": "vanilla"}, [1, 0, 0, 1], 0.2)
    _run(tmp_path, "b", "dola", {"name": "dola", "alpha": 0.1}, [1, 1, 0, 1], 0.2)
    for label, (changed, scores, seconds) in runs.items():
        _run(tmp_path, "b", label, {**base, **changed}, scores, seconds)
    write_paired_latency(tmp_path / "b" / "p5", {"latency_ratio": 1.25})
    comparison, table = write_tables(tmp_path)
    curves = option_curves(table, comparison)
    assert set(curves["method"]) == {"contrastive"} and set(curves["option"]) == {"percentile", "scale"}
    pct = curves[curves["option"] == "percentile"]
    assert list(zip(pct["line"], pct["value"], pct["label"])) == [
        ("b, scale=0.25", 5, "p5_s25"), ("b, scale=0.25", 20, "s25"), ("b, scale=0.5", 5, "p5"),
        ("b, scale=0.5", 20, "contrastive")]
    point = pct.set_index("label").loc["p5"]
    assert point["accuracy"] == 0.5 and point["vanilla_accuracy"] == 0.5 and point["latency_ratio"] == pytest.approx(1.5)
    assert (point["acc_low"], point["acc_high"]) == pytest.approx(bootstrap_ci([1, 0, 0, 1], seed=0))
    assert point["delta"] == 0 and point["n"] == 4
    assert point["latency_ratio_paired"] == 1.25 and pct["latency_ratio_paired"].isna().sum() == 3
    scale = curves[curves["option"] == "scale"]
    assert list(zip(scale["line"], scale["value"])) == [("b, percentile=20", 0.25), ("b, percentile=20", 0.5),
                                                        ("b, percentile=5", 0.25), ("b, percentile=5", 0.5)]
    on_disk = pd.read_csv(tmp_path / "curves.csv")
    assert len(on_disk) == 8 and (tmp_path / "curve_contrastive_percentile.pdf").is_file()
    fig = option_curve_figure(pct)
    assert [line.get_label() for line in fig.axes[1].get_lines()] == ["b, scale=0.25", "b, scale=0.5", "vanilla"]
    assert list(fig.axes[1].get_lines()[1].get_ydata()) == pytest.approx([1.5, 1.0])


def test_default_labels_name_the_options_off_their_defaults():
    from omegaconf import OmegaConf

    from layerprobe.cli.eval import method_label
    from layerprobe.io.paths import CONF_DIR

    def label(name, **changed):
        cfg = OmegaConf.load(CONF_DIR / "method" / f"{name}.yaml")
        return method_label(OmegaConf.merge(cfg, changed))

    assert label("contrastive") == "contrastive" and label("contrastive", percentile=20) == "contrastive"
    assert label("contrastive", percentile=5) == "contrastive_percentile-5"
    assert label("contrastive", scale=0.25, target="values") == "contrastive_scale-0.25_target-values"
    assert label("dola", layers=[2, "embeddings"]) == "dola_layers-2,embeddings"
    assert label("vicrop", layer=None, generic_prompt="Describe it / briefly.") == \
        "vicrop_layer-null_generic_prompt-Describe_it_briefly."


def test_paired_latency_alternates_method_and_vanilla_and_takes_medians():
    """Fake methods report fixed batch times (one slow outlier each): the order of calls is
    warm-up, then method, vanilla, vanilla, method per repeat; the ratio is of the medians."""
    from types import SimpleNamespace

    from layerprobe.evaluation.paired_latency import paired_latency

    calls = []

    class Fake:
        def __init__(self, name, seconds):
            self.name, self.seconds = name, list(seconds)

        def keep_maps_for(self, n):
            calls.append((self.name, "maps", n))

        def answer_batch(self, loaded, samples, images, texts, max_new_tokens):
            calls.append((self.name, len(samples)))
            total = self.seconds.pop(0)
            return [{"total_s": total, "prefill_s": total / 2} for _ in samples]

    class Sample:
        def __init__(self, i):
            self.sample_id = i

        def load_image(self):
            if self.sample_id == 1:
                from layerprobe.errors import DataError
                raise DataError("bad image")
            return "image"

    data = SimpleNamespace(samples=[Sample(i) for i in range(6)], prompt=lambda s: "q", max_new_tokens=1)
    # per batch of 4 samples: method 0.8 s (0.2 per sample), vanilla 0.4 s; one 10 s outlier each
    method = Fake("method", [9.9] + [0.8] * 3 + [10.0] + [0.8] * 5)
    vanilla = Fake("vanilla", [9.9] + [0.4] * 4 + [10.0] + [0.4] * 4)
    timing = paired_latency(None, data, method, vanilla, n_samples=4, batch_size=4, repeats=3)
    assert timing["latency_ratio"] == pytest.approx(2.0) and timing["latency_s"] == pytest.approx(0.2)
    assert timing["prefill_ratio"] == pytest.approx(2.0) and timing["n_samples"] == 4  # sample 1 passed over
    assert calls[:3] == [("method", "maps", 0), ("method", 4), ("vanilla", 4)]
    assert [c[0] for c in calls[3:]] == ["method", "vanilla", "vanilla", "method"] * 3
