"""report.html in a real browser: headless Chromium opens the page of a folder holding a sweep, its
discovery, two shards and an eval directory, and what it renders is checked: every image decoded
at its PNG's size, the tables' numbers, no request but the page itself, data text shown as text.
A tampered copy of the page (one image from a server) must fail the same checks, so they can fail.
Skipped only where Chromium is neither installed nor installable (the reason is given); .ci/run
installs it and fails on a skip."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from layerprobe.report import write_report
from layerprobe.report.page import CSP
from chromium import Browser, chromium_or_reason
from report_runs import HOSTILE_ANSWER, HOSTILE_ID, build_all, image_sizes

IMAGES = "[...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
TABLES = "[...document.querySelectorAll('table')].map(t => [...t.rows].map(r => [...r.cells].map(c => c.textContent)))"
ATTACKS = "[document.querySelectorAll('script, [onerror]').length, document.title]"


@pytest.fixture(scope="module")
def chromium():
    binary, reason = chromium_or_reason()
    if binary is None:
        pytest.skip(reason)
    return binary


@pytest.fixture(scope="module")
def page_file(tmp_path_factory) -> Path:
    root = build_all(tmp_path_factory.mktemp("report"))
    paper = pd.DataFrame({"benchmark": ["vqav2", "average"], "ours": [0.7812, 0.5519], "paper": [78.5, 55.19]})
    return write_report(root, extra=[("Paper table", paper)], title="layerprobe report: planted")


def rows_starting(tables: list, *first: str) -> list[list[str]]:
    return [row for table in tables for row in table if tuple(row[:len(first)]) == first]


def test_the_page_renders_every_figure_and_table_and_fetches_nothing(chromium, page_file, tmp_path):
    html = page_file.read_text()
    with Browser(chromium) as browser:
        page = browser.open(page_file)
        images = page.evaluate(IMAGES)
        tables = page.evaluate(TABLES)
        csp = page.evaluate("document.querySelector('meta[http-equiv=\"Content-Security-Policy\"]').content")
        attacks = page.evaluate(ATTACKS)
        text = page.evaluate("document.body.innerText")
        resources = page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
        shot = page.screenshot()
    # every figure decoded, at the size its PNG declares
    # 3 masking curves (the sweep, each shard: three runs of one model do not merge), discovery,
    # comparison, option curve, heatmap
    assert len(images) == len(image_sizes(html)) == 7
    assert [(w, h) for _, w, h in images] == image_sizes(html) and all(done for done, _, _ in images)
    # the numbers: the planted drops in the whole sweep (40 samples) and in each shard (20), the
    # comparison, the option curve and the extra section
    for layer, accuracy in (("1", "0.5"), ("3", "0.7")):
        shown = {tuple(row[3:5]) for row in rows_starting(tables, "b", "knockout", layer)}
        assert shown == {("40", accuracy), ("20", accuracy)}
    assert rows_starting(tables, "b", "contrastive")[0][2:5] == ["10", "0.6", "0.1"]
    assert rows_starting(tables, "average")[0] == ["average", "0.5519", "55.19"]
    assert [r[2] for r in rows_starting(tables, "contrastive", "percentile")] == ["5", "20"]
    # nothing fetched but the page; the CSP forbids it anyway
    assert [u for u in page.requests if not u.startswith("data:")] == [page_file.resolve().as_uri()]
    assert [u for u in resources if not u.startswith("data:")] == []
    assert csp == CSP
    # the dataset's markup is shown, not run
    assert attacks == [0, "layerprobe report: planted"]
    assert HOSTILE_ID in text and HOSTILE_ANSWER in text
    screenshot = Image.open(io.BytesIO(shot))
    assert screenshot.width == 1280 and screenshot.height > 3000
    assert len(screenshot.convert("RGB").getcolors(1 << 20) or []) > 200  # figures, not a blank page
    (tmp_path / "report.png").write_bytes(shot)


def test_the_checks_fail_on_a_page_that_fetches(chromium, page_file, tmp_path):
    """The same page with one image from a (closed) local server: the request is seen, the image
    stays undecoded, as a leaking page would be caught."""
    tampered = tmp_path / "tampered.html"
    tampered.write_text(page_file.read_text().replace("<body>", '<body><img src="http://127.0.0.1:9/x.png">', 1))
    with Browser(chromium) as browser:
        page = browser.open(tampered)
        images = page.evaluate(IMAGES)
    assert "http://127.0.0.1:9/x.png" in page.requests
    assert images[0][1] == 0 and all(w > 0 for _, w, _ in images[1:])
