"""Our numbers beside a paper's: the table ``layerprobe-paper`` ends with.

    reference = {"accuracy": {"average": {"vanilla": 55.19, "contrastive": 58.25}},
                 "delta": {"vqav2": {"contrastive": 2.3}}}          # conf/paper/llava15.yaml's paper block
    rows = paper_table(collect("runs/paper/llava15_7b/eval"), reference)
    write_paper_table(rows, "runs/paper/llava15_7b", reference, title="LLaVA-1.5")  # paper_table.{csv,md}

One row per benchmark x method, then the average over benchmarks (each counts once), in percent
points as the paper reports them. Ours: the accuracy (the benchmark's metric: VQA accuracy, exact
match or ANLS) with its 95% bootstrap CI (the average's resamples within each benchmark), and the
paired delta against vanilla with its 95% CI and sign-flip p (``evaluation.compare.compare``).
The paper's: only the numbers ``reference`` states; a cell it does not state stays empty, and the
Markdown lists which ones are there. The paper's averages are set beside ours only when ours
average the same benchmarks (``reference["average_over"]``, where given).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from layerprobe.analysis.stats import bootstrap_ci, scored_rows, stratified_bootstrap_ci
from layerprobe.evaluation.compare import REFERENCE_METHOD, compare
from layerprobe.io.results import write_atomic

AVERAGE = "average"
COLUMNS = ["benchmark", "method", "n", "accuracy", "accuracy_ci_low", "accuracy_ci_high", "delta", "delta_ci_low",
           "delta_ci_high", "p", "paper_accuracy", "paper_delta", "accuracy_minus_paper", "delta_minus_paper"]


def _accuracy_cis(table: pd.DataFrame, seed: int) -> dict[tuple[str, str], tuple[float, float]]:
    """(benchmark, method) -> 95% CI of the accuracy in points; the average's is stratified."""
    out, groups = {}, {}
    for (bench, method), rows in table.groupby(["benchmark", "condition"], sort=True):
        scores = rows["score"].astype(float).to_numpy()
        low, high = bootstrap_ci(scores, seed=seed)
        out[(bench, method)] = (100 * low, 100 * high)
        groups.setdefault(method, []).append(scores)
    for method, scores in groups.items():
        low, high = stratified_bootstrap_ci(scores, seed=seed)
        out[(AVERAGE, method)] = (100 * low, 100 * high)
    return out


def comparable_average(reference: dict, benchmarks) -> bool:
    """Whether our average is over the benchmarks the paper's averages are over."""
    return set(reference.get("average_over") or benchmarks) == set(benchmarks)


def _stated(reference: dict, kind: str, bench: str, method: str, benchmarks) -> float:
    if bench == AVERAGE and not comparable_average(reference, benchmarks):
        return math.nan
    value = ((reference.get(kind) or {}).get(bench) or {}).get(method)
    return float(value) if value is not None else math.nan


def paper_table(table: pd.DataFrame, reference: dict, benchmarks: list[str] | None = None,
                methods: list[str] | None = None, seed: int = 0) -> pd.DataFrame:
    """The rows described in the module docstring, benchmarks and methods in the given order (by
    default as they appear in ``table``); the average is over the benchmarks present."""
    scored = scored_rows(table)
    if benchmarks is not None:
        scored = scored[scored["benchmark"].isin(benchmarks)]
    ours = compare(scored, seed=seed)
    cis = _accuracy_cis(scored, seed)
    benchmarks = [b for b in (benchmarks or sorted(scored["benchmark"].unique())) if b in set(scored["benchmark"])]
    methods = methods or sorted(scored["condition"].unique(), key=lambda m: (m != REFERENCE_METHOD, m))
    rows = []
    for bench in [*benchmarks, AVERAGE]:
        for method in methods:
            found = ours[(ours["benchmark"] == bench) & (ours["method"] == method)]
            if found.empty:
                continue
            r = found.iloc[0]
            low, high = cis[(bench, method)]
            row = {"benchmark": bench, "method": method, "n": int(r["n"]), "accuracy": 100 * r["accuracy"],
                   "accuracy_ci_low": low, "accuracy_ci_high": high, "delta": 100 * r["delta"],
                   "delta_ci_low": 100 * r["ci_low"], "delta_ci_high": 100 * r["ci_high"], "p": r["p"],
                   "paper_accuracy": _stated(reference, "accuracy", bench, method, benchmarks),
                   "paper_delta": _stated(reference, "delta", bench, method, benchmarks)}
            row["accuracy_minus_paper"] = row["accuracy"] - row["paper_accuracy"]
            row["delta_minus_paper"] = row["delta"] - row["paper_delta"]
            rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def _num(value: float, signed: bool = False) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else (
        f"{value:+.2f}" if signed else f"{value:.2f}")


