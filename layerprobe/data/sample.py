"""The one record type every benchmark loader yields.

    sample = Sample("q1", "/data/coco/COCO_val2014_000000000042.jpg", "What is it?", ["cat"] * 10)
    image = sample.load_image()          # decoded only now, RGB
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

from PIL import Image

from layerprobe.errors import DataError

ImageSource = Union[Image.Image, str, Path, bytes, Callable[[], Image.Image]]


@dataclass
class Sample:
    """One question about one image. ``image`` stays undecoded (a path, bytes or a loader)
    until :meth:`load_image`, so a 5,000-sample run holds no decoded images."""

    sample_id: str
    image: ImageSource
    question: str
    answers: list[str]
    extra: dict[str, Any] = field(default_factory=dict)

    def load_image(self) -> Image.Image:
        src = self.image
        try:
            if isinstance(src, Image.Image):
                return src.convert("RGB")
            if isinstance(src, (str, Path)):
                path = Path(src)
                if not path.is_file():
                    raise DataError(f"{path}: image file not found (sample {self.sample_id})")
                with Image.open(path) as img:
                    return img.convert("RGB")
            if isinstance(src, (bytes, bytearray)):
                with Image.open(io.BytesIO(src)) as img:
                    return img.convert("RGB")
            if callable(src):
                return src().convert("RGB")
        except DataError:
            raise
        except Exception as err:  # PIL raises many types for corrupt files
            where = src if isinstance(src, (str, Path)) else "<embedded image>"
            raise DataError(
                f"{where}: cannot decode image (sample {self.sample_id}): {type(err).__name__}: {err}"
            ) from None
        raise DataError(f"sample {self.sample_id}: unsupported image type {type(src).__name__}")
