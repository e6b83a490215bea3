"""Plumbing shared by the benchmark loaders: options, where the files are, JSON, typed record fields.

    root = benchmark_root("vqav2", "/data/vqav2", expected="v2_OpenEnded_mscoco_val2014_questions.json")
    found = locate(Layouts("VQAv2", ("v2_OpenEnded_mscoco_val2014_questions.json",), "data", "validation"),
                   root, layout="auto")    # found.kind: "official" (found.official) or "parquet" (found.files)
    records = Collector(on_error="skip")
    records.run(((Record(item, path, f"questions[{i}]"),) for i, item in enumerate(items)), build)
    samples, skipped = records.result    # skipped: [(sample id or "questions[3]", one-line reason)]

Every error names the file and the record (index or sample id) and fits on one line, so a user
with 5,000 records finds the bad one without a debugger.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from layerprobe.data.sample import Sample
from layerprobe.errors import ConfigError, DataError

LAYOUTS = ("official", "parquet", "auto")
ON_ERROR = ("raise", "skip")


def generated_split(task: str, splits: dict[str, tuple[int, int]], make: Callable[[int, int, str], list[Sample]],
                    split: str, n: int | None = None, seed: int | None = None) -> tuple[list[Sample], list]:
    """(samples, skipped) of a generated task's ``split``: ``make(n, seed, split)`` with the split's
    own seed and size (``splits[split]``) unless ``n`` or an offset ``seed`` is given."""
    if split not in splits:
        raise ConfigError(f"data.split={split!r}: the {task} task has splits {', '.join(splits)}")
    base, size = splits[split]
    return make(size if n is None else int(n), base if seed is None else base + int(seed), split), []


def check_choice(option: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{option}={value!r}: choose one of {', '.join(choices)}")


def pick_split(name: str, splits: dict[str, Any], split: str) -> Any:
    """The per-split file names of a benchmark; an unknown split names the known ones."""
    try:
        return splits[split]
    except KeyError:
        raise ConfigError(f"{name}: split {split!r} is unknown; known: {', '.join(splits)}") from None


def benchmark_root(name: str, root: str | Path | None, expected: str) -> Path:
    """``root`` as a Path, or a DataError saying what the folder should hold."""
    if root is None or str(root) in ("", "???"):
        raise DataError(f"{name}: data.root is not set; point it at the folder holding {expected}")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"{path}: no such folder (data.root for {name}, expected to hold {expected})")
    return path


@dataclass(frozen=True)
class Layouts:
    """Where one split of a benchmark keeps its files, relative to ``data.root``.

    Official layout: the questions file, the first of ``official`` that exists (the loader then
    reads the files named next to it). Parquet mirror: ``{folder}/{split}-*.parquet``, or
    ``{split}-*.parquet`` directly in a root that is itself named ``folder``. Nothing else under
    the root is looked at, so a folder holding several benchmarks never feeds one benchmark
    another's files.
    """

    title: str                   # the benchmark as errors name it, e.g. "VQAv2"
    official: tuple[str, ...]    # candidate paths of the official questions file
    folder: str                  # the mirror's folder: "data", or the config name ("DocVQA")
    split: str                   # the mirror's split name: "validation", "val2014", ...

    @property
    def pattern(self) -> str:
        return mirror_pattern(self.folder, self.split)

    def official_file(self, root: Path) -> Path | None:
        return next((root / rel for rel in self.official if (root / rel).is_file()), None)

    def parquet_files(self, root: Path) -> list[Path]:
        return mirror_files(root, self.folder, self.split)


def mirror_pattern(folder: str, split: str) -> str:
    """The mirror's files of one split, as a glob relative to the repository (or ``data.root``)."""
    return f"{folder}/{split}-*.parquet"


def mirror_files(root: Path, folder: str, split: str) -> list[Path]:
    """``root/folder/{split}-*.parquet`` (or ``root/{split}-*.parquet`` when ``root`` is named
    ``folder``), in shard order; no other folder is searched."""
    for place in [root / folder, *([root] if root.name == folder else [])]:
        files = sorted(place.glob(f"{split}-*.parquet"))
        if files:
            return files
    return []


@dataclass(frozen=True)
class Found:
    kind: str                    # "official" or "parquet"
    official: Path | None        # the official questions file
    files: list[Path]            # the parquet mirror's files, in shard order


def locate(layouts: Layouts, root: Path, layout: str) -> Found:
    """The files ``layout`` asks for, or for 'auto' the layout ``root`` holds, the official file
    winning when both are there; else a one-line DataError naming every path looked for."""
    check_choice("data.layout", layout, LAYOUTS)
    if layout in ("official", "auto"):
        official = layouts.official_file(root)
        if official is not None:
            return Found("official", official, [])
    if layout in ("parquet", "auto"):
        files = layouts.parquet_files(root)
        if files:
            return Found("parquet", None, files)
    official = " or ".join(layouts.official)
    if layout == "official":
        raise DataError(f"{root}: no {layouts.title} files in the official layout (looked for {official})")
    if layout == "parquet":
        raise DataError(f"{root}: no {layouts.title} files in the parquet layout (looked for {layouts.pattern})")
    raise DataError(f"{root}: no {layouts.title} files (looked for {official} (official layout) "
                    f"and {layouts.pattern} (parquet mirror))")


def find_dir(root: Path, candidates: Iterable[str]) -> Path:
    """The first candidate folder that exists, else the first one: a missing image then fails at
    load time with its full path, which is the message a user can act on."""
    candidates = list(candidates)
    for rel in candidates:
        if (root / rel).is_dir():
            return root / rel
    return root / candidates[0]


def read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: malformed JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read: {type(err).__name__}: {err}") from None