def _ci(value: float, low: float, high: float, signed: bool = False) -> str:
    if math.isnan(value):
        return ""
    return f"{_num(value, signed)} [{_num(low, signed)}, {_num(high, signed)}]" if not math.isnan(low) else _num(value, signed)


def stated_cells(reference: dict) -> list[str]:
    """The paper's numbers, as "kind benchmark/method = value", in the reference's order."""
    return [f"{kind} {bench}/{method} = {value}" for kind in ("accuracy", "delta")
            for bench, values in (reference.get(kind) or {}).items() for method, value in (values or {}).items()]


def to_markdown(rows: pd.DataFrame, reference: dict, title: str = "") -> str:
    """The table as Markdown, with what the paper states and what it does not."""
    head = ("| benchmark | method | n | ours: accuracy [95% CI] | paper | ours: delta vs vanilla [95% CI] | p "
            "| paper delta | ours - paper (accuracy; delta) |")
    lines = [f"# {title}: ours beside the paper" if title else "# ours beside the paper", "",
             "Accuracy in percent (VQA accuracy; GQA exact match; DocVQA ANLS), deltas in points against "
             "vanilla on the same samples; 95% bootstrap CIs; p: paired sign-flip test. The average weighs every "
             "benchmark the same.", "", head, "|" + "---|" * 9]
    for r in rows.itertuples():
        gap = "; ".join(x for x in (_num(r.accuracy_minus_paper, True), _num(r.delta_minus_paper, True)) if x)
        p = "" if math.isnan(r.p) else f"{r.p:.3g}"
        lines.append(f"| {r.benchmark} | {r.method} | {r.n} | {_ci(r.accuracy, r.accuracy_ci_low, r.accuracy_ci_high)} "
                     f"| {_num(r.paper_accuracy)} | {_ci(r.delta, r.delta_ci_low, r.delta_ci_high, True)} | {p} "
                     f"| {_num(r.paper_delta, True)} | {gap} |")
    stated = stated_cells(reference)
    lines += ["", f"Source of the paper's numbers: {reference.get('source', 'not given')}.",
              "The paper states: " + ("; ".join(stated) if stated else "nothing") + ". Every other paper cell "
              "is not stated there and is left empty."]
    ours = sorted(set(rows["benchmark"]) - {AVERAGE})
    if not comparable_average(reference, ours):
        lines.append(f"The paper's averages are over {', '.join(reference['average_over'])}; this table's over "
                     f"{', '.join(ours)}, so they are not set beside ours.")
    if reference.get("notes"):
        lines.append(str(reference["notes"]).strip())
    return "\n".join(lines) + "\n"


def write_paper_table(rows: pd.DataFrame, out, reference: dict, title: str = "") -> tuple[Path, Path, str]:
    """``<out>/paper_table.csv`` and ``paper_table.md`` (atomically); returns both paths and the Markdown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(rows, reference, title)
    csv_path, md_path = out / "paper_table.csv", out / "paper_table.md"
    write_atomic(csv_path, rows.to_csv(index=False, float_format="%.4f"))
    write_atomic(md_path, markdown)
    return csv_path, md_path, markdown
