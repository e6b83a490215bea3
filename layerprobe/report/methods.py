"""Report sections of method evaluations: the comparison against vanilla with paired CIs and
latency ratios, the option curves, the flipped answers and the attention heatmaps.

    sections = method_sections(folder, eval_runs)    # eval_runs: run directories below folder

Tables are computed from the runs' results by the functions that write ``comparison.csv``,
``flips.csv`` and ``curves.csv`` (so they agree with those files); figures are the PNGs
``layerprobe-eval`` left in the folder, drawn here where one is missing (the flips galleries and
heatmaps need the benchmark's images, so only the files are shown).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from layerprobe.evaluation.compare import REFERENCE_METHOD, compare, flips, paired
from layerprobe.evaluation.curves import option_curves
from layerprobe.evaluation.paired_latency import read_paired_latency
from layerprobe.io.results import read_results
from layerprobe.plots.methods import comparison_figure
from layerprobe.plots.option_curves import option_curve_figure
from layerprobe.report.page import Section, figure, note, png_bytes, table
from layerprobe.report.identity import relative

FLIPPED_SHOWN = 10      # fixed and as many broken samples listed per benchmark and method
HEATMAPS_PER_RUN = 4
COMPARISON_COLUMNS = {"benchmark": "benchmark", "method": "method", "n": "n", "accuracy": "accuracy",
                      "delta": "delta vs vanilla", "ci_low": "95% CI low", "ci_high": "95% CI high", "p": "p",
                      "n_paired": "paired", "latency_ms": "latency per sample (ms)",
                      "latency_ratio": "latency x vanilla (runs)", "paired_ratio": "latency x vanilla (side by side)",
                      "peak_mem_mib": "peak memory (MiB)", "peak_mem_ratio": "memory x vanilla"}
CURVE_COLUMNS = {"method": "method", "option": "option", "value": "value", "line": "line", "n": "n",
                 "accuracy": "accuracy", "acc_low": "95% CI low", "acc_high": "95% CI high", "delta": "delta",
                 "p": "p", "latency_ratio": "latency x vanilla (runs)",
                 "latency_ratio_paired": "latency x vanilla (side by side)"}
FLIP_COLUMNS = {"benchmark": "benchmark", "method": "method", "kind": "kind", "sample_id": "sample",
                "base_prediction": "vanilla answer", "prediction": "method answer", "base": "vanilla score",
                "other": "method score"}


def _image_or_drawn(path: Path, draw, caption: str) -> str:
    return figure(path if path.is_file() else png_bytes(draw()), caption)


def _comparison_body(folder: Path, table_: pd.DataFrame, comparison: pd.DataFrame) -> str:
    runs = table_.drop_duplicates(["benchmark", "condition"]).set_index(["benchmark", "condition"])["run_dir"]
    side_by_side = [(read_paired_latency(runs[(b, m)]) or {}).get("latency_ratio") if (b, m) in runs.index else None
                    for b, m in zip(comparison["benchmark"], comparison["method"])]
    shown = comparison.assign(latency_ms=comparison["latency_s"] * 1e3, paired_ratio=side_by_side,
                              peak_mem_mib=comparison["peak_mem_bytes"] / 2**20)
    body = note("delta: paired against vanilla on the samples both scored, 95% bootstrap CI, sign-flip p; "
                "the average row weighs each benchmark once. Latency x vanilla (side by side): the two "
                "alternated on the same batches after the run (timing.json).")
    body += table(shown, COMPARISON_COLUMNS)
    return body + _image_or_drawn(folder / "comparison.png", lambda: comparison_figure(comparison),
                                  "accuracy, paired deltas and cost against vanilla")


def _curves_section(folder: Path, curves: pd.DataFrame) -> Section:
    body = note("one line per benchmark (and per setting of the other options), accuracy with its 95% "
                "bootstrap CI, latency as a multiple of vanilla's")
    body += table(curves, CURVE_COLUMNS)
    for (method, option), curve in curves.groupby(["method", "option"], sort=False):
        body += _image_or_drawn(folder / f"curve_{method}_{option}.png", lambda c=curve: option_curve_figure(c),
                                f"{method}: accuracy and latency against {option}")
    return Section("Option curves", body)


def flipped_samples(table_: pd.DataFrame, n: int = FLIPPED_SHOWN) -> pd.DataFrame:
    """Up to ``n`` samples each method fixed and ``n`` it broke, per benchmark, with both answers."""
    rows = []
    for bench in sorted(table_["benchmark"].unique()):
        for method in sorted(set(table_.loc[table_["benchmark"] == bench, "condition"]) - {REFERENCE_METHOD}):
            pairs = paired(table_, bench, method).reset_index()
            for kind, chosen in (("fixed", pairs["other"] > pairs["base"]), ("broken", pairs["other"] < pairs["base"])):
                rows += [{"benchmark": bench, "method": method, "kind": kind, **r}
                         for r in pairs[chosen].head(n).to_dict("records")]
    return pd.DataFrame(rows, columns=list(FLIP_COLUMNS))


def _flips_section(folder: Path, table_: pd.DataFrame) -> Section:
    body = table(flips(table_), {"benchmark": "benchmark", "method": "method", "n_paired": "paired",
                                 "fixed": "fixed", "broken": "broken", "unchanged": "unchanged"})
    listed = flipped_samples(table_)
    body += table(listed, FLIP_COLUMNS) if len(listed) else note("no answer changed against vanilla")
    for png in sorted(folder.rglob("flips_*.png")):
        body += figure(png, f"fixed and broken samples: {relative(png, folder)}")
    return Section("Flipped answers", body)


def _heatmaps_section(folder: Path, runs: list[Path]) -> Section | None:
    body = ""
    pre = folder / "pre_layers.png"
    if pre.is_file():
        body += figure(pre, "pre-integrated layer chosen per sample")
    images = [p for run in runs for p in sorted(run.glob("heatmap_*.png"))[:HEATMAPS_PER_RUN]]
    if images:
        body += '<div class="gallery">' + "".join(
            figure(p, f"{relative(p.parent, folder)}: sample {p.stem[len('heatmap_'):]}") for p in images) + "</div>"
    return Section("Attention heatmaps", body) if body else None


def method_sections(folder: Path, runs: list[Path]) -> list[Section]:
    tables = [read_results(r / "results.jsonl").assign(run_dir=str(r)) for r in runs]
    tables = [t for t in tables if len(t)]
    if not tables:
        return [Section("Methods vs vanilla", note("the method runs hold no results yet"))]
    table_ = pd.concat(tables, ignore_index=True)
    comparison = compare(table_)
    if comparison.empty:
        return [Section("Methods vs vanilla", note("no scored sample yet (every sample skipped?)"))]
    sections = [Section("Methods vs vanilla", _comparison_body(folder, table_, comparison))]
    curves = option_curves(table_, comparison)
    if len(curves):
        sections.append(_curves_section(folder, curves))
    if REFERENCE_METHOD in set(table_["condition"]):
        sections.append(_flips_section(folder, table_))
    heatmaps = _heatmaps_section(folder, runs)
    return sections + ([heatmaps] if heatmaps else [])