def json_list(path: Path, data: Any, key: str | None) -> list:
    """``data[key]`` (or ``data`` itself) as a list, or a DataError naming the field."""
    value = data
    if key is not None:
        if not isinstance(data, dict) or key not in data:
            raise DataError(f"{path}: missing key {key!r} at the top level")
        value = data[key]
    if not isinstance(value, list):
        raise DataError(f"{path}: {key or 'top level'} must be a list, got {type(value).__name__}")
    return value


def json_records(path: Path, key: str | None):
    """A Record for each item of the list at ``key`` (None: the top level) of a JSON file."""
    items = json_list(path, read_json(path), key)
    return (Record(item, path, f"{key or ''}[{i}]") for i, item in enumerate(items))


def _short(value: Any) -> str:
    text = repr(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


class RecordError(DataError):
    """One bad record. ``locator`` is its sample id once known, else its place in the file."""

    def __init__(self, file: Path | str, where: str, reason: str, locator: str | None = None):
        super().__init__(f"{file}: {where}: {reason}")
        self.locator = locator or where


class Record:
    """Typed access to one JSON object or parquet row; every failure is a RecordError."""

    def __init__(self, data: Any, file: Path | str, where: str):
        self.file, self.where, self.sample_id = file, where, None
        self._data = data

    @property
    def data(self) -> dict:
        # Checked on use, so that the failure happens inside Collector.guard and can be skipped.
        if not isinstance(self._data, dict):
            self.fail(f"expected an object, got {type(self._data).__name__}")
        return self._data

    def fail(self, reason: str):
        where = self.where if self.sample_id is None else f"{self.where} (sample {self.sample_id})"
        raise RecordError(self.file, where, reason, self.sample_id)

    def _value(self, key: str) -> Any:
        if key not in self.data:
            self.fail(f"missing key {key!r}")
        if self.data[key] is None:
            self.fail(f"{key} is null")
        return self.data[key]

    def ident(self, key: str) -> str:
        """The sample id (an int or a string in the files); later errors name it."""
        self.sample_id = self.key(key)
        return self.sample_id

    def key(self, key: str) -> str:
        """An int-or-string id field (image id, question id) as a string."""
        value = self._value(key)
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            self.fail(f"{key} must be an int or a string, got {_short(value)}")
        return str(value)

    def inside(self, folder: Path, name: str, key: str) -> str:
        """``folder / name`` for a file this record names (field ``key``); a name that would leave
        ``folder`` (absolute, ``..``, NUL) fails: a data file decides which files are read."""
        parts = Path(name.replace("\\", "/")).parts
        if not name or "\x00" in name or name.startswith(("/", "\\")) or ".." in parts:
            self.fail(f"{key}={_short(name)} must name a file inside {folder}")
        return str(folder / name)

    def text(self, key: str) -> str:
        value = self._value(key)
        if not isinstance(value, str):
            self.fail(f"{key} must be a string, got {_short(value)}")
        return value

    def integer(self, key: str) -> int:
        value = self._value(key)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{key} must be an integer, got {_short(value)}")
        return value

    def get(self, key: str, default: Any = None) -> Any:
        value = self.data.get(key)
        return default if value is None else value

    def answers(self, key: str, required: bool = True) -> list[str]:
        """A list of strings or of ``{answer: str, ...}`` dicts; absent is [] where not required
        (test splits, scored on a server)."""
        return self.strings(key, required, unwrap="answer")

    def strings(self, key: str, required: bool = True, unwrap: str | None = None) -> list[str]:
        if not required and self.data.get(key) is None:
            return []
        value = self._value(key)
        kind = "strings" if unwrap is None else f"strings or {{{unwrap}: ...}} objects"
        if not isinstance(value, list):
            self.fail(f"{key} must be a list of {kind}, got {_short(value)}")
        out = []
        for i, item in enumerate(value):
            if unwrap is not None and isinstance(item, dict):
                item = item.get(unwrap)
            if not isinstance(item, str):
                self.fail(f"{key}[{i}] must be one of the {kind}, got {_short(value[i])}")
            out.append(item)
        return out


class Collector:
    """Builds samples record by record; with ``on_error='skip'`` a bad record is noted, not fatal.
    A sample id met twice is such a bad record (results are keyed by it): the later one is an
    error naming both places, or skipped under its place in the file."""

    def __init__(self, on_error: str):
        check_choice("data.on_error", on_error, ON_ERROR)
        self.on_error = on_error
        self.samples: list[Sample] = []
        self.skipped: list[tuple[str, str]] = []
        self._seen: dict[str, str] = {}   # sample id -> where it was first met

    def _unique(self, sample: Sample, record: Record) -> Sample:
        place = f"{Path(record.file).name} {record.where}"
        first = self._seen.setdefault(str(sample.sample_id), place)
        if first != place:
            raise RecordError(record.file, f"{record.where} (sample {sample.sample_id})",
                              f"duplicate sample id {sample.sample_id!r}, first at {first}; results are keyed by "
                              "the id, so each sample needs its own", locator=place)
        return sample

    def guard(self, build: Callable[..., Any], *args) -> Any:
        """``build(*args)``, or None after noting its RecordError when skipping."""
        try:
            return build(*args)
        except RecordError as err:
            if self.on_error == "raise":
                raise
            self.skipped.append((err.locator, str(err)))
            return None

    def run(self, items: Iterable[tuple], build: Callable[..., Sample | None]) -> Collector:
        for args in items:
            sample = self.guard(build, *args)
            if sample is not None and isinstance(args[0], Record):
                sample = self.guard(self._unique, sample, args[0])
            if sample is not None:
                self.samples.append(sample)
        return self

    @property
    def result(self) -> tuple[list[Sample], list[tuple[str, str]]]:
        return self.samples, self.skipped
