"""`make lab` for real: JupyterLab serves notebook 01, headless Chromium opens it and runs every cell through the UI."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.browser import Chromium, find_chromium

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "01_train_and_watch_it_grok.ipynb"

# The open notebook's cells once 'Run All' has finished: type, execution count and output types.
CELLS_JS = """(() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const out = [];
  for (const cell of panel.content.model.cells) {
    out.push({type: cell.type, count: cell.type === 'code' ? cell.executionCount : null,
              outputs: cell.type === 'code' ? cell.outputs.toJSON() : []});
  }
  return out;
})()"""
READY_JS = """(() => {
  const app = window.jupyterapp;
  const panel = app && app.shell.currentWidget;
  return !!(panel && panel.content && panel.content.model && panel.sessionContext && panel.sessionContext.session
            && panel.sessionContext.session.kernel && panel.sessionContext.session.kernel.status === 'idle');
})()"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"jupyter lab did not answer {url} in {timeout} s")


@pytest.fixture
def lab_run(small_run, tmp_path):
    """A private copy of the small run (notebook 01 resumes it: a no-op) and a server root holding notebook 01."""
    run = tmp_path / "small"
    shutil.copytree(small_run, run)
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, root / NOTEBOOK)  # the server autosaves outputs into its copy
    return run, root


@pytest.mark.integration
@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")
def test_jupyterlab_runs_notebook_01_in_headless_chromium(lab_run, tmp_path):
    run, root = lab_run
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "INTERP_RUN": str(run), "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter_config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter_runtime"),
           "IPYTHONDIR": str(tmp_path / "ipython")}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}", "--port-retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
           "--allow-root", "--ServerApp.terminals_enabled=False", "--LabApp.extension_manager=readonly",
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    log = (tmp_path / "lab.log").open("wb")
    server = subprocess.Popen(cmd, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    browser = None
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_server(f"{base}/api/status?token={token}", server, timeout=60)
        browser = Chromium(find_chromium(), tmp_path / "profile", direct="127.0.0.1")
        browser.call("Page.navigate", session=True, url=f"{base}/lab/tree/{NOTEBOOK}?token={token}")
        deadline = time.time() + 90
        while not browser.evaluate(READY_JS):  # the app is up, the notebook open and its kernel idle
            assert time.time() < deadline, f"JupyterLab did not open the notebook; server log: {(tmp_path / 'lab.log').read_text()[-2000:]}"
            time.sleep(0.25)
        ran = browser.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')", timeout=240)
        assert ran is not False, "Run All was refused"
        cells = browser.evaluate(CELLS_JS)
    finally:
        if browser is not None:
            browser.close()
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    code = [c for c in cells if c["type"] == "code"]
    assert code and len(code) == sum(c.cell_type == "code" for c in __import__("nbformat").read(root / NOTEBOOK, 4).cells)
    assert [c["count"] for c in code] == list(range(1, len(code) + 1)), "every cell ran once, in order"
    errors = [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors, json.dumps(errors)[:2000]
    printed = "".join("".join(o.get("text", "")) for c in code for o in c["outputs"] if o["output_type"] == "stream")
    assert str(run) in printed and "memorised: step" in printed  # the notebook worked on the run it was given
    assert any("application/vnd.plotly.v1+json" in o.get("data", {}) for c in code for o in c["outputs"])
