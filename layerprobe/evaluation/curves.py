"""How a method's accuracy and latency move with one of its options (contrastive attention's
percentile, scale or target, DoLa's alpha, ...), from the runs of an eval directory.

    table = collect("runs/eval/organism")
    curves = option_curves(table, compare(table))   # one row per (benchmark, method, option, value)

Runs of one method on one benchmark that differ in a single option form that option's curve; the
options are read from each run's results header, so labels do not matter. A curve's points carry
the run's accuracy with its 95% bootstrap CI, the paired delta vs vanilla (CI, p) and the latency
ratio from the comparison, the latency ratio measured side by side with vanilla where the run has
one (``timing.json``, ``layerprobe.evaluation.paired_latency``), and vanilla's accuracy on the same
benchmark as the reference.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from layerprobe.analysis.stats import bootstrap_ci, scored_rows
from layerprobe.evaluation.compare import REFERENCE_METHOD
from layerprobe.evaluation.paired_latency import read_paired_latency
from layerprobe.io.results import read_header

COLUMNS = ["method", "option", "value", "benchmark", "line", "label", "n", "accuracy", "acc_low", "acc_high",
           "delta", "ci_low", "ci_high", "p", "latency_ratio", "latency_ratio_paired", "vanilla_accuracy"]


def _same(value):
    """A value as compared across runs: 1 and 1.0 (Hydra's int and the YAML's float) are one."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def order(value) -> tuple:
    """Sort key of an option's values: numbers by size, then anything else by its text."""
    value = _same(value)
    return (0, value, "") if isinstance(value, float) else (1, 0.0, str(value))


def _key(options: dict) -> str:
    return json.dumps({k: _same(v) for k, v in options.items()}, sort_keys=True, default=str)


def run_options(table: pd.DataFrame) -> list[tuple[str, str, dict, str]]:
    """(benchmark, label, the method's options incl. ``name``, run directory) of every run in
    ``table`` (rows of ``collect``) whose header records them."""
    runs = table[["benchmark", "condition", "run_dir"]].drop_duplicates(["benchmark", "condition"])
    out = []
    for bench, label, run_dir in runs.itertuples(index=False):
        method = read_header(Path(run_dir) / "results.jsonl").get("method")
        if isinstance(method, dict) and "name" in method:
            out.append((bench, label, method, run_dir))
    return out


def _lines(runs: list[tuple[str, str, dict]], option: str) -> dict[tuple[str, str], list[tuple]]:
    """Runs grouped by (benchmark, every other option): the groups with two or more values of
    ``option`` are its curves."""
    groups: dict[tuple[str, str], list[tuple]] = {}
    for bench, label, opts, run_dir in runs:
        rest = {k: v for k, v in opts.items() if k != option}
        groups.setdefault((bench, _key(rest)), []).append((opts.get(option), label, rest, run_dir))
    return {k: v for k, v in groups.items() if len({_key({"v": p[0]}) for p in v}) > 1}


def _line_name(bench: str, rest: dict, others: list[dict]) -> str:
    """The benchmark, plus the options in which this line's runs differ from the benchmark's other
    lines of the same curve (a percentile sweep at two scales: two lines)."""
    differing = sorted(k for k in rest if any(_same(o.get(k)) != _same(rest[k]) for o in others))
    return bench + "".join(f", {k}={rest[k]}" for k in differing)


def option_curves(table: pd.DataFrame, comparison: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One row per point of every option curve in ``table``; empty when no two runs of a method
    differ in exactly one option."""
    if "run_dir" not in table or comparison.empty:
        return pd.DataFrame(columns=COLUMNS)
    scored = scored_rows(table)
    runs = [r for r in run_options(scored) if r[2]["name"] != REFERENCE_METHOD]
    comp = comparison.set_index(["benchmark", "method"])
    rows = []
    for name in sorted({r[2]["name"] for r in runs}):
        mine = [r for r in runs if r[2]["name"] == name]
        for option in sorted({k for r in mine for k in r[2]} - {"name"}):
            lines = _lines(mine, option)
            for (bench, _), points in sorted(lines.items()):
                others = [p[0][2] for key, p in lines.items() if key[0] == bench]
                line = _line_name(bench, points[0][2], others)
                key = (bench, REFERENCE_METHOD)
                base = comp.loc[key, "accuracy"] if key in comp.index else np.nan
                for value, label, _, run_dir in sorted(points, key=lambda p: order(p[0])):
                    scores = scored[(scored["benchmark"] == bench) & (scored["condition"] == label)]["score"]
                    low, high = bootstrap_ci(scores.astype(float).to_numpy(), seed=seed)
                    c = comp.loc[(bench, label)]
                    paired = (read_paired_latency(run_dir) or {}).get("latency_ratio", np.nan)
                    rows.append({"method": name, "option": option, "value": value, "benchmark": bench, "line": line,
                                 "label": label, "n": int(c["n"]), "accuracy": c["accuracy"], "acc_low": low,
                                 "acc_high": high, "delta": c["delta"], "ci_low": c["ci_low"], "ci_high": c["ci_high"],
                                 "p": c["p"], "latency_ratio": c["latency_ratio"],
                                 "latency_ratio_paired": paired, "vanilla_accuracy": base})
    return pd.DataFrame(rows, columns=COLUMNS)
