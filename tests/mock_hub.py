"""A Hugging Face Hub on 127.0.0.1 for tests: the endpoints that huggingface_hub's
``snapshot_download`` / ``hf_hub_download`` call, answering from folders on disk.

    with MockHub() as hub:
        hub.add("model", "mock-org/tiny-llava", checkpoint_folder)
        hub.add("dataset", "lmms-lab-encoder/VQAv2", fixture_folder, extra={"data/train-0.parquet": b"..."})
        hub.add("model", "mock-org/gated", checkpoint_folder, token="secret")   # 401 GatedRepo without it
        serve_benchmarks(hub)                 # every benchmark's fixture mirror, as lmms-eval's repository
        env = hub.env(tmp_path / "hf")        # HF_ENDPOINT=this server, HF_HOME in tmp, online
        subprocess.run([...], env=env)        # huggingface_hub reads HF_ENDPOINT when imported
        hub.requests                          # [(method, path), ...] in the order served

Endpoints, as the Hub answers them (huggingface_hub 1.x and 2.x call these):
  GET       /api/{models|datasets}/{repo}[/revision/{rev}]     repo info: id, sha, siblings
  GET       /api/{models|datasets}/{repo}/tree/{rev}[/{path}]  the file listing (one page)
  HEAD, GET /[datasets/]{repo}/resolve/{rev}/{file}             the file, with X-Repo-Commit, ETag,
            Content-Length, and X-Linked-Etag / X-Linked-Size for LFS-stored files (as the Hub's
            large files are); GET honours ``Range: bytes=N-`` (a resumed download)
Errors carry ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo), from which
the client raises its own exception types. The server binds 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from layerprobe.data import registry
from layerprobe_testing import FIXTURES as BENCHMARK_FIXTURES

LFS_SUFFIXES = (".parquet", ".safetensors", ".bin", ".pth")   # stored in LFS on the Hub


@dataclass
class Repo:
    kind: str                                  # "model" or "dataset"
    repo_id: str
    files: dict[str, bytes]
    token: str | None = None                   # gated: requests must carry it
    sha: str = field(init=False)

    def __post_init__(self):
        digest = hashlib.sha1()
        for path in sorted(self.files):
            digest.update(path.encode() + b"\0" + hashlib.sha256(self.files[path]).digest())
        self.sha = digest.hexdigest()

    def entry(self, path: str) -> dict:
        data = self.files[path]
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        out = {"type": "file", "oid": blob, "size": len(data), "path": path}
        if path.endswith(LFS_SUFFIXES):
            out["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return out


def _read_folder(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: "MockHub"

    def log_message(self, *args):  # the test's output stays the tool's own
        pass

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _send(self, status: int, headers: dict, payload: bytes = b"", body: bool = True):
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(payload))}.items():
            self.send_header(key, value)
        self.end_headers()
        if body and payload:
            self.wfile.write(payload)

    def _error(self, status: int, code: str, body: bool, repo: Repo | None = None):
        headers = {"X-Error-Code": code, "X-Error-Message": code, "Content-Type": "application/json"}
        if repo is not None:
            headers["X-Repo-Commit"] = repo.sha
        self._send(status, headers, json.dumps({"error": code}).encode(), body)

    def _serve(self, body: bool):
        url = urlsplit(self.path)
        path = unquote(url.path)
        self.hub.requests.append((self.command, path))
        api = re.fullmatch(r"/api/(models|datasets)/([^/]+/[^/]+)(?:/(revision|tree)/([^/]+)(?:/(.*))?)?", path)
        resolve = re.fullmatch(r"/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if api:
            kind, repo_id, what, rev, sub = api.groups()
            kind = kind[:-1]
        elif resolve:
            kind, repo_id, rev, sub = "dataset" if resolve.group(1) else "model", *resolve.groups()[1:]
            what = "resolve"
        else:
            return self._error(404, "NotFound", body)
        repo = self.hub.repos.get((kind, repo_id))
        if repo is None:
            return self._error(404, "RepoNotFound", body)
        if repo.token is not None and self.headers.get("Authorization") != f"Bearer {repo.token}":
            return self._error(401, "GatedRepo", body, repo)
        if (rev or "main") not in ("main", repo.sha):
            return self._error(404, "RevisionNotFound", body, repo)
        if what in (None, "revision"):
            info = {"id": repo_id, "sha": repo.sha, "private": False, "gated": repo.token is not None,
                    "siblings": [{"rfilename": p} for p in sorted(repo.files)]}
            return self._send(200, {"Content-Type": "application/json"}, json.dumps(info).encode(), body)
        if what == "tree":
            recursive = parse_qs(url.query).get("recursive", ["False"])[0].lower() == "true"
            return self._send(200, {"Content-Type": "application/json"}, json.dumps(self._tree(repo, sub, recursive)).encode(),
                              body)
        if sub not in repo.files:
            return self._error(404, "EntryNotFound", body, repo)
        self._file(repo, sub, body)

    def _tree(self, repo: Repo, sub: str | None, recursive: bool) -> list[dict]:
        prefix = f"{sub.strip('/')}/" if sub else ""
        files = [p for p in sorted(repo.files) if p.startswith(prefix)]
        if recursive:
            folders = sorted({"/".join(p.split("/")[:i]) for p in files for i in range(prefix.count("/") + 1, p.count("/") + 1)})
            return [{"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in folders] + [repo.entry(p) for p in files]
        direct = [p for p in files if "/" not in p[len(prefix):]]
        folders = sorted({prefix + p[len(prefix):].split("/")[0] for p in files if "/" in p[len(prefix):]})
        return [{"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in folders] + [repo.entry(p) for p in direct]

    def _file(self, repo: Repo, name: str, body: bool):
        data, entry = repo.files[name], repo.entry(name)
        headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{entry["oid"]}"', "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if "lfs" in entry:
            headers.update({"X-Linked-Etag": f'"{entry["lfs"]["oid"]}"', "X-Linked-Size": str(len(data))})
        start = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if start and body:
            offset = int(start.group(1))
            headers["Content-Range"] = f"bytes {offset}-{len(data) - 1}/{len(data)}"
            return self._send(206, headers, data[offset:], body)
        if not body:  # HEAD: the size of the body a GET would send, and no body
            self.send_response(200)
            for key, value in {**headers, "Content-Length": str(len(data))}.items():
                self.send_header(key, value)
            self.end_headers()
            return
        self._send(200, headers, data, body)


class MockHub:
    """The server; a context manager that starts it on a free port of 127.0.0.1 and stops it."""

    def __init__(self):
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str]] = []
        handler = type("Handler", (_Handler,), {"hub": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "MockHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()

    def add(self, kind: str, repo_id: str, folder: Path | None = None, extra: dict[str, bytes] | None = None,
            token: str | None = None) -> Repo:
        """Serve every file below ``folder`` (plus ``extra``: path -> bytes) as repository ``repo_id``."""
        files = {**(_read_folder(folder) if folder else {}), **(extra or {})}
        self.repos[(kind, repo_id)] = repo = Repo(kind, repo_id, files, token)
        return repo

    def env(self, hf_home: Path, offline: bool = False, **extra: str) -> dict[str, str]:
        """The environment of a process that talks to this hub (or, ``offline``, to its cache only)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("HF_", "HUGGINGFACE_")) and k not in ("TRANSFORMERS_OFFLINE", "TRANSFORMERS_CACHE")}
        no_proxy = ",".join(x for x in ("127.0.0.1", "localhost", env.get("NO_PROXY")) if x)
        env.update({"HF_ENDPOINT": self.url, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1" if offline else "0",
                    "HF_HUB_DISABLE_TELEMETRY": "1", "NO_PROXY": no_proxy, "no_proxy": no_proxy, **extra})
        return env


def serve_benchmarks(hub: MockHub) -> None:
    """Each fixture mirror as the repository lmms-eval reads, plus a split no run here asks for."""
    for bench in ("vqav2", "gqa", "textvqa", "okvqa", "vizwiz", "docvqa"):
        module = registry.BENCHMARKS[bench]
        folder = BENCHMARK_FIXTURES / bench / "parquet"
        decoy = {"data/test-00000-of-00001.parquet": next(folder.rglob("*.parquet")).read_bytes()}
        hub.add("dataset", module.HUB_REPO, folder, extra=decoy)
