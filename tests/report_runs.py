"""Run folders with planted numbers for the report tests: a sweep whose knockouts at layers 1 and
3 lose 20 and 12 of 40 answers (discovered as fusion and review layer), the same sweep in two
shards, and an eval directory (vanilla, contrastive at two percentiles) whose sample ids and
answers carry markup that the page must show as text.

    root = build_all(tmp_path)      # root/sweep, root/multi/..., root/eval
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from layerprobe.analysis.discovery import discover_runs
from layerprobe.evaluation.paired_latency import write_paired_latency
from layerprobe.evaluation.report import write_tables
from layerprobe.io.results import ResultsWriter
from layerprobe.sweep.report import write_summary

N = 40
LOST = {1: 20, 3: 12}          # knocked-out layer -> answers lost (of N); the other layers lose none
NUM_LAYERS = 4
HOSTILE_ID = '<img src=x onerror="document.title=1">'
HOSTILE_ANSWER = "</td></tr></table><script>document.title='owned'</script>"
MODEL = {"name": "planted", "architecture": "LlavaForConditionalGeneration", "family": "llava",
         "num_layers": NUM_LAYERS, "config_hash": "c0ffee"}


def sweep_rows(sample_ids: list[str]) -> list[dict]:
    """Sample ``s-i`` loses its answer under a knockout at layer l when i < LOST[l]."""
    rows = []
    for sid in sample_ids:
        base = {"benchmark": "b", "sample_id": sid, "condition": "baseline", "layer": None, "edges": "image->text",
                "prediction": "yes", "prefill_s": 0.01, "total_s": 0.02, "n_tokens": 1, "score": 1.0,
                "skipped": None, "batch_size": 1}
        rows.append(base)
        for layer in range(NUM_LAYERS):
            lost = int(sid.split("-")[1]) < LOST.get(layer, 0)
            rows.append({**base, "condition": "knockout", "layer": layer, "prediction": "no" if lost else "yes",
                         "score": 0.0 if lost else 1.0, "total_s": 0.02 + 0.001 * layer})
    return rows


def sweep_header(shard: int = 0, num_shards: int = 1) -> dict:
    return {"config_hash": f"run{shard}", "model": MODEL, "edges": "image->text", "window": 1, "metric": "exact_match",
            "data": {"name": "b", "split": "test", "limit": N, "seed": 0, "num_shards": num_shards, "shard": shard},
            "layerprobe_version": "0.1.0"}


def write_run(run: Path, rows: list[dict], header: dict) -> Path:
    with ResultsWriter(run / "results.jsonl", header) as out:
        out.append_many(rows)
    return run


def hydra_record(path: Path, task: list[str], multirun: bool) -> None:
    """What Hydra leaves behind: a job's ``.hydra/hydra.yaml`` or a multirun's ``multirun.yaml``."""
    record = {"hydra": {"mode": "MULTIRUN" if multirun else "RUN", "job": {"name": "sweep"},
                        "overrides": {"hydra": ["hydra.mode=MULTIRUN"] if multirun else [], "task": task}}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(record))


def build_sweep(run: Path) -> Path:
    ids = [f"s-{i}" for i in range(N)]
    write_run(run, sweep_rows(ids), sweep_header())
    hydra_record(run / ".hydra" / "hydra.yaml", ["data.limit=40", "layers=[0,1,2,3]"], multirun=False)
    write_summary(run)
    discover_runs([run], effect="accuracy")   # planted accuracy drops, rows without probabilities
    return run


def build_shards(folder: Path, unfinished: bool = False) -> list[Path]:
    """The sweep in two shards (even and odd samples); ``unfinished``: the second lacks a row."""
    runs = []
    for shard in (0, 1):
        rows = sweep_rows([f"s-{i}" for i in range(shard, N, 2)])
        if unfinished and shard == 1:
            rows = rows[:-1]
        run = write_run(folder / "planted" / "b" / "image_text" / f"shard{shard}of2", rows, sweep_header(shard, 2))
        hydra_record(run / ".hydra" / "hydra.yaml", [f"data.shard={shard}", "data.num_shards=2"], multirun=True)
        runs.append(run)
    hydra_record(folder / "multirun.yaml", ["data.shard=0,1", "data.num_shards=2"], multirun=True)
    return runs


def _method_run(eval_dir: Path, label: str, options: dict, scores: list[float], answers: list[str]) -> Path:
    ids = [HOSTILE_ID] + [f"q{i}" for i in range(1, len(scores))]
    rows = [{"benchmark": "b", "sample_id": sid, "condition": label, "layer": None, "prediction": answer,
             "score": score, "skipped": None, "prefill_s": 0.01, "total_s": 0.04 if label != "vanilla" else 0.032,
             "n_tokens": 1, "batch_size": 1, "peak_mem_bytes": 2.0 * 2**20}
            for sid, score, answer in zip(ids, scores, answers)]
    return write_run(eval_dir / "b" / label, rows, {"method": options, "metric": "exact_match", "model": MODEL,
                                                    "data": {"name": "b", "split": "test", "limit": 10}})


def build_eval(eval_dir: Path) -> Path:
    """vanilla 5/10; contrastive (percentile 20) fixes sample 0 (the hostile one) and 2, breaks
    9: 6/10; contrastive at percentile 5: 5/10, unchanged. A heatmap file named by sample id."""
    vanilla = [0, 1, 0, 1, 1, 0, 1, 0, 0, 1]
    fixed = [1, 1, 1, 1, 1, 0, 1, 0, 0, 0]
    base = {"name": "contrastive", "percentile": 20, "scale": 0.5, "target": "attention"}
    _method_run(eval_dir, "vanilla", {"name": "vanilla"}, vanilla, ["cat"] * 10)
    run = _method_run(eval_dir, "contrastive", base, fixed, [HOSTILE_ANSWER] + ["dog"] * 9)
    _method_run(eval_dir, "contrastive_percentile-5", {**base, "percentile": 5}, vanilla, ["cat"] * 10)
    write_paired_latency(run, {"latency_ratio": 1.25, "prefill_ratio": 1.1})
    rng = np.random.RandomState(0)
    Image.fromarray(rng.randint(0, 255, (24, 48, 3), dtype=np.uint8)).save(run / f"heatmap_{HOSTILE_ID}.png")
    write_tables(eval_dir)
    return eval_dir


def build_all(root: Path) -> Path:
    build_sweep(root / "sweep")
    build_shards(root / "multi")
    build_eval(root / "eval")
    return root


def image_sizes(page: str) -> list[tuple[int, int]]:
    """(width, height) of every embedded PNG, read from its IHDR chunk."""
    import base64
    import re

    sizes = []
    for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page):
        raw = base64.b64decode(data)
        sizes.append((int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")))
    return sizes


class Parsed(HTMLParser):
    """A page read back the way a browser's parser splits it: tags with their attributes, the
    text of every table cell (rows per table) and the headings."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.tables: list[list[list[str]]] = []
        self.headings: list[str] = []
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag in ("h2", "h3"):
            self._heading = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None
        elif tag in ("h2", "h3") and self._heading is not None:
            self.headings.append("".join(self._heading))
            self._heading = None

    def handle_data(self, data):
        for part in (self._cell, self._heading):
            if part is not None:
                part.append(data)

    def rows(self, first_cells: tuple[str, ...]) -> list[list[str]]:
        """Every table row (of any table) that starts with ``first_cells``."""
        n = len(first_cells)
        return [row for t in self.tables for row in t if tuple(row[:n]) == first_cells]

    def table(self, *header: str) -> list[list[str]]:
        """The body rows of the first table whose heading row starts with ``header``."""
        for t in self.tables:
            if t and tuple(t[0][:len(header)]) == header:
                return t[1:]
        raise AssertionError(f"no table with headings {header}")
