"""The HTML report: figures, offline page, CLI errors, several runs, and a real headless Chromium."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from interp import plots
from interp.analyze import load_analysis
from interp.report import CAPTIONS, COMPARE_FILE, RunView, efficiency_caption, main, write_report
from interp.runs import REPORT_FILE, ckpt_path
from interp.train import train
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
# one training + one progress + weights + efficiency + stability + mechanism figure, then per run: Fourier norms,
# W_E norms across training, neuron clusters, attention. The tiny runs (40 steps) have no key frequencies: no progress figure.
OVERLAY_FIGURES, PER_RUN_FIGURES = 6, 4
TINY_OVERLAY_FIGURES = OVERLAY_FIGURES - 1


def n_figures(page: str) -> int:
    return len(re.findall(r'<div id="fig-\d+-[a-z_]+" class="plotly-graph-div"', page))


@pytest.fixture(scope="module")
def tiny_copy(tiny_run, tmp_path_factory):
    """A private copy of the session's tiny run (the report writes into its run directory)."""
    dst = tmp_path_factory.mktemp("report") / "tiny"
    shutil.copytree(tiny_run, dst)
    return dst


@pytest.fixture(scope="module")
def small_copy(small_run, tmp_path_factory):
    dst = tmp_path_factory.mktemp("report") / "small"
    shutil.copytree(small_run, dst)
    return dst


# ---- the page -----------------------------------------------------------------------------------
def test_report_of_one_run(tiny_copy, capsys):
    assert main([str(tiny_copy), "--quiet"]) == 0
    out = tiny_copy / REPORT_FILE
    assert capsys.readouterr().out.startswith(str(out))
    page = out.read_text()
    assert n_figures(page) == TINY_OVERLAY_FIGURES + PER_RUN_FIGURES
    # offline: plotly.js inlined once, no external script, stylesheet or font
    assert not re.search(r"<script[^>]*\ssrc=", page) and "<link" not in page
    assert page.count("Plotly.newPlot") == n_figures(page)
    assert page.count("* plotly.js v") == 1 and len(page) > 3e6  # the library's own header, once
    # it says what produced it
    cfg = tiny_config()
    assert "tiny" in page and f"<td>{cfg.d_mlp}</td>" in page and "transformer-lens" in page and "git commit" in page
    # each figure has a caption; the analysis ran and was cached
    assert page.count("<figcaption>") == n_figures(page)
    rows, summary = load_analysis(tiny_copy)
    assert [r["step"] for r in rows] == [0, 10, 20, 30, 40]
    assert not list(tiny_copy.rglob("*.tmp"))


def test_out_and_several_runs_overlay(tiny_copy, tmp_path):
    other = train(tiny_config(lr=1e-2, seed=1), tmp_path / "tiny_lr", progress=False)
    out = tmp_path / "sub" / "compare.html"
    assert main([str(tiny_copy), str(other), "--out", str(out), "--quiet"]) == 0
    page = out.read_text()
    assert n_figures(page) == TINY_OVERLAY_FIGURES + 2 * PER_RUN_FIGURES
    assert not (other / REPORT_FILE).exists() and not (tiny_copy / COMPARE_FILE).exists()
    # without --out, several runs go to the first run's directory under their own name
    assert write_report([tiny_copy, other]) == tiny_copy / COMPARE_FILE
    # the overlaid figures hold one set of traces per run, named after it
    runs = {"a": load_analysis(tiny_copy)[0], "b": load_analysis(other)[0]}
    # circuit_efficiency: 7 curves, but a tiny run has no key frequency, so no C_gen parameters and no C_gen efficiency
    for fn, per_run in ((plots.training_curves, 4), (plots.progress_losses, 4), (plots.weight_measures, 3), (plots.circuit_efficiency, 6)):
        fig = fn(runs, {"a": {"memorised": 10}, "b": {"memorised": None}})
        metas = [t.meta for t in fig.data]
        assert metas.count("a") == per_run and metas.count("b") == per_run, fn.__name__
        assert all(t.name.startswith(f"{t.meta}: ") for t in fig.data)
        assert fig.layout.title.text
    assert {'"meta":"tiny"', '"meta":"tiny_lr"'} <= set(re.findall(r'"meta":"tiny(?:_lr)?"', page))


