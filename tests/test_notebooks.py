"""The notebooks: committed without outputs, and each one runs top to bottom against the small run."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from interp.analyze import load_analysis

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_four_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == [
        "01_train_and_watch_it_grok.ipynb",
        "02_fourier_circuit.ipynb",
        "03_progress_measures_and_efficiency.ipynb",
        "04_circuit_efficiency.ipynb",
    ]


def check_circuit_efficiency(nb, run_dir):
    """Notebook 4's efficiencies by hand are the analysis table's, and its norms add up."""
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "stream")
    rows, summary = load_analysis(run_dir)
    final = rows[-1]
    found = re.findall(r"(cgen|cmem)_efficiency at step (\d+): by hand (\S+), analysis table (\S+)", text)
    assert [c for c, *_ in found] == ["cgen", "cmem"], text
    for c, step, by_hand, table in found:
        assert int(step) == final["step"]
        assert float(table) == final[f"{c}_efficiency"]
        assert float(by_hand) == pytest.approx(final[f"{c}_efficiency"], rel=1e-5)  # float32 forward vs fast path
    squares, total = re.search(r"sum of the three squared: (\S+); sum of squared weights: (\S+)", text).groups()
    assert float(squares) == pytest.approx(float(total), rel=1e-9) and float(total) == pytest.approx(final["sum_sq_weights"], rel=1e-9)
    more = summary["cgen_more_efficient_from"]
    assert (f"C_gen is the more efficient circuit from step {more} on" if more is not None
            else "C_gen is not the more efficient circuit at the last checkpoint") in text


CHECKS = {"04_circuit_efficiency": check_circuit_efficiency}  # what a notebook prints, checked against the library


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
    if path.stem in CHECKS:
        CHECKS[path.stem](nb, notebook_run)
