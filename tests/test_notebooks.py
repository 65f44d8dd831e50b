"""The notebooks: committed without outputs; each runs top to bottom against the small run and prints what
interp.analyze finds on it."""

from __future__ import annotations

import csv
import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from interp.analyze import analyze_run

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_notebooks_are_there():
    assert [p.name for p in NOTEBOOKS] == [
        "01_train_and_watch_it_grok.ipynb",
        "02_fourier_circuit.ipynb",
        "03_progress_measures_and_efficiency.ipynb",
        "04_circuit_efficiency.ipynb",
        "05_stability_mechanism_llc.ipynb",
        "06_groups.ipynb",
        "07_mlp_and_depth.ipynb",
        "08_phase_changes.ipynb",
        "09_beyond_algorithms.ipynb",
    ]


def check_04(text: str, rows: list[dict], summary: dict) -> None:
    """Notebook 4's efficiencies by hand are the analysis table's, and its norms add up."""
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
    # the D_crit section: what it prints is what the experiment's summary.csv and members.csv hold
    dcrit_dir = Path(os.environ["INTERP_DCRIT"])
    with open(dcrit_dir / "summary.csv", newline="") as f:
        dsum = list(csv.DictReader(f))
    with open(dcrit_dir / "members.csv", newline="") as f:
        fams = [m["family"] for m in csv.DictReader(f)]
    assert f"{fams.count('C_mem')} C_mem-only and {fams.count('C_gen')} C_gen-only members" in text
    primary = next(r for r in dsum if r["row"] == "D_crit" and r["primary"] == "True")
    line = re.search(r"^primary  D_crit by parameter norm at train loss \S+: (.*)$", text, re.M).group(1)
    expected = {"crossed": f"{float(primary['dcrit'] or 'nan'):.0f} (90% interval {float(primary['dcrit_lo'] or 'nan'):.0f}-"
                           f"{float(primary['dcrit_hi'] or 'nan'):.0f}",
                "below grid": f"below the grid (< {float(primary['dcrit_hi'] or 'nan'):.0f})",
                "above grid": f"above the grid (> {float(primary['dcrit_lo'] or 'nan'):.0f})",
                "no trend": "no estimate; C_mem's slope", "too few points": "no estimate; too few unflagged members"}[primary["status"]]
    assert line.startswith(expected), (line, primary)
    for r in dsum:
        if r["row"] != "D_crit":
            assert re.search(rf"^{r['row']}\s+{r['wd']}\s+{r['D']}\s+{r['seeds']}\s+{r['used']}\s", text, re.M), r
    # the ungrokking section: one printed line per summary row, and the caption generated from them
    ungrok_dir = Path(os.environ["INTERP_UNGROK"])
    with open(ungrok_dir / "summary.csv", newline="") as f:
        usum = list(csv.DictReader(f))
    printed = re.findall(r"^\s*(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", text, re.M)
    assert [(float(w), int(d), int(n), int(b), float(med), float(lo), float(hi)) for w, d, n, b, med, lo, hi, _ in printed] == [
        (float(r["wd"]), int(r["train_size"]), int(r["seeds"]), int(r["budget"]), round(float(r["median_final_test_acc"]), 3),
         round(float(r["min_final_test_acc"]), 3), round(float(r["max_final_test_acc"]), 3)) for r in usum]
    from interp.experiments import ungrok
    assert ungrok.figures(ungrok_dir)[0].caption in text


@pytest.fixture(scope="module")
def tiny_ungrok(tmp_path_factory):
    """An ungrok experiment directory with known curves (tests/test_ungrok.py's fake) and its summary.csv."""
    from test_ungrok import fake_ungrok

    from interp.experiment import write_summary
    from interp.experiments import ungrok

    out = tmp_path_factory.mktemp("ungrok")
    fake_ungrok(out)
    write_summary(out, ungrok.summarise(out))
    return out


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


def _printed(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "stream")


def _phases_printed(text: str, pattern: str) -> dict:
    out = {}
    for m in re.finditer(pattern, text, re.M):
        out[m.group(1)] = None if m.group(2) in ("None", "not reached") else int(m.group(2))
    return out


def check_01(text: str, rows: list[dict], summary: dict) -> None:
    assert _phases_printed(text, r"^\s*(\S+): (?:step\s+)?(\d+|not reached)\b") == summary["phases"]
    metrics_peak = max(rows, key=lambda r: r["test_loss"])  # the analysis recomputes the run's own losses
    assert f"highest {metrics_peak['test_loss']:.3g} at step {metrics_peak['step']}" in text