def test_captions_state_the_numbers_of_the_run_drawn(small_copy, tiny_copy):
    from analyses import fourier
    from interp import report
    from interp.analyze import fmt_set, fmt_step

    small = report.collect(small_copy)
    ph, s = small.summary["phases"], small.summary
    text = report.caption_training([small])
    assert f"first reaches 99% at step {fmt_step(ph['memorised'])}" in text and f"at step {fmt_step(ph['grokked'])}" in text
    text = report.caption_progress([small])
    assert f"smoothed peak (step {fmt_step(ph['cleanup_start'])})" in text and "9.4k" in text
    text = report.caption_neurons(small)
    n_key = sum(s["neurons_per_frequency"].values())
    assert (f"{n_key} of {small.run.config.d_mlp} are assigned" in text
            and f"{len(s['unclustered_neurons'])} are below" in text and f"{len(s['dead_neurons'])} are dead" in text)
    assert fmt_set(s["key_frequencies"]) in report.caption_fourier_norms(small)
    share = fourier.block_fraction(small.attention, small.keys)
    assert f"{share[0].item():.0%}" in report.caption_attention(small)
    # a run without key frequencies is not described as if it had them
    tiny = report.collect(tiny_copy)
    assert tiny.keys == [] and "No key frequency" in report.caption_progress([tiny])
    assert "No key frequency" in report.caption_fourier_norms(tiny)
    assert "0 of 64 are assigned" in report.caption_neurons(tiny)
    figs = report.overlay_figures([tiny])
    assert "progress" not in [f.key for f in figs]  # restricted/excluded loss are not drawn without key frequencies


def test_efficiency_caption_states_the_numbers_of_the_run_drawn():
    def row(step, gen, mem):
        return {"step": step, "cgen_efficiency": gen, "cmem_efficiency": mem}

    rows = [row(0, float("nan"), float("nan")), row(100, 0.25, 0.75), row(200, 0.5, 0.875), row(300, 1.5, 0.125)]
    view = RunView("r", None, {}, rows, {"fourier_applies": True, "cgen_more_efficient_from": 300}, [])
    caption = efficiency_caption([view])
    assert caption.startswith(CAPTIONS["efficiency"])
    assert "C_mem's efficiency peaks at 0.875 (step 200, C_gen 0.5); at step 300 C_mem's is 0.125 and C_gen's 1.5; " \
           "C_gen is the more efficient circuit from step 300 on." in caption
    view.summary["cgen_more_efficient_from"] = None
    other = RunView("s", None, {}, rows[:3], {"fourier_applies": True, "cgen_more_efficient_from": None}, [])
    caption = efficiency_caption([view, other])
    assert "r: C_mem's efficiency peaks" in caption and "s: C_mem's efficiency peaks at 0.875" in caption
    assert caption.count("C_gen is not the more efficient circuit at the last checkpoint") == 2
    assert efficiency_caption([RunView("m", None, {}, rows, {"fourier_applies": False}, [])]) == CAPTIONS["efficiency"]


def test_curves_are_thinned_and_labelled():
    rows = [{"step": s, "train_loss": 1.0 / (s + 1), "test_loss": 1.0, "train_acc": 0.5, "test_acc": float("nan")} for s in range(10_000)]
    fig = plots.training_curves({"r": rows}, {"r": {"memorised": 100, "grokked": None}})
    assert all(len(t.x) <= plots.MAX_POINTS and t.x[-1] == 9999 for t in fig.data)
    assert len(fig.data) == 3  # the all-NaN test accuracy is left out
    assert fig.layout.title.text and fig.layout.yaxis.type == "log" and fig.layout.xaxis2.title.text == "training step"
    assert [a.text for a in fig.layout.annotations] == ["memorised"]  # the one boundary reached, labelled
    assert len(fig.layout.shapes) == 2 and fig.layout.shapes[0].x0 == 100  # its line on both panels


