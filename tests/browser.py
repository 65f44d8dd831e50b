"""Headless Chromium for the tests that open a page in a real browser (the report, JupyterLab).

``Chromium`` drives it through the DevTools protocol over ``--remote-debugging-pipe`` (no port, no
websocket library, no network); ``open_in_chromium`` loads a page and waits until every plotly
figure is drawn. ``find_chromium()`` is None where no Chromium is installed: those tests skip
(``.ci/run`` installs Debian's ``chromium``).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        if path := shutil.which(name):
            return path
    return None


def _high_fd(fd: int) -> int:
    """A duplicate of ``fd`` numbered 10 or more; ``fd`` is closed."""
    new = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return new


class Chromium:
    """Headless Chromium driven through the DevTools protocol over ``--remote-debugging-pipe``.

    The pipe (fd 3: commands in, fd 4: replies and events out, messages separated by NUL bytes)
    needs no port, no websocket library and no network. Every network request, console message
    and uncaught exception of the page is recorded.
    """

    def __init__(self, exe: str, profile: Path, width: int = 1280, height: int = 900, direct: str = "<-loopback>"):
        cmd_r, self._cmd_w = os.pipe()
        self._out_r, out_w = os.pipe()
        # move the child's ends clear of fds 3 and 4, which child_fds overwrites
        cmd_r, out_w = (_high_fd(fd) for fd in (cmd_r, out_w))
        self.log = profile.parent / f"{profile.name}.chromium.log"
        flags = [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
            "--disable-default-apps", "--mute-audio", "--no-default-browser-check", "--allow-file-access-from-files",
            # no network at all: every request goes to a proxy that is not there, except those to ``direct``
            # (by default none: "<-loopback>" sends even loopback requests to the proxy)
            "--proxy-server=127.0.0.1:9", f"--proxy-bypass-list={direct}",
            f"--user-data-dir={profile}", f"--window-size={width},{height}", "--remote-debugging-pipe", "about:blank",
        ]
        def child_fds() -> None:  # in the child, before exec: the pipe ends become fds 3 and 4
            os.dup2(cmd_r, 3)
            os.dup2(out_w, 4)

        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([exe, *flags], preexec_fn=child_fds, close_fds=False,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
        os.close(cmd_r)
        os.close(out_w)
        self._buf, self._id, self.events = b"", 0, []
        self.width, self.height = width, height
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height, deviceScaleFactor=1, mobile=False)

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.time()
            if left <= 0 or not select.select([self._out_r], [], [], left)[0]:
                raise TimeoutError("no message from Chromium")
            chunk = os.read(self._out_r, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium closed the DevTools pipe; its log: {self.log.read_text()[-2000:]}")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, session: bool = False, timeout: float = 30, **params) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + timeout
        while True:
            m = self._read_message(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_for_event(self, method: str, timeout: float = 30) -> dict:
        deadline = time.time() + timeout
        for m in self.events:
            if m.get("method") == method:
                return m
        while True:
            m = self._read_message(deadline)
            self.events.append(m)
            if m.get("method") == method:
                return m

    def evaluate(self, expression: str, timeout: float = 30):
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        r = self.call("Runtime.evaluate", session=True, timeout=timeout, expression=expression, returnByValue=True,
                      awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def requests(self) -> list[str]:
        return [m["params"]["request"]["url"] for m in self.events if m.get("method") == "Network.requestWillBeSent"]

    def console_errors(self) -> list[str]:
        out = []
        for m in self.events:
            method, p = m.get("method"), m.get("params", {})
            if method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
            elif method == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append(d.get("exception", {}).get("description") or d.get("text", "exception"))
            elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(p["entry"]["text"])
        return out

    def screenshot(self, path: Path) -> None:
        """A PNG of the whole page."""
        h = int(self.evaluate("document.documentElement.scrollHeight"))
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=self.width, height=h, deviceScaleFactor=1, mobile=False)
        time.sleep(1.0)  # plotly's responsive resize
        png = self.call("Page.captureScreenshot", session=True, format="png", captureBeyondViewport=True)["data"]
        Path(path).write_bytes(base64.b64decode(png))
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=self.width, height=self.height, deviceScaleFactor=1, mobile=False)

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - it may be gone already
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._cmd_w)
        os.close(self._out_r)


# Plots that plotly has drawn: a graph div with its SVG layers, a full layout and at least one trace
# element (a scatter/bar trace group or a heatmap image) inside.
RENDERED_JS = """
Array.from(document.querySelectorAll('div.plotly-graph-div')).filter(d =>
  d.classList.contains('js-plotly-plot') && d._fullLayout && d.querySelector('svg.main-svg') &&
  d.querySelectorAll('g.trace, g.hm image, .heatmaplayer image').length > 0).length
"""


def open_in_chromium(page: Path, profile: Path, screenshot: Path | None = None, timeout: float = 30) -> dict:
    """Load ``page`` in headless Chromium; wait until every figure is drawn; report what happened."""
    exe = find_chromium()
    browser = Chromium(exe, profile)
    try:
        t0 = time.time()
        browser.call("Page.navigate", session=True, url=page.resolve().as_uri())
        browser.wait_for_event("Page.loadEventFired", timeout=timeout)
        expected = browser.evaluate("document.querySelectorAll('div.plotly-graph-div').length")
        rendered = -1
        while time.time() - t0 < timeout:
            rendered = browser.evaluate(RENDERED_JS)
            if rendered == expected:
                break
            time.sleep(0.1)
        seconds = time.time() - t0
        time.sleep(0.5)  # let late console messages arrive
        browser.evaluate("1")
        result = {
            "expected": expected,
            "rendered": rendered,
            "seconds": seconds,
            "scroll_width": browser.evaluate("document.documentElement.scrollWidth"),
            "inner_width": browser.evaluate("window.innerWidth"),
            "errors": browser.console_errors(),
            "requests": [u for u in browser.requests() if not u.startswith(("file:", "data:", "blob:", "about:"))],
        }
        if screenshot is not None:
            browser.screenshot(screenshot)
        return result
    finally:
        browser.close()
