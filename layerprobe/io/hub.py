"""Fetch part of a Hugging Face Hub repository into the hub cache, the way transformers and
lmms-eval do on first use, with one-line errors.

    folder = fetch("llava-hf/llava-1.5-7b-hf", ["*.json", "*.safetensors"], what="model", error=ModelError,
                   required=["config.json"])
    folder = fetch("lmms-lab-encoder/VQAv2", ["data/validation-*.parquet"], repo_type="dataset",
                   what="vqav2 mirror", error=DataError, download=False)     # the cache only

``huggingface_hub.snapshot_download`` does the work: progress bars, ``HF_TOKEN`` (or a stored
login) for gated and private repositories, ``HF_ENDPOINT`` for a mirror, the cache under
``HF_HOME`` / ``HF_HUB_CACHE``. ``HF_HUB_OFFLINE=1`` or ``download=False`` reads the cache only.
Each of ``required`` (default: every pattern) must match a file of the returned folder, so a
split that was never downloaded is reported as missing rather than read as empty.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from layerprobe.errors import LayerprobeError


def offline() -> bool:
    """Whether huggingface_hub was started with ``HF_HUB_OFFLINE=1`` (it reads the variable once,
    when it is first imported)."""
    from huggingface_hub import constants

    check = getattr(constants, "is_offline_mode", None)
    return bool(check() if callable(check) else constants.HF_HUB_OFFLINE)


def cache_dir() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _why_not(err: Exception, repo: str, kind: str) -> str:
    """The reason a download failed, in words a user can act on."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    page = f"{constants.ENDPOINT}/{'datasets/' if kind == 'dataset' else ''}{repo}"
    if isinstance(err, GatedRepoError):
        return f"the repository is gated: accept its terms at {page}, then set HF_TOKEN to a token of that account"
    if isinstance(err, RepositoryNotFoundError):
        return f"no such {kind} repository at {constants.ENDPOINT} (a private one needs HF_TOKEN)"
    if isinstance(err, RevisionNotFoundError):
        return "no such revision in the repository"
    if isinstance(err, LocalEntryNotFoundError):
        return f"the Hub ({constants.ENDPOINT}) could not be reached and the files are not in the cache ({cache_dir()})"
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"


def fetch(repo: str, patterns: Sequence[str], what: str, error: type[LayerprobeError], repo_type: str = "model",
          revision: str | None = None, download: bool = True, hint: str = "",
          required: Sequence[str] | None = None) -> Path:
    """The local snapshot folder holding ``patterns`` of ``repo`` (downloaded unless ``download``
    is off or the hub is offline); ``error`` with one line naming ``what`` and the repo otherwise.
    ``hint`` ends the message when the files are not to be had: what to do instead, "or ..."."""
    from huggingface_hub import snapshot_download

    patterns = list(patterns)
    local_only = not download or offline()
    name = f"{what} {repo}" + (f"@{revision}" if revision else "")
    try:
        folder = Path(snapshot_download(repo, repo_type=repo_type, revision=revision, allow_patterns=patterns,
                                        local_files_only=local_only))
    except Exception as err:
        from huggingface_hub.errors import LocalEntryNotFoundError

        if local_only and isinstance(err, LocalEntryNotFoundError):
            reason = "HF_HUB_OFFLINE=1" if download else "download=false"
            files = f" ({', '.join(patterns)})" if required is None else ""
            raise error(f"{name}{files} is not in the Hugging Face cache ({cache_dir()}) and downloads are off "
                        f"({reason}): run once with network access{', ' + hint if hint else ''}") from None
        raise error(f"{name}: cannot download it: {_why_not(err, repo, repo_type)}{'; ' + hint if hint else ''}") from None
    missing = [p for p in (patterns if required is None else required) if not any(folder.glob(p))]
    if missing:
        state = "the cached copy" if local_only else "the repository"
        raise error(f"{name}: {state} has no file matching {', '.join(missing)} (looked in {folder})"
                    f"{'; ' + hint if hint else ''}")
    return folder
