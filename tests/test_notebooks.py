"""The notebooks: committed without outputs, and each one runs top to bottom against the small run."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_three_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == [
        "01_train_and_watch_it_grok.ipynb",
        "02_fourier_circuit.ipynb",
        "03_progress_measures_and_efficiency.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: outputs committed"


@pytest.fixture(scope="module")
def notebook_run(small_run, tmp_path_factory):
    """A private copy of the small run: the notebooks analyse it (and notebook 1 resumes it, a no-op)."""
    dst = tmp_path_factory.mktemp("notebooks") / "small"
    shutil.copytree(small_run, dst)
    return dst


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, notebook_run, monkeypatch):
    # the kernel inherits the environment: the run to use, and this checkout first on the path
    monkeypatch.setenv("INTERP_RUN", str(notebook_run))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    # every figure cell produced a plotly figure
    figures = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
               if o.output_type in ("execute_result", "display_data") and "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert figures, "no plotly figure was displayed"
