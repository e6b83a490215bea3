"""Long-form results tables: one JSON line per (benchmark, sample, condition), appended as produced.

    with ResultsWriter(run_dir / "results.jsonl", header={"config_hash": h}) as out:
        done = out.done_keys()                       # keys already on disk: skip them
        out.append_many(rows)                        # flushed and fsynced per batch
    table = read_results(run_dir / "results.jsonl")  # pandas DataFrame, one row per record

A row carries at least ``benchmark, sample_id, condition, layer, prediction, score`` where
``condition`` is ``"baseline"``, ``"knockout"`` or a method name and ``layer`` is the 0-based
decoder layer (None for conditions not tied to one layer). The first line of the file is a header
``{"_header": {"schema": SCHEMA_VERSION, "config_hash": ..., "identity": ..., ...}}``; a rerun whose
header records another run (``layerprobe.io.identity``: the config, the resolved dtype and device,
the weights, the data) is refused instead of mixing two runs in one table, and so is a file without
that header. A resume forced with ``resume_check=False`` adds a ``{"_resume": ...}`` line naming
what differed; readers skip it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from layerprobe.errors import ConfigError, DataError
from layerprobe.io.identity import check_resume

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer per file is then the user's to ensure
    fcntl = None

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2   # 2: sweep rows carry answer_logprob, reference_logprob, margin (layerprobe.core.first_step)
KEY_FIELDS = ("benchmark", "sample_id", "condition", "layer")


def row_key(row: dict[str, Any]) -> tuple:
    return tuple(row.get(k) for k in KEY_FIELDS)


def _read_lines(path: Path) -> tuple[dict | None, list[dict], int]:
    """Header, rows, and the byte length of the valid prefix (a torn last line is excluded)."""
    header, rows, good = None, [], 0
    with open(path, "rb") as fh:
        data = fh.read()
    pos = 0
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        end = pos + len(raw) + 1
        if not raw.strip():
            pos = end
            continue
        complete = end <= len(data)  # the line was terminated by a newline
        try:
            record = json.loads(raw)
        except json.JSONDecodeError:
            if not complete:
                break  # killed mid-write: the torn tail is dropped on resume
            raise DataError(f"{path}: line {lineno}: not valid JSON") from None
        if not complete:
            break
        if isinstance(record, dict) and "_header" in record:
            header = record["_header"]
        elif isinstance(record, dict) and "_resume" in record:
            pass  # a forced resume's note: metadata, not a row
        else:
            rows.append(record)
        good = end
        pos = end
    return header, rows, good


class ResultsWriter:
    """Appends result rows to a JSONL file, resuming an existing one of the same run.

    ``lock=False`` skips the advisory lock (file systems without ``flock``: one writer per file is
    then the user's to ensure); ``resume_check=False`` resumes a file whose header records another
    run; ``ways_out`` ends a refusal (what the user can do instead)."""

    def __init__(self, path: str | Path, header: dict[str, Any] | None = None, lock: bool = True,
                 resume_check: bool = True, ways_out: str = "use a new run directory"):
        self.path = Path(path)
        self.header = {"schema": SCHEMA_VERSION, **(header or {})}
        self.lock, self.resume_check, self.ways_out = lock, resume_check, ways_out
        self._keys: set[tuple] = set()
        self._fh = None
        self._lock = None

    def __enter__(self) -> "ResultsWriter":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"{self.path.parent}: cannot create output directory: {err.strerror}") from None
        self._take_lock()
        try:
            self._open_locked()
        except BaseException:
            self.close()
            raise

    def _open_locked(self) -> None:
        forced: list[str] = []
        if self.path.exists():
            old_header, rows, good = _read_lines(self.path)
            if old_header is None and not _torn_header(self.path):
                raise ConfigError(f"{self.path}: has no layerprobe header line, so it is not a results file this "
                                  f"run can resume (nothing in it was changed): {self.ways_out}")
            if old_header is not None:
                forced = self._check_header(old_header)
            if good < self.path.stat().st_size:
                with open(self.path, "r+b") as fh:
                    fh.truncate(good)
            self._keys = {row_key(r) for r in rows}
            write_header = old_header is None
        else:
            write_header = True
        try:
            self._fh = open(self.path, "a", encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"{self.path}: cannot write results: {err.strerror}") from None
        if write_header:
            self._write([{"_header": self.header}])
        if forced:
            log.warning("%s: resumed with resume_check=false although %s differ", self.path, ", ".join(forced))
            self._write([{"_resume": {"differs": forced, "header": self.header}}])

    def _check_header(self, old: dict[str, Any]) -> list[str]:
        if old.get("schema") != SCHEMA_VERSION:
            raise ConfigError(
                f"{self.path}: results schema {old.get('schema')} != {SCHEMA_VERSION}; {self.ways_out}"
            )
        return check_resume(self.path, old, self.header, self.resume_check, self.ways_out)

    def done_keys(self) -> set[tuple]:
        return set(self._keys)

    def append_many(self, rows: Iterable[dict[str, Any]]) -> None:
        rows = [r for r in rows if row_key(r) not in self._keys]
        if rows:
            self._write(rows)
            self._keys.update(row_key(r) for r in rows)

    def _write(self, records: list[dict]) -> None:
        self._fh.write("".join(json.dumps(r, default=_jsonable) + "\n" for r in records))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def _take_lock(self) -> None:
        """One writer per file at a time: parallel jobs that share a run (the eval's vanilla
        baseline) take turns, and the later one resumes from what the earlier one wrote instead of
        writing the same rows twice."""
        if fcntl is None or not self.lock:
            return
        try:
            self._lock = open(self.path.with_name(f".{self.path.name}.lock"), "a")
        except OSError as err:
            raise ConfigError(f"{self.path}: cannot write results: {err.strerror}") from None
        try:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("%s: another process is writing it; waiting for it to finish", self.path)
                fcntl.flock(self._lock, fcntl.LOCK_EX)
        except OSError as err:   # ENOLCK, EOPNOTSUPP: some NFS and Lustre mounts
            self.close()
            raise ConfigError(f"{self.path.parent}: this file system does not support file locks (flock: "
                              f"{err.strerror}); run one writer per run directory with file_lock=false, or "
                              "put the runs on a local disk") from None

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._lock is not None:
            self._lock.close()  # closing releases the lock
            self._lock = None


def _torn_header(path: Path) -> bool:
    """An empty file, or the start of a header line cut off by a kill: safe to start afresh."""
    with open(path, "rb") as fh:
        head = fh.read(64 * 1024)
    start = b'{"_header"'
    return not head.strip() or (b"\n" not in head and (head.startswith(start) or start.startswith(head)))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to results")


def read_header(path: str | Path) -> dict[str, Any]:
    """The header ResultsWriter puts on a file's first line ({} without one), read without the rows."""
    with open(path, "rb") as fh:
        first = fh.readline()
    try:
        record = json.loads(first) if first.strip() else {}
    except json.JSONDecodeError:
        return {}  # a torn first line: the file has no complete header yet
    return (record.get("_header") or {}) if isinstance(record, dict) else {}


def read_results(path: str | Path) -> pd.DataFrame:
    """All complete rows of a results file (a torn last line is ignored) as a DataFrame."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: results file not found")
    _, rows, _ = _read_lines(path)
    table = pd.DataFrame(rows)
    if "layer" in table:
        table["layer"] = table["layer"].astype("Int64")
    return table


def per_sample_seconds(rows: pd.DataFrame, column: str) -> pd.Series:
    """Seconds per sample: a row's ``column`` (``prefill_s``/``total_s``, wall time of the whole
    batch it was answered in) divided by that batch's size. Every latency layerprobe reports
    (summaries, masking curves, the eval comparison) is per sample."""
    return rows[column] / rows["batch_size"] if "batch_size" in rows else rows[column]


def write_atomic(path: str | Path, text: str | bytes) -> None:
    """Write a summary/profile so that a crash leaves the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    mode = "wb" if isinstance(text, bytes) else "w"
    with open(tmp, mode) as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
