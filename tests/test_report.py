"""report.html: the numbers a user reads on the page are the run's (planted drops, merged shards,
paired deltas), the page is self-contained (figures embedded, nothing fetched, a CSP that forbids
fetching), data text stays text, and the commands write it. The page in a real browser:
tests/test_report_browser.py."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import yaml

from layerprobe.errors import ConfigError, DataError
from layerprobe.evaluation.compare import collect, compare
from layerprobe.report import write_report
from layerprobe.report.page import CSP
from layerprobe.sweep.report import write_summary
from report_runs import (
    HOSTILE_ANSWER, HOSTILE_ID, Parsed, build_eval, build_shards, build_sweep, image_sizes,
)

ROOT = Path(__file__).resolve().parents[1]
ALLOWED_ATTRIBUTES = {"src", "alt", "href", "id", "class", "lang", "charset", "http-equiv", "content"}


def read(folder: Path, **kwargs) -> tuple[str, Parsed]:
    page = write_report(folder, **kwargs).read_text()
    return page, Parsed(page)


def assert_self_contained(page: str, parsed: Parsed) -> None:
    """Nothing to fetch: images are PNG data URIs, links stay on the page, no script, no
    stylesheet link, and the CSP would refuse anything else."""
    metas = [a for t, a in parsed.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert [m["content"] for m in metas] == [CSP]
    for tag, attrs in parsed.tags:
        assert tag not in ("script", "link", "iframe", "object", "embed", "base"), tag
        assert set(attrs) <= ALLOWED_ATTRIBUTES, (tag, attrs)
        if "src" in attrs:
            assert tag == "img" and attrs["src"].startswith("data:image/png;base64,")
        if "href" in attrs:
            assert attrs["href"].startswith("#s")
    assert "http://" not in page and "https://" not in page
    assert all(w > 0 and h > 0 for w, h in image_sizes(page))


def test_sweep_page_shows_the_planted_drops_discovery_profile_and_command(tmp_path):
    run = build_sweep(tmp_path / "sweep")
    page, parsed = read(run)
    assert_self_contained(page, parsed)
    # the masking table: baseline and the two planted drops, with the summary's own CIs
    summary = pd.read_csv(run / "summary.csv").set_index("layer")
    for layer, accuracy, drop in ((1, "0.5", "0.5"), (3, "0.7", "0.3")):
        row = parsed.rows(("b", "knockout", str(layer)))[0]
        assert row[3:8] == ["40", accuracy, f"{summary.loc[layer, 'ci_low']:.4g}",
                            f"{summary.loc[layer, 'ci_high']:.4g}", drop]
    assert parsed.rows(("b", "baseline", ""))[0][3:5] == ["40", "1"]
    # discovery: exactly the planted layers are significant; the profile exported beside it
    evidence = pd.read_csv(run / "discovery.csv").set_index("layer")
    significant = parsed.table("benchmark", "layer", "part")
    assert [(r[1], r[2], r[4], r[5]) for r in significant] == [("1", "early", "accuracy", "0.5"),
                                                               ("3", "late", "accuracy", "0.3")]
    assert significant[0][8] == f"{evidence.loc[1, 'p']:.4g}"
    profile = [parsed.rows((key,))[0][1] for key in ("fusion_layers", "review_layer", "post_integrated_layer")]
    assert profile == ["1", "3", "2"]
    # the figures are the run's own files, embedded as they are
    for name in ("masking_curves.png", "discovery.png"):
        assert base64.b64encode((run / name).read_bytes()).decode() in page
    identity = dict(row for row in parsed.tables[0] if len(row) == 2)
    assert identity["command"] == "layerprobe-sweep data.limit=40 'layers=[0,1,2,3]'"
    assert identity["what"] == "knockout image->text" and identity["model"].startswith("planted (")


def test_multirun_page_merges_the_shards_into_the_unsharded_numbers(tmp_path):
    single = build_sweep(tmp_path / "single")
    build_shards(tmp_path / "multi")
    page, parsed = read(tmp_path / "multi")
    assert_self_contained(page, parsed)
    assert "2 runs merged" in page and len(image_sizes(page)) == 1
    whole = Parsed(write_report(single).read_text())
    for first in (("b", "baseline", ""), ("b", "knockout", "1"), ("b", "knockout", "3")):
        assert parsed.rows(first)[0] == whole.rows(first)[0][:-1] + [parsed.rows(first)[0][-1]]  # bar latency
    assert "layerprobe-sweep -m data.shard=0,1 data.num_shards=2" in page
    listed = parsed.table("run", "model", "data")
    assert [row[0] for row in listed] == ["planted/b/image_text/shard0of2", "planted/b/image_text/shard1of2"]
    assert [row[5] for row in listed] == [f"layerprobe-sweep -m data.shard={i} data.num_shards=2" for i in (0, 1)]


def test_an_unfinished_shard_is_named_and_each_run_shown_alone(tmp_path):
    build_shards(tmp_path / "multi", unfinished=True)
    page, parsed = read(tmp_path / "multi")
    assert "cannot be merged: benchmark b: knockout at layer 3 has 39 of 40 samples" in page
    assert len(image_sizes(page)) == 2  # drawn from each run's results: neither has its own figure yet
    assert [h for h in parsed.headings if h.startswith("planted/")] == [
        "planted/b/image_text/shard0of2", "planted/b/image_text/shard1of2"]


def test_eval_page_compares_against_vanilla_and_keeps_data_text_as_text(tmp_path):
    eval_dir = build_eval(tmp_path / "eval")
    page, parsed = read(eval_dir)
    assert_self_contained(page, parsed)
    expected = compare(collect(eval_dir)).set_index(["benchmark", "method"]).loc[("b", "contrastive")]
    row = parsed.rows(("b", "contrastive"))[0]
    assert row[2:8] == ["10", "0.6", "0.1", f"{expected['ci_low']:.4g}", f"{expected['ci_high']:.4g}",
                        f"{expected['p']:.4g}"]
    assert row[10:12] == ["1.25", "1.25"]       # latency x vanilla: the runs' own (0.04 / 0.032), side by side
    # the option curve: both percentiles, with vanilla's latency ratio
    assert [r[2] for r in parsed.rows(("contrastive", "percentile"))] == ["5", "20"]
    # the hostile sample id and answer are cells' text, not markup: no script, no extra image
    fixed = parsed.rows(("b", "contrastive", "fixed"))
    assert [r[3] for r in fixed] == [HOSTILE_ID, "q2"] and fixed[0][5] == HOSTILE_ANSWER
    assert [r[3] for r in parsed.rows(("b", "contrastive", "broken"))] == ["q9"]
    images = [a for t, a in parsed.tags if t == "img"]
    assert len(images) == 3  # comparison, percentile curve, one heatmap
    assert images[-1]["alt"] == f"b/contrastive: sample {HOSTILE_ID}"
    assert "<script>" not in page and HOSTILE_ID not in page  # only ever escaped


def test_extra_sections_come_after_the_identity_in_their_order(tmp_path):
    run = build_sweep(tmp_path / "sweep")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    paper = pd.DataFrame({"benchmark": ["vqav2", "average"], "ours": [0.7812, 0.5519], "paper": [78.5, 55.19]})
    page, parsed = read(run, extra=[("Paper table", paper), ("Notes", "| a | <b> |"), ("Figure", fig)])
    assert parsed.headings[:4] == ["Run identity", "Paper table", "Notes", "Figure"]
    assert parsed.rows(("average",)) == [["average", "0.5519", "55.19"]]
    assert "| a | &lt;b&gt; |" in page and len(image_sizes(page)) == 3
    with pytest.raises(ConfigError, match="report section content of type int"):
        write_report(run, extra=[("x", 1)])


def test_a_folder_without_results_is_a_one_line_error(tmp_path):
    with pytest.raises(DataError, match="nothing to report") as err:
        write_report(tmp_path)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="no such folder"):
        write_report(tmp_path / "missing")


def test_a_run_without_its_summary_is_drawn_from_its_results(tmp_path):
    run = build_sweep(tmp_path / "sweep")
    written = (run / "masking_curves.png").read_bytes()
    (run / "masking_curves.png").unlink()
    (run / "summary.csv").unlink()
    page, parsed = read(run)
    assert parsed.rows(("b", "knockout", "1"))[0][4] == "0.5"
    assert base64.b64encode(written).decode() not in page and len(image_sizes(page)) == 2
    write_summary(run)  # the run's own files again: the page embeds them
    assert base64.b64encode((run / "masking_curves.png").read_bytes()).decode() in write_report(run).read_text()


def _cli(module: str, *args: str, rc: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", f"layerprobe.cli.{module}", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == rc, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_sweep_discover_and_plot_write_the_page(tmp_path):
    """A two-shard multirun: each job's page, then the multirun's (Hydra callback), refreshed by
    a discovery over the shards (its profile written into the multirun's folder) and rewritten by
    layerprobe-plot."""
    multi = tmp_path / "multi"
    _cli("sweep", "-m", f"hydra.sweep.dir={multi}", "data.limit=8", "layers=[2,3]", "data.num_shards=2",
         "data.shard=0,1", "timing_samples=0", "progress=false")
    shards = sorted(multi.glob("organism/organism/image_text/shard*of2"))
    assert len(shards) == 2 and all((s / "report.html").is_file() for s in shards)
    job = Parsed((shards[0] / "report.html").read_text())
    identity = dict(row for row in job.tables[0] if len(row) == 2)
    assert identity["command"].startswith("layerprobe-sweep -m ") and "data.shard=0" in identity["command"]
    page = (multi / "report.html").read_text()
    assert "2 runs merged" in page and "layerprobe-sweep -m " in page and "data.shard=0,1" in page
    # 8 samples make no fusion layer: a result (exit 0), recorded in the profile at out=; the evidence
    # stays in the first run, and both folders holding runs show the discovery on their pages
    found = _cli("discover", f"run=[{shards[0]},{shards[1]}]", f"out={multi}/profile.yaml", "review_layer=3")
    assert "fusion_layers: []" in found.stdout
    assert yaml.safe_load((multi / "profile.yaml").read_text())["fusion_layers"] == []
    assert (shards[0] / "discovery.csv").is_file() and not (multi / "discovery.csv").exists()
    assert "Discovery: organism/organism/image_text/shard0of2" in Parsed((multi / "report.html").read_text()).headings
    assert "Discovery" in Parsed((shards[0] / "report.html").read_text()).headings
    (multi / "report.html").unlink()
    out = _cli("plot", f"run={multi}")
    assert (multi / "report.html").is_file() and str(multi / "report.html") in out.stdout
