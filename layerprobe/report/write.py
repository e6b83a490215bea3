"""Assemble and write ``report.html`` for a folder (see ``layerprobe.report``).

    path = write_report("runs/multirun/sweep")     # runs/multirun/sweep/report.html
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from layerprobe.errors import ConfigError, DataError
from layerprobe.io.results import read_header, write_atomic
from layerprobe.report.identity import environment, hydra_command, run_identity
from layerprobe.report.methods import method_sections
from layerprobe.report.page import Section, details, document, esc, figure, note, pairs, png_bytes, preformatted, table
from layerprobe.report.sweeps import SUMMARY_COLUMNS, curves_sections, discovery_sections, lowest_layers

REPORT = "report.html"
BRIEF = ("run", "model", "data", "what", "layerprobe", "command")  # the columns of a multirun's run list


def find_runs(folder: Path) -> tuple[list[Path], list[Path]]:
    """(sweep runs, method runs) below ``folder``: directories holding a ``results.jsonl``, told
    apart by their header (a method run records its method)."""
    sweeps, methods = [], []
    for path in sorted(folder.rglob("results.jsonl")):
        if any(part.startswith(".") for part in path.relative_to(folder).parts[:-1]):
            continue  # Hydra's and submitit's own folders
        (methods if isinstance(read_header(path).get("method"), dict) else sweeps).append(path.parent)
    return sweeps, methods


def _identity(folder: Path, runs: list[Path]) -> Section:
    command = hydra_command(folder) if not (folder / "results.jsonl").is_file() else None
    body = f"<p><b>command</b>: <code>{esc(command)}</code></p>" if command else ""
    if len(runs) == 1:
        body += pairs(run_identity(runs[0], folder))
    elif runs:
        ids = pd.DataFrame([run_identity(r, folder) for r in runs])
        body += note(f"{len(runs)} runs below this folder") + table(ids, {c: c for c in BRIEF})
        body += details("every field of every run", table(ids))
    return Section("Run identity", body + note(environment()))


def _content(value) -> str:
    """HTML of one piece of an extra section (see ``layerprobe.report``)."""
    if isinstance(value, pd.DataFrame):
        return table(value)
    if isinstance(value, (bytes, bytearray)):
        return figure(bytes(value), "figure")
    if isinstance(value, str):
        return preformatted(value)
    if isinstance(value, (list, tuple)):
        return "".join(_content(v) for v in value)
    if hasattr(value, "savefig"):
        caption = value.texts[0].get_text() if getattr(value, "texts", None) else "figure"
        return figure(png_bytes(value), caption)
    raise ConfigError(f"report section content of type {type(value).__name__}: give a DataFrame, a Figure, "
                      "PNG bytes, a string or a list of those")


def _merged_files(folder: Path) -> list[Section]:
    """A folder with no run below it but with a merge ``layerprobe-plot`` wrote into it."""
    csv, png = folder / "summary.csv", folder / "masking_curves.png"
    if not csv.is_file():
        return []
    body = (figure(png, "merged masking curves") if png.is_file() else "") + table(lowest_layers(pd.read_csv(csv)),
                                                                                  SUMMARY_COLUMNS)
    return [Section("Masking curves (merged)", body)]


def write_report(folder, extra: Sequence[tuple[str, object]] = (), title: str | None = None) -> Path:
    """Write ``<folder>/report.html`` from what the folder holds and return its path. A folder
    that does not exist, or holds no result of layerprobe, is a ConfigError / DataError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder to report on")
    sweeps, methods = find_runs(folder)
    sections = [Section(str(name), _content(content)) for name, content in extra]
    sections += curves_sections(folder, sweeps) if sweeps else _merged_files(folder)
    sections += discovery_sections(folder)
    sections += method_sections(folder, methods) if methods else []
    if not sections:
        raise DataError(f"{folder}: nothing to report (no results.jsonl, summary.csv or discovery.csv below it)")
    sections.insert(0, _identity(folder, sweeps + methods))
    page = document(title or f"layerprobe report: {folder.resolve().name}", sections,
                    subtitle=f"folder {folder}; {len(sweeps)} sweep run(s), {len(methods)} method run(s)")
    path = folder / REPORT
    write_atomic(path, page)
    return path

