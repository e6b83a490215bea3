"""Reading the Hugging Face parquet mirrors (lmms-lab) without holding their images in memory.

    files = _io.mirror_files(root, "data", "validation")     # data/validation-0000k-of-0000n.parquet
    rows = read_rows(files[0], required=("question_id", "question"))   # no image column read
    sample = Sample(rows[0]["question_id"], ParquetImage(files[0], 0), ...)
    samples, skipped = materialize(samples, on_error="raise")   # image -> raw bytes, chosen rows only

A loader returns ParquetImage references; ``load_benchmark`` turns only the subsampled, sharded
samples into raw (undecoded) bytes, reading each needed row group once, so a 5,000-sample run
over a 200,000-row split reads 5,000 images, never all of them and never decoded.
"""

from __future__ import annotations

import dataclasses
import io
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from layerprobe.data._io import Record
from layerprobe.data.sample import Sample
from layerprobe.errors import DataError


def _parquet_file(path: Path | str):
    import pyarrow.parquet as pq  # pyarrow only when a parquet mirror is actually read

    try:
        return pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ... for a damaged file
        raise DataError(f"{path}: not a readable parquet file: {type(err).__name__}: {err}") from None


def read_rows(path: Path, required: tuple[str, ...], image_column: str | None = "image",
              foreign: tuple[tuple[str, str], ...] = ()) -> list[dict]:
    """All columns but the image as Python dicts, one per row; a missing column, or a column that
    marks another benchmark's file (``foreign``: column -> that benchmark), is a DataError."""
    pf = _parquet_file(path)
    names = pf.schema_arrow.names
    for column in (*required, *([image_column] if image_column else [])):
        if column not in names:
            raise DataError(f"{path}: missing column {column!r} (has {', '.join(names)})")
    for column, other in foreign:
        if column in names:
            raise DataError(f"{path}: has column {column!r}, so it is a {other} file; "
                            "point data.root at this benchmark's own folder")
    return pf.read(columns=[n for n in names if n != image_column]).to_pylist()


def parquet_records(files: list[Path], required: tuple[str, ...], image_column: str | None = "image",
                    foreign: tuple[tuple[str, str], ...] = ()):
    """(Record, ParquetImage or None) for every row of ``files``, in order; errors name file and row."""
    for path in files:
        for i, row in enumerate(read_rows(path, required, image_column, foreign)):
            yield Record(row, path, f"row {i}"), ParquetImage(str(path), i, image_column) if image_column else None


def _image_bytes(value: Any) -> bytes | None:
    # Hugging Face stores an Image feature as struct<bytes, path>; plain binary columns exist too.
    if isinstance(value, dict):
        value = value.get("bytes")
    return value if isinstance(value, (bytes, bytearray)) and value else None


@dataclass(frozen=True)
class ParquetImage:
    """Where one image lives in a parquet file; calling it decodes the image (row group read)."""

    file: str
    row: int
    column: str = "image"

    def read_bytes(self) -> bytes | None:
        return _read_many(self.file, self.column, [self.row])[self.row]

    def __call__(self) -> Image.Image:
        data = self.read_bytes()
        if data is None:
            raise DataError(f"{self.file}: row {self.row}: {self.column} holds no image bytes")
        return Image.open(io.BytesIO(data))


def _read_many(file: str, column: str, rows: list[int]) -> dict[int, bytes | None]:
    pf = _parquet_file(file)
    starts, total = [], 0
    for i in range(pf.num_row_groups):
        starts.append(total)
        total += pf.metadata.row_group(i).num_rows
    out: dict[int, bytes | None] = {}
    by_group: dict[int, list[int]] = {}
    for row in sorted(set(rows)):
        if not 0 <= row < total:
            raise DataError(f"{file}: row {row} is out of range ({total} rows)")
        by_group.setdefault(bisect_right(starts, row) - 1, []).append(row)
    for group, group_rows in by_group.items():
        values = pf.read_row_group(group, columns=[column]).column(column)
        for row in group_rows:
            out[row] = _image_bytes(values[row - starts[group]].as_py())
    return out


def materialize(samples: list[Sample], on_error: str) -> tuple[list[Sample], list[tuple[str, str]]]:
    """Replace ParquetImage references by their raw bytes (shared between samples of one image)."""
    wanted: dict[tuple[str, str], list[int]] = {}
    for s in samples:
        if isinstance(s.image, ParquetImage):
            wanted.setdefault((s.image.file, s.image.column), []).append(s.image.row)
    if not wanted:
        return samples, []
    images = {(file, column, row): data for (file, column), rows in wanted.items()
              for row, data in _read_many(file, column, rows).items()}
    kept, skipped = [], []
    for s in samples:
        if not isinstance(s.image, ParquetImage):
            kept.append(s)
            continue
        data = images[(s.image.file, s.image.column, s.image.row)]
        if data is None:
            message = f"{s.image.file}: row {s.image.row} (sample {s.sample_id}): {s.image.column} holds no image bytes"
            if on_error == "raise":
                raise DataError(message)
            skipped.append((s.sample_id, message))
            continue
        kept.append(dataclasses.replace(s, image=data))
    return kept, skipped