def check_02(text: str, rows: list[dict], summary: dict) -> None:
    keys = re.search(r"^key frequencies: \[([\d, ]*)\]", text, re.M).group(1)
    assert [int(k) for k in keys.split(",")] == summary["key_frequencies"]
    n = len(summary["unclustered_neurons"]), len(summary["dead_neurons"])
    assert f"{n[0]} below the threshold, {n[1]} dead" in text
    final = rows[-1]
    m = re.search(r"test loss: full logits (\S+), key frequencies only \(restricted\) (\S+)", text)
    assert float(m.group(1)) == pytest.approx(final["test_loss"], rel=5e-3)
    assert float(m.group(2)) == pytest.approx(final["restricted_loss"], rel=5e-3)
    m = re.search(r"train loss with the key frequencies removed \(excluded\): (\S+)", text)
    assert float(m.group(1)) == pytest.approx(final["excluded_loss"], rel=5e-3)


def check_03(text: str, rows: list[dict], summary: dict) -> None:
    keys = re.search(r"key frequencies \(final checkpoint, neuron clustering\): \[([\d, ]*)\]", text).group(1)
    assert [int(k) for k in keys.split(",")] == summary["key_frequencies"]
    assert _phases_printed(text, r"^\s+(\S+): (\d+|None)   \(") == summary["phases"]
    start = rows[0]
    m = re.search(r"^\s+start\s+0\s+(\S+)\s+(\S+)", text, re.M)  # the table's first row: train and test loss
    assert (float(m.group(1)), float(m.group(2))) == pytest.approx((start["train_loss"], start["test_loss"]), rel=1e-3)


def check_06(text: str, rows: list[dict], summary: dict) -> None:
    """Notebook 6 prints the group run's and the mod_mul run's analysis (the runs of ``group_runs``)."""
    from interp.analyze import load_analysis

    grows, gsum = load_analysis(os.environ["INTERP_GROUP_RUN"])
    mrows, msum = load_analysis(os.environ["INTERP_MUL_RUN"])
    assert re.search(r"^key irreps: (\[.*?\]) =", text, re.M).group(1) == str(gsum["key_irreps"])
    hom, orth = re.search(r"max \|rho\(gh\) - rho\(g\) rho\(h\)\| = (\S+); max \|<chi_i, chi_j> - delta_ij\| = (\S+)", text).groups()
    assert float(hom) < 1e-9 and float(orth) < 1e-9
    assert f"primitive root: {msum['primitive_root']}" in text and f"key log-frequencies: {msum['key_irreps']}" in text
    printed = re.findall(r"at step (\d+): test loss (\S+), restricted loss (\S+), excluded loss ([^,\s]+)", text)
    assert len(printed) == 2, text
    for final, (step, *losses) in zip((grows[-1], mrows[-1]), printed):
        assert int(step) == final["step"]
        assert [float(x) for x in losses] == pytest.approx([final["test_loss"], final["restricted_loss"], final["excluded_loss"]], rel=1e-3)




@pytest.fixture(scope="module")
def group_runs(tmp_path_factory):
    """A tiny s4 run and a tiny mod_mul run (notebook 6 reads them)."""
    from interp.train import train
    from tests.conftest import tiny_config

    d = tmp_path_factory.mktemp("groups")
    return (train(tiny_config(task="s4", p=24, steps=30), d / "s4", progress=False),
            train(tiny_config(task="mod_mul", steps=30), d / "mod_mul", progress=False))


@pytest.fixture(scope="module")
def mlp_runs(tmp_path_factory):
    """Tiny runs of the S5 and devinterp MLP presets' shapes (notebook 7 reads them)."""
    from interp.config import PRESETS, TrainConfig
    from interp.train import train

    d = tmp_path_factory.mktemp("mlps")
    small = dict(steps=40, eval_every=10, save_every=10)
    return (train(TrainConfig(task="s4", **{**PRESETS["s5-mlp"], "d_model": 16, "d_mlp": 32, **small}), d / "s4", progress=False),
            train(TrainConfig(task="mod_add", **{**PRESETS["devinterp-mlp"], "p": 13, **small}), d / "mod_add", progress=False))
