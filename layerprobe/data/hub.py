"""The benchmarks' parquet mirrors on the Hugging Face Hub: without ``data.root``, only the files
of the needed split are fetched into the hub cache, and that folder becomes the root.

    root = fetch_benchmark(vqav2, "val")                   # data/validation-*.parquet of lmms-lab-encoder/VQAv2
    root = fetch_benchmark(gqa, "testdev_balanced")        # its questions and its images (two configs)
    root = fetch_benchmark(vqav2, "val", repo="lmms-lab/VQAv2", download=False)   # another copy; cache only

A benchmark has a mirror when its module names ``HUB_REPO`` (the repository lmms-eval's task
reads: lmms-eval 0.7.3 reads ``lmms-lab-encoder/*``, earlier releases ``lmms-lab/*``) and
``mirror_patterns(split)`` (the split's files, relative to the repository).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from layerprobe.errors import DataError
from layerprobe.io.hub import fetch


def has_mirror(bench: Any) -> bool:
    return hasattr(bench, "HUB_REPO") and hasattr(bench, "mirror_patterns")


def fetch_benchmark(bench: Any, split: str, repo: str | None = None, download: bool = True,
                    revision: str | None = None) -> Path:
    """The local folder holding ``split`` of ``bench``'s mirror (``repo`` replaces its HUB_REPO)."""
    if not has_mirror(bench):
        raise DataError(f"{bench.NAME}: has no Hugging Face mirror to download; set data.root")
    return fetch(repo or bench.HUB_REPO, bench.mirror_patterns(split), what=f"{bench.NAME}: mirror",
                 error=DataError, repo_type="dataset", revision=revision, download=download,
                 hint="or set data.root=<a folder holding the benchmark's files>")