def test_non_fourier_task_leaves_out_the_fourier_figures(tmp_path):
    run = train(tiny_config(task="x2_y2", steps=20), tmp_path / "x2_y2", progress=False)  # mod_mul: log basis (test_group_analysis)
    assert main([str(run), "--quiet"]) == 0
    page = (run / REPORT_FILE).read_text()
    assert "Fourier figures left out" in page
    assert n_figures(page) == 4  # loss/accuracy, sum of squared weights, float32 stability, attention (no clock/pizza)


# ---- the command line ---------------------------------------------------------------------------
def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("python -m interp.report: error: ")
    return lines[0]


def test_missing_run_directory_exit_2_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "interp.report", str(tmp_path / "nope")], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert "nope" in _one_error_line(r.stderr)
    assert not list(tmp_path.iterdir())


def test_not_a_run_and_corrupt_checkpoint_exit_2(tiny_run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2
    assert "config.json" in _one_error_line(capsys.readouterr().err)

    broken = tmp_path / "broken"
    shutil.copytree(tiny_run, broken)
    shutil.rmtree(broken / "analysis", ignore_errors=True)
    ckpt_path(broken, 20).write_bytes(b"not a safetensors file")
    out = tmp_path / "r.html"
    assert main([str(broken), "--out", str(out), "--quiet"]) == 2
    assert "step_000020" in _one_error_line(capsys.readouterr().err)
    assert not out.exists() and not (broken / REPORT_FILE).exists()

    assert main([str(tiny_run), "--out", str(tmp_path)]) == 2  # a directory is not an output file
    _one_error_line(capsys.readouterr().err)


def test_out_never_overwrites_a_file_that_is_not_a_report(tiny_copy, tmp_path, capsys):
    notes = tmp_path / "notes.html"
    notes.write_text("<html>my notes</html>")
    assert main([str(tiny_copy), "--out", str(notes), "--quiet"]) == 2
    assert "not a report" in _one_error_line(capsys.readouterr().err) and notes.read_text() == "<html>my notes</html>"
    out = tmp_path / "report.html"
    assert main([str(tiny_copy), "--out", str(out), "--quiet"]) == 0
    out.write_text(out.read_text().replace("Generated ", "Generated before: "))
    assert main([str(tiny_copy), "--out", str(out), "--quiet"]) == 0  # a report is replaced
    assert "Generated before: " not in out.read_text()


# ---- a real browser -----------------------------------------------------------------------------
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


@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")
def test_report_renders_in_headless_chromium(small_copy, tmp_path):
    out = tmp_path / "report.html"
    assert main([str(small_copy), "--out", str(out), "--quiet"]) == 0
    n = n_figures(out.read_text())
    assert n == OVERLAY_FIGURES + PER_RUN_FIGURES
    shot_dir = os.environ.get("INTERP_SCREENSHOT_DIR")
    shot = Path(shot_dir) / "report_small.png" if shot_dir else tmp_path / "report.png"
    r = open_in_chromium(out, tmp_path / "profile", screenshot=shot)
    assert r["expected"] == n and r["rendered"] == n, r
    assert r["errors"] == [], r["errors"]
    assert r["requests"] == [], r["requests"]  # nothing fetched from the network
    assert r["scroll_width"] <= r["inner_width"], r  # no sideways scrolling at 1280 px
    assert r["seconds"] < 20, r
    assert shot.stat().st_size > 50_000  # a real page, not a blank one


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / "checkpoints/mod_add_p113/config.json").is_file(), reason="no default p = 113 run (make run)")
@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed")
def test_report_of_the_default_run_is_small_and_fast(tmp_path):
    out = tmp_path / "p113.html"
    t = time.time()
    assert main([str(ROOT / "checkpoints/mod_add_p113"), "--out", str(out), "--quiet"]) == 0
    build_s = time.time() - t
    assert out.stat().st_size < 15e6
    r = open_in_chromium(out, tmp_path / "profile")
    llc_figure = (ROOT / "checkpoints/mod_add_p113/analysis/llc.csv").is_file()  # drawn when interp.analyze --llc has run
    assert r["rendered"] == r["expected"] == OVERLAY_FIGURES + PER_RUN_FIGURES + llc_figure and not r["errors"] and not r["requests"], r
    assert r["seconds"] < 10, (r, build_s)
