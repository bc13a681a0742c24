"""Open a local HTML file in a real headless Chromium over the DevTools protocol (no Playwright, no downloads).

`load_page(path)` starts Chromium on a loopback debugging port, loads the page, waits for its load event and
returns what a person would notice: console errors, uncaught exceptions, failed resources, every <img>
with its natural size (0 means the browser could not decode it), and every <video> once its metadata loaded or
failed (readyState >= 1, no error, a duration and a picture size mean the browser can play it).
Optionally at a given window size (`width`, `height`), with the values of JS expressions (`evaluate`, each
JSON-serialisable, promises awaited) and a PNG screenshot of the whole page (`screenshot`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
APT_HINT = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium"


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageResult:
    title: str
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    images: list[dict] = field(default_factory=list)  # {"alt", "naturalWidth", "naturalHeight", "complete"}
    videos: list[dict] = field(default_factory=list)  # {"src", "readyState", "error", "duration", "width", "height"}
    values: dict = field(default_factory=dict)  # name -> value of each `evaluate` expression


def _devtools_port(profile: Path, proc: subprocess.Popen, timeout: float) -> int:
    """Chromium writes the port it picked (for --remote-debugging-port=0) into DevToolsActivePort."""
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker.is_file():
            lines = marker.read_text().splitlines()
            if lines and lines[0].strip().isdigit():
                return int(lines[0])
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with status {proc.returncode}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    raise TimeoutError("chromium did not open its DevTools port")


def load_page(path: Path, timeout: float = 60.0, *, width: int | None = None, height: int = 900,
              evaluate: dict[str, str] | None = None, screenshot: Path | None = None) -> PageResult:
    from websockets.sync.client import connect

    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError(f"no Chromium binary ({', '.join(CHROMIUM_NAMES)}); install it: {APT_HINT}")
    # Chromium's helper processes (crashpad, renderers) can still write into the profile for a moment after the
    # browser exits: a profile left behind must not fail the page check (seen once on CI's 2 cores).
    with tempfile.TemporaryDirectory(prefix="ltx-chromium-", ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--no-first-run", "--no-default-browser-check", "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            port = _devtools_port(Path(profile), proc, timeout)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            with connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=timeout) as ws:
                return _drive(ws, Path(path).resolve().as_uri(), timeout, width=width, height=height,
                              evaluate=evaluate or {}, screenshot=screenshot)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _drive(ws, url: str, timeout: float, *, width: int | None, height: int, evaluate: dict[str, str],
           screenshot: Path | None) -> PageResult:
    next_id = 0
    errors: list[str] = []

    def note(msg: dict) -> None:
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append(f"exception: {details.get('text', '')} {details.get('exception', {}).get('description', '')}")
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            errors.append("log: " + params["entry"].get("text", ""))

    def call(method: str, params: dict | None = None) -> dict:
        nonlocal next_id
        next_id += 1
        ws.send(json.dumps({"id": next_id, "method": method, "params": params or {}}))
        while True:
            msg = json.loads(ws.recv(timeout=timeout))
            if msg.get("id") == next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            note(msg)

    for domain in ("Runtime", "Log", "Page"):
        call(f"{domain}.enable")
    if width is not None:  # the layout viewport a window of this size gives (scrollbars included, as in a browser)
        call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                     "mobile": False})
    call("Page.navigate", {"url": url})
    deadline = time.monotonic() + timeout
    while True:
        msg = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        note(msg)
        if msg.get("method") == "Page.loadEventFired":
            break
    probe = ("JSON.stringify({title: document.title, images: Array.from(document.images).map(i => ({alt: i.alt, "
             "naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight, complete: i.complete}))})")
    value = json.loads(call("Runtime.evaluate", {"expression": probe, "returnByValue": True})["result"]["value"])
    videos = json.loads(call("Runtime.evaluate", {"expression": _VIDEO_PROBE, "awaitPromise": True,
                                                  "returnByValue": True})["result"]["value"])
    values = {}
    for name, expression in evaluate.items():
        res = call("Runtime.evaluate", {"expression": f"Promise.resolve({expression}).then(v => JSON.stringify(v))",
                                        "awaitPromise": True, "returnByValue": True})
        if "exceptionDetails" in res:
            raise RuntimeError(f"{name}: {res['exceptionDetails']}")
        values[name] = json.loads(res["result"]["value"])
    if screenshot is not None:
        import base64

        shot = call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
    return PageResult(value["title"], errors, value["images"], videos, values)


# Resolves once every <video> has loaded its metadata, failed, or 20 s passed.
_VIDEO_PROBE = """
Promise.all(Array.from(document.querySelectorAll('video')).map(v => new Promise(resolve => {
  const done = () => resolve({src: v.currentSrc, readyState: v.readyState, error: v.error ? v.error.code : null,
                              duration: v.duration, width: v.videoWidth, height: v.videoHeight});
  if (v.readyState >= 1 || v.error) return done();
  v.addEventListener('loadedmetadata', done, {once: true});
  v.addEventListener('error', done, {once: true});
  v.querySelectorAll('source').forEach(s => s.addEventListener('error', done, {once: true}));
  if (v.preload === 'none') v.load();
  setTimeout(done, 20000);
}))).then(r => JSON.stringify(r))
"""
