"""Batches of samples with their images decoded, bad images separated out.

    for batch in chunks(data.samples, 16):
        kept, images, failed = load_images(batch, on_error="skip")   # failed: [(sample, reason)]
"""

from __future__ import annotations

import logging

from layerprobe.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def chunks(items, size: int):
    """Consecutive slices of ``size`` items; ``size`` is the run's ``batch_size``, checked here
    before any batch runs."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"batch_size={size!r}: must be a positive integer")
    return (items[i:i + size] for i in range(0, len(items), size))


def load_images(batch, on_error: str = "raise"):
    """Decode each sample's image; with ``on_error="skip"`` a bad one is returned in ``failed``
    with its one-line reason instead of stopping the run."""
    kept, images, failed = [], [], []
    for sample in batch:
        try:
            images.append(sample.load_image())
            kept.append(sample)
        except DataError as err:
            if on_error != "skip":
                raise
            log.warning("skipping %s", err)
            failed.append((sample, str(err)))
    return kept, images, failed


def first_decodable(samples, n: int) -> tuple[list, list]:
    """The first ``n`` samples whose image decodes, and their images (a timing subsample; a bad
    image is passed over silently, the run itself records it)."""
    kept, images = [], []
    for sample in samples:
        if len(kept) == n:
            break
        try:
            images.append(sample.load_image())
            kept.append(sample)
        except DataError:
            continue
    return kept, images
