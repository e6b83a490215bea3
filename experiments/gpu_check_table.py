"""The table at the end of ``experiments/gpu_check.sh``, from the logs its stages left.

    python experiments/gpu_check_table.py runs/gpu_check --mode gpu   # prints it; writes gpu_check.{md,json}

Every stage's log ends with the record line the script appends (``# gpu_check stage=... rc=...
seconds=... budget=...``); the benchmarks' results are the last JSON line before it, the tests'
the counts of pytest's summary line. The table always has every row (``ROWS``): a stage that
failed or ran out of time shows its rows empty with that status, so a missing number is never a
missing row. Exit code 1 when any stage did not pass.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

SWEEP_SHAPES = ("llava-1.5-7b", "llava-1.6-7b")
CONTRASTIVE_SHAPES = ("llava15_7b", "llava16_vicuna7b")
AGREEMENT_MODELS = ("organism", "tiny_llava", "tiny_llava_next")
RECORD = re.compile(r"^# gpu_check stage=(\w+) rc=(-?\d+) seconds=(\d+) budget=(\d+)$")


def read_stage(log: Path) -> dict:
    """rc, seconds, budget, status and the stage's result (the last JSON line, or pytest's counts)."""
    if not log.is_file():
        return {"status": "not run", "rc": None, "seconds": None, "budget": None, "result": None}
    lines = log.read_text(errors="replace").splitlines()
    record = next((RECORD.match(line) for line in reversed(lines) if RECORD.match(line)), None)
    rc, seconds, budget = (int(record.group(i)) for i in (2, 3, 4)) if record else (None, None, None)
    status = "ok" if rc == 0 else "timed out" if rc in (124, 137) else "not finished" if rc is None else f"failed (exit {rc})"
    result = None
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                result = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    counts = {}
    for line in reversed(lines):
        found = re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?)", line)
        if found and " in " in line:
            counts = {kind: int(n) for n, kind in found}
            break
    return {"status": status, "rc": rc, "seconds": seconds, "budget": budget, "result": result, "counts": counts}


def _mib(value) -> str:
    return f"{value:,.0f} MiB"


def tests_cells(stage: dict) -> dict:
    counts = stage.get("counts") or {}
    text = ", ".join(f"{n} {kind}" for kind, n in counts.items() if kind != "deselected") or None
    return {"gpu-marked tests": text}


# per shape: the measurement's name and its text from the shape's record in the stage's JSON line
SWEEP_TEXT = {
    "naive / fast time": lambda s: (f"{s['naive_s']:.2f} s / {s['fast_s']:.3f} s ({s['visual_tokens']:,} visual tokens, "
                                    f"{s['samples']} sample(s), {s['dtype']} on {s['device']})"),
    "fast / naive": lambda s: (f"{s['fast_s'] / s['naive_s']:.4f} (speedup {s['speedup']:.1f}x; token-layer limit "
                               f"{s['limit']:.1f}x, {s['of_limit']:.2f} of it)"),
    "peak memory": lambda s: f"naive {_mib(s['naive_peak_mb'])}, fast {_mib(s['fast_peak_mb'])}",
    "answers agree": lambda s: "yes" if s["agree"] else "no (bf16 near-ties: see bf16 rows)",
}
CONTRASTIVE_TEXT = {
    "latency": lambda s: (f"plain {s['vanilla_latency_s']:.4f} s, contrastive {s['contrastive_latency_s']:.4f} s, "
                          f"x{s['latency_ratio']:.3f} ({s['visual_tokens']:,} visual tokens)"),
    "peak memory": lambda s: (f"plain {_mib(s['vanilla_peak_mib'])}, contrastive {_mib(s['contrastive_peak_mib'])}, "
                              f"x{s['memory_ratio']:.3f}"),
}


def _shape_cells(stage: dict, names: tuple[str, ...], texts: dict) -> dict:
    """``<shape>: <measurement>`` -> text, for every expected shape the stage's JSON line holds."""
    found = {s["shape"]: s for s in (stage["result"] or {}).get("shapes", [])}
    return {f"{name}: {what}": text(found[name]) for name in names if name in found for what, text in texts.items()}


def sweep_cells(stage: dict) -> dict:
    return _shape_cells(stage, SWEEP_SHAPES, SWEEP_TEXT)


def contrastive_cells(stage: dict) -> dict:
    return _shape_cells(stage, CONTRASTIVE_SHAPES, CONTRASTIVE_TEXT)


def bf16_cells(stage: dict) -> dict:
    result = stage["result"] or {}
    return {f"{m}: fast vs naive answers": f"{result[m]['differ']:,} of {result[m]['answers']:,} differ "
            f"({100 * result[m]['rate']:.1f}%)" for m in AGREEMENT_MODELS if m in result}


ROWS = ([("tests", "gpu-marked tests")]
        + [("sweep", f"{s}: {m}") for s in SWEEP_SHAPES for m in SWEEP_TEXT]
        + [("contrastive", f"{s}: {m}") for s in CONTRASTIVE_SHAPES for m in CONTRASTIVE_TEXT]
        + [("bf16", f"{m}: fast vs naive answers") for m in AGREEMENT_MODELS])
CELLS = {"tests": tests_cells, "sweep": sweep_cells, "contrastive": contrastive_cells, "bf16": bf16_cells}


def build(out: Path, mode: str) -> dict:
    stages = {name: read_stage(out / "logs" / f"{name}.log") for name in CELLS}
    cells = {name: CELLS[name](stage) for name, stage in stages.items()}
    rows = []
    for stage, measurement in ROWS:
        s = stages[stage]
        value = cells[stage].get(measurement)
        status = s["status"] if value is not None or s["status"] != "ok" else "no result"
        rows.append({"stage": stage, "measurement": measurement, "result": value, "status": status,
                     "seconds": s["seconds"], "budget": s["budget"]})
    return {"mode": mode, "rows": rows, "stages": {k: {f: v[f] for f in ("status", "rc", "seconds", "budget")}
                                                  for k, v in stages.items()},
            "results": {k: v["result"] for k, v in stages.items()}}


def markdown(table: dict) -> str:
    lines = [f"gpu_check ({table['mode']})", "",
             "| stage | measurement | result | stage time | budget | status |", "|---|---|---|---|---|---|"]
    for r in table["rows"]:
        lines.append(f"| {r['stage']} | {r['measurement']} | {r['result'] or '-'} | "
                     f"{'-' if r['seconds'] is None else str(r['seconds']) + ' s'} | "
                     f"{'-' if r['budget'] is None else str(r['budget']) + ' s'} | {r['status']} |")
    total = sum(s["seconds"] or 0 for s in table["stages"].values())
    return "\n".join(lines + ["", f"stages took {total} s in all"]) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="the folder gpu_check.sh wrote (its logs/ inside)")
    ap.add_argument("--mode", default="gpu", choices=("gpu", "smoke"))
    args = ap.parse_args(argv)
    table = build(args.out, args.mode)
    text = markdown(table)
    (args.out / "gpu_check.md").write_text(text)
    (args.out / "gpu_check.json").write_text(json.dumps(table, indent=1) + "\n")
    print(text, end="")
    return 0 if all(r["status"] == "ok" for r in table["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
