"""Report sections of knockout sweeps: the masking curves with their CIs (one section per model
and knockout, benchmarks side by side, shards merged) and each discovery with its profile.

    sections = curves_sections(folder, sweep_runs)     # sweep_runs: run directories below folder
    sections += discovery_sections(folder)              # every discovery.csv below folder

A run shown alone is drawn from the ``summary.csv`` and ``masking_curves.png`` it holds; several
runs of one model and knockout are merged by ``layerprobe.io.runs.merge_runs``, and when the merge
is refused (an unfinished shard, say) the reason is shown and each run appears on its own.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from layerprobe.errors import ConfigError
from layerprobe.io.results import read_header
from layerprobe.report.identity import relative
from layerprobe.report.page import Section, details, esc, figure, note, pairs, png_bytes, preformatted, table
from layerprobe.sweep.report import curves_of

LOWEST = 5  # knockout layers listed per benchmark, lowest accuracy first
SUMMARY_COLUMNS = {"benchmark": "benchmark", "condition": "condition", "layer": "layer", "n": "n",
                   "accuracy": "accuracy", "ci_low": "95% CI low", "ci_high": "95% CI high",
                   "drop": "drop vs baseline", "latency_ms": "latency per sample (ms)"}
# the discovery's own effect first (the column effect_name says which), then the control's where
# the sweep ran one, then the accuracy counts every discovery reports
EVIDENCE_COLUMNS = {"benchmark": "benchmark", "layer": "layer", "part": "part", "n": "n", "effect_name": "effect",
                    "effect": "estimate", "ci_low": "CI low", "ci_high": "CI high", "p": "p", "q": "q",
                    "control_effect": "control", "control_ci_low": "control CI low",
                    "control_ci_high": "control CI high", "control_q": "control q",
                    "specific_q": "knockout vs control q", "specific": "specific", "baseline_acc": "baseline accuracy",
                    "knockout_acc": "knockout accuracy", "n_lost": "lost", "n_gained": "gained"}


def _group_key(run: Path) -> tuple:
    header = read_header(run / "results.jsonl")
    model = header.get("model") or {}
    return (str(model.get("name")), str(model.get("config_hash")), str(header.get("edges")), header.get("window", 1))


def lowest_layers(summary: pd.DataFrame, k: int = LOWEST) -> pd.DataFrame:
    """Per benchmark, the baseline row and the ``k`` knockout layers of lowest accuracy (each with
    its control's row, where the sweep ran one), with the drop against the baseline and the
    latency in milliseconds."""
    rows = []
    for _, part in summary.groupby("benchmark", sort=False):
        base = part[part["condition"] == "baseline"]
        base_acc = float(base["accuracy"].iloc[0]) if len(base) else float("nan")
        knocked = part[part["condition"] == "knockout"].nsmallest(k, "accuracy")
        controls = part[part["condition"] == "control"]
        shown = [base, *(pd.concat([knocked.loc[[i]], controls[controls["layer"] == layer]])
                         for i, layer in zip(knocked.index, knocked["layer"]))]
        for _, row in pd.concat(shown).iterrows():
            rows.append({**row.to_dict(), "drop": None if row["condition"] == "baseline" else base_acc - row["accuracy"],
                         "latency_ms": row["latency_s"] * 1e3})
    out = pd.DataFrame(rows)
    if "layer" in out:
        out["layer"] = [None if pd.isna(v) else int(v) for v in out["layer"]]
    return out


def _curves_body(summary: pd.DataFrame, image: bytes | Path | None, caption: str) -> str:
    body = figure(image, caption) if image is not None else note("no knockout condition yet: nothing to draw")
    body += table(lowest_layers(summary), SUMMARY_COLUMNS)
    full = summary.assign(latency_ms=summary["latency_s"] * 1e3)
    return body + details(f"every condition ({len(summary)} rows)", table(full, SUMMARY_COLUMNS))


def _one_run(run: Path, folder: Path) -> str:
    """A run's curves from the files it holds, computed from its results where they are missing."""
    png, csv = run / "masking_curves.png", run / "summary.csv"
    name = relative(run, folder)
    caption = "masking curves" + ("" if name == "." else f" of {name}")
    if csv.is_file() and png.is_file():
        return _curves_body(pd.read_csv(csv), png, caption)
    summary, fig = curves_of([run])
    return _curves_body(summary, png_bytes(fig) if fig is not None else None, caption)


def curves_sections(folder: Path, runs: list[Path]) -> list[Section]:
    """One section per (model, knockout) among the sweep ``runs`` below ``folder``."""
    groups: dict[tuple, list[Path]] = {}
    for run in runs:
        groups.setdefault(_group_key(run), []).append(run)
    sections = []
    for (model, _, edges, window), members in groups.items():
        title = f"Masking curves: {model}, {edges} knockout" + (f" (window {window})" if window not in (None, 1) else "")
        if len(members) == 1:
            sections.append(Section(title, _one_run(members[0], folder)))
            continue
        listed = ", ".join(relative(r, folder) for r in members)
        try:
            summary, fig = curves_of(members)
        except ConfigError as err:
            body = note(f"the {len(members)} runs cannot be merged: {err}; each is shown on its own")
            body += "".join(f"<h3>{esc(relative(r, folder))}</h3>" + _one_run(r, folder) for r in members)
            sections.append(Section(title, body))
            continue
        image = png_bytes(fig) if fig is not None else None
        sections.append(Section(title, note(f"{len(members)} runs merged: {listed}")
                                + _curves_body(summary, image, f"masking curves, {len(members)} runs merged")))
    return sections


def _profiles_beside(where: Path) -> list[tuple[Path, dict, str]]:
    """(path, parsed, text) of every layer profile in ``where`` (YAML files with fusion_layers)."""
    found = []
    for path in sorted(where.glob("*.yaml")):
        text = path.read_text()
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError:
            continue
        if isinstance(parsed, dict) and "fusion_layers" in parsed:
            found.append((path, parsed, text))
    return found


def _profile_body(path: Path, profile: dict, text: str, folder: Path) -> str:
    keys = ("model", "num_layers", "fusion_layers", "review_layer", "post_integrated_layer", "edges", "data", "n")
    shown = {k: profile.get(k) for k in keys if k in profile}
    shown = {k: ", ".join(map(str, v)) if isinstance(v, list) else
             ", ".join(f"{a}: {b}" for a, b in v.items()) if isinstance(v, dict) else v for k, v in shown.items()}
    stats = profile.get("statistics") or {}
    if stats:
        shown["statistics"] = ", ".join(f"{k}={v}" for k, v in stats.items())
    return (f"<h3>exported profile {esc(relative(path, folder))}</h3>" + pairs(shown)
            + details(f"{path.name} as written", preformatted(text)))


def discovery_sections(folder: Path) -> list[Section]:
    """One section per ``discovery.csv`` below ``folder``: the significant layers, the figure
    and the profile exported beside it (or why there is none)."""
    sections = []
    for csv in sorted(folder.rglob("discovery.csv")):
        evidence = pd.read_csv(csv)
        where = csv.parent
        significant = evidence[evidence["significant"].astype(bool)] if "significant" in evidence else evidence.iloc[:0]
        body = note(f"{relative(csv, folder)}: {len(evidence)} (benchmark, layer) tests, "
                    f"{len(significant)} significant")
        if len(significant):
            body += table(significant, EVIDENCE_COLUMNS)
        png = where / "discovery.png"
        if png.is_file():
            body += figure(png, "the discovery's effect per layer (the control's beside it, where the sweep ran "
                                "one) with the discovered fusion and review layers")
        profiles = _profiles_beside(where)
        body += "".join(_profile_body(p, parsed, text, folder) for p, parsed, text in profiles) or note(
            "no layer profile beside it (layerprobe-discover out=... wrote it elsewhere)")
        body += details(f"every test ({len(evidence)} rows)", table(evidence, EVIDENCE_COLUMNS))
        name = relative(where, folder)
        sections.append(Section("Discovery" + ("" if name == "." else f": {name}"), body))
    return sections
