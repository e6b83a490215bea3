"""Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``):
no port, no driver binary, the standard library only. Messages are JSON separated by NUL bytes;
Chromium reads fd 3 and writes fd 4.

    binary = chromium_or_reason()          # (path, None), or (None, why it is missing)
    with Browser(binary) as browser:
        page = browser.open(Path("report.html"))      # returns after the load event
        page.evaluate("document.images.length")       # a JSON value
        page.requests                                 # every URL the page asked for, data: ones too
        page.screenshot()                             # PNG bytes of the whole page
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         "--window-size=1280,900", "--remote-debugging-pipe"]
NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_or_reason(install: bool = True) -> tuple[str | None, str | None]:
    """A Chromium binary, installed with apt-get (Debian package ``chromium``) when missing and
    possible; else None and the reason."""
    found = next((shutil.which(n) for n in NAMES if shutil.which(n)), None)
    if found or not install:
        return found, None if found else f"no {' / '.join(NAMES)} on PATH"
    if not shutil.which("apt-get") or os.geteuid() != 0:
        return None, "Chromium is not installed and cannot be here (needs root and apt-get: apt-get install -y chromium)"
    said = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    found = shutil.which("chromium")
    if found:
        return found, None
    last = (said.stderr.strip().splitlines() or said.stdout.strip().splitlines() or ["no output"])[-1]
    return None, f"apt-get install -y chromium failed (exit {said.returncode}): {last}"


class Page:
    def __init__(self, browser: "Browser", session: str):
        self.browser, self.session = browser, session
        self.requests: list[str] = []

    def call(self, method: str, **params):
        return self.browser.call(method, params, self.session)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def screenshot(self) -> bytes:
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)
        return base64.b64decode(shot["data"])


class Browser:
    def __init__(self, binary: str, timeout: float = 60):
        self.binary, self.timeout = binary, timeout
        self._next = 0
        self._buffer = b""
        self.events: list[dict] = []

    def __enter__(self) -> "Browser":
        self._profile = tempfile.TemporaryDirectory(prefix="layerprobe-chromium-")
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()

        def child_fds():  # fds 3 and 4 (pass_fds keeps them), via fds above 4 so neither overwrites the other
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser, from_browser)]
            for target, fd in zip((3, 4), high):
                os.dup2(fd, target)

        self.process = subprocess.Popen([self.binary, *FLAGS, f"--user-data-dir={self._profile.name}", "about:blank"],
                                        preexec_fn=child_fds, pass_fds=(3, 4), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.call("Browser.close")
            self.process.wait(timeout=20)
        except Exception:
            self.process.kill()
            self.process.wait()
        finally:
            os.close(self._write)
            os.close(self._read)
            self._profile.cleanup()

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise TimeoutError(f"Chromium did not answer within {self.timeout} s")
            chunk = os.read(self._read, 1 << 16)
            if not chunk:
                raise RuntimeError(f"Chromium closed the pipe (exit code {self.process.poll()})")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next += 1
        message = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def open(self, path: Path) -> Page:
        """A new tab on ``path``, after its load event; its requests are recorded from the start."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        page = Page(self, self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"])
        page.call("Page.enable")
        page.call("Network.enable")
        self.events.clear()
        page.call("Page.navigate", url=Path(path).resolve().as_uri())
        deadline = time.monotonic() + self.timeout
        while not any(e.get("method") == "Page.loadEventFired" and e.get("sessionId") == page.session
                      for e in self.events):
            self.events.append(self._receive(deadline))
        page.requests = [e["params"]["request"]["url"] for e in self.events
                         if e.get("method") == "Network.requestWillBeSent" and e.get("sessionId") == page.session]
        return page