def check_05(text: str, rows: list[dict], summary: dict) -> None:
    """Notebook 5's by-hand stability and gradient symmetricity are the table's; its sentences are the library's."""
    from interp import llc
    from interp.text import mechanism_sentence, stability_sentence

    final = rows[-1]
    found = re.findall(r"^(\w+) at step (\d+): by hand (\S+), analysis table (\S+)$", text, re.M)
    assert [k for k, *_ in found] == ["softmax_collapse_frac", "zero_loss_frac", "min_train_margin", "grad_symmetricity"], text
    for k, step, by_hand, table in found:
        assert int(step) == final["step"] and float(table) == pytest.approx(final[k], rel=1e-5)
        assert float(by_hand) == pytest.approx(final[k], rel=1e-4, abs=1e-9)
    assert stability_sentence(rows, summary) in text and mechanism_sentence(rows, summary) in text
    llc_rows, meta = llc.load_llc(os.environ["INTERP_RUN"])
    assert llc_rows and meta["settings"]["draws"] == int(os.environ["INTERP_LLC_DRAWS"])
    assert llc.llc_sentence(llc_rows, rows, meta) in text
    for r in llc_rows:
        assert f"step {r['step']:>6}: llc {r['llc_mean']:.4g} ± {r['llc_std']:.3g}, nβ {r['n_beta']:.4g}" in text and r["rule"] == "forced"


def check_07(text: str, rows: list[dict], summary: dict) -> None:
    """Notebook 7's by-hand percent_x_embed is the table's x_embed_frac; its keys and LLC rows are the library's."""
    from interp import llc
    from interp.analyze import load_analysis, load_irrep_table

    s5, mlp = os.environ["INTERP_S5_MLP_RUN"], os.environ["INTERP_MLP_RUN"]
    _, ssum = load_analysis(s5)
    assert re.search(r"^key irreps: (\[.*?\]) =", text, re.M).group(1) == str(ssum["key_irreps"])
    shares = re.findall(r"^(\S.*?)\s+(\d\.\d{4})\s+(\d\.\d{4})$", text, re.M)
    final = [r for r in load_irrep_table(s5) if r["step"] == max(x["step"] for x in load_irrep_table(s5))]
    assert len(shares) == len(final) == len(ssum["irreps"]), text
    for (name, by_hand, table), r in zip(shares, final):
        assert name == ssum["irreps"][r["irrep"]] and float(table) == pytest.approx(r["x_embed_frac"], abs=1e-4)
        assert float(by_hand) == pytest.approx(float(table), abs=2e-4)  # Chughtai's QR basis = the isotypic basis
    assert sum(float(t) for _, _, t in shares) == pytest.approx(1.0, abs=1e-3)
    mrows, msum = load_analysis(mlp)
    assert f"key frequencies: {msum['key_frequencies']}; embedding check: {msum['key_frequencies_embedding']}" in text
    assert f"by hand from the hidden activations: key frequencies {msum['key_frequencies']}" in text
    llc_rows, meta = llc.load_llc(mlp)
    assert llc_rows and meta["settings"]["draws"] == int(os.environ["INTERP_LLC_DRAWS"])
    for r in llc_rows:
        assert f"step {r['step']:>6}: llc {r['llc_mean']:.4g}," in text


@pytest.fixture(scope="module")
def sequence_runs(tmp_path_factory):
    """Tiny runs of the 5-digit addition and repeated-subsequence presets' shapes (notebook 8 reads them)."""
    from interp.config import PRESETS, TrainConfig
    from interp.train import train

    d = tmp_path_factory.mktemp("sequences")
    small = dict(d_model=32, d_mlp=64, steps=40, eval_every=10, save_every=10, train_size=64, lr=3e-3)
    return (train(TrainConfig(task="add5", **{**PRESETS["add5"], **small}), d / "add5", progress=False),
            train(TrainConfig(task="repeat_subseq", **{**PRESETS["repeat_subseq"], **small}), d / "repeat", progress=False))


def check_08(text: str, rows: list[dict], summary: dict) -> None:
    """Notebook 8's by-hand per-position losses, carry split, head scores (and ablated losses) are the library's."""
    from interp.analyze import load_analysis

    found = re.findall(r"^answer (\d) \(position \d+\): by hand (\S+), metrics.jsonl (\S+)$", text, re.M)
    assert len(found) == 6, text
    for _, hand, table in found:
        assert float(hand) == pytest.approx(float(table), rel=1e-5, abs=1e-9)
    carry = re.findall(r"^answer (\d): carry (\S+) / no carry (\S+); table (\S+) / (\S+)$", text, re.M)
    assert len(carry) == 6
    for _, c, nc, tc, tnc in carry:
        for hand, table in ((c, tc), (nc, tnc)):
            assert (hand == table == "nan") or float(hand) == pytest.approx(float(table), abs=2e-4)
    _, asum = load_analysis(os.environ["INTERP_ADD5_RUN"])
    assert f"summary.json position_falls: {asum['position_falls']}" in text
    assert f"steepest fall of each answer position's test loss: {asum['position_falls']}" in text
    heads = re.findall(r"^L(\d)H(\d): induction by hand (\S+), heads.csv (\S+); previous token by hand (\S+), heads.csv (\S+)$", text, re.M)
    assert len(heads) == 2 * 4, text
    for *_, ind, ind_t, prev, prev_t in heads:
        assert float(ind) == pytest.approx(float(ind_t), abs=2e-4) and float(prev) == pytest.approx(float(prev_t), abs=2e-4)
    _, rsum = load_analysis(os.environ["INTERP_REPEAT_RUN"])
    if rsum["induction_heads"]:
        for what in ("train", "test"):
            hand, table = re.search(rf"^{what} loss with the induction heads ablated: by hand (\S+), table (\S+)", text, re.M).groups()
            assert float(hand) == pytest.approx(float(table), rel=1e-4)
    else:
        assert "nothing to ablate" in text


@pytest.fixture(scope="module")
def beyond_runs(tmp_path_factory):
    """Tiny teacher-student, digits and two-layer polynomial runs (notebook 9 reads them)."""
    from interp.config import TrainConfig
    from interp.train import train

    d = tmp_path_factory.mktemp("beyond")
    common = dict(steps=40, eval_every=10, save_every=10)
    return (train(TrainConfig(task="teacher", d_mlp=16, act_fn="tanh", freeze_biases=False, lr=3e-3, **common), d / "teacher", progress=False),
            train(TrainConfig(task="digits", train_size=200, d_mlp=16, lr=3e-3, loss="mse", **common), d / "digits", progress=False),
            train(TrainConfig(task="poly", d_mlp=20, optimizer="sgd", lr=20.0, wd=0.0, **common), d / "poly", progress=False))


def check_09(text: str, rows: list[dict], summary: dict) -> None:
    """Notebook 9's accuracy, local complexity and kernel alignment by hand are the library's."""
    acc = re.findall(r"^(train|test) accuracy at step \d+: by hand (\S+), metrics.jsonl (\S+)$", text, re.M)
    assert [a for a, *_ in acc] == ["train", "test"], text
    for _, hand, table in acc:
        assert float(hand) == pytest.approx(float(table), abs=1e-4)
    lc = re.findall(r"^point \d: by hand (\[.*\]), analyses.local_complexity (\[.*\])$", text, re.M)
    assert len(lc) == 5 and all(a == b for a, b in lc), text
    assert len(re.findall(r"^step +\d+: local complexity train", text, re.M)) >= 2
    al = re.findall(r"^step +\d+: alignment by hand (\S+), analysis table (\S+)$", text, re.M)
    assert len(al) == 2, text
    for hand, table in al:
        assert float(hand) == pytest.approx(float(table), abs=1e-4)


CHECKS = {"01": check_01, "02": check_02, "03": check_03, "04": check_04, "05": check_05, "06": check_06, "07": check_07,
          "08": check_08, "09": check_09}  # what a notebook prints vs the library


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_and_prints_what_the_analysis_finds(path, notebook_run, tiny_dcrit, tiny_ungrok, group_runs, mlp_runs,
                                                             sequence_runs, beyond_runs, monkeypatch):
    # the kernel inherits the environment: the run (and dcrit, ungrok experiments) to use, and this checkout first on the path
    monkeypatch.setenv("INTERP_RUN", str(notebook_run))
    monkeypatch.setenv("INTERP_DCRIT", str(tiny_dcrit[0]))
    monkeypatch.setenv("INTERP_UNGROK", str(tiny_ungrok))
    monkeypatch.setenv("INTERP_GROUP_RUN", str(group_runs[0]))
    monkeypatch.setenv("INTERP_MUL_RUN", str(group_runs[1]))
    monkeypatch.setenv("INTERP_S5_MLP_RUN", str(mlp_runs[0]))
    monkeypatch.setenv("INTERP_MLP_RUN", str(mlp_runs[1]))
    monkeypatch.setenv("INTERP_ADD5_RUN", str(sequence_runs[0]))
    monkeypatch.setenv("INTERP_REPEAT_RUN", str(sequence_runs[1]))
    for name, run in zip(("TEACHER", "DIGITS", "POLY"), beyond_runs):
        monkeypatch.setenv(f"INTERP_{name}_RUN", str(run))
    for k, v in (("INTERP_LLC_DRAWS", "10"), ("INTERP_LLC_CHAINS", "2"), ("INTERP_LLC_EVERY", "30")):
        monkeypatch.setenv(k, v)  # notebook 5: a short LLC of 3 checkpoints
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    # what the notebook prints is what interp.analyze finds on the same run
    rows, summary = analyze_run(notebook_run, write=False)
    CHECKS[path.name[:2]](_printed(nb), rows, summary)
