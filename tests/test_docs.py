"""docs/: the generated parts equal their sources, and every experiment has a page with its measured tables."""

from __future__ import annotations

import json
from pathlib import Path
import os
import subprocess
import sys

import pytest

from interp import docs, tables
from interp.experiment import main as experiment_main
from interp.experiment import markdown
from interp.experiments import EXPERIMENTS
from tests.test_experiments import fake_sweep


def test_analysis_tables_page_is_the_analyze_docstring_and_the_analysers_columns():
    from interp import analyze
    from interp.analysers import analysis_columns

    page = docs.ANALYSIS_PAGE.read_text()
    assert page == docs.analysis_tables_page(), "run python -m interp.docs --write"
    assert "frequencies.csv" in analyze.__doc__ and "frequencies.csv" in page  # the docstring's content is on the page
    for column in analysis_columns()[1:]:  # every column is documented, from its analyser's entry
        assert f"- `{column}`: " in page


def test_every_generated_table_is_what_the_command_prints():
    assert docs.stale() == [], "run python -m interp.docs --write"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_has_a_page_with_generated_tables(name):
    page = docs.DOCS / "experiments" / f"{name}.md"
    text = page.read_text()
    blocks = docs.BLOCK.findall(text)
    assert blocks, f"{page}: no generated table"
    for _, exp, data, _, _ in blocks:
        assert exp == name
        d = docs.ROOT / data
        assert (d / tables.SUMMARY_FILE).is_file() and (d / tables.EXPERIMENT_FILE).is_file()
        info = tables.provenance(d)
        assert info["experiment"] == name and info["commit"] and info["machine"] and info["wall_s"] > 0


def test_markdown_names_the_command_commit_machine_and_wall_time(tmp_path, capsys):
    out = tmp_path / "s"
    fake_sweep(out, {(0.3, 1): None, (0.3, 2): 400, (0.3, 3): None, (0.6, 1): 200, (0.6, 2): 1000, (0.6, 3): 300})
    from interp.experiment import write_summary
    from interp.experiments import datafrac

    write_summary(out, datafrac.summarise(out))
    (out / tables.EXPERIMENT_FILE).write_text(json.dumps({
        "experiment": "datafrac", "argv": ["datafrac", "--quick", "--out", "x"], "command": "python -m interp.experiment datafrac --quick --out x",
        "commit": "0123456789abcdef", "machine": "Some CPU, 2 cores", "wall_s": 794.4}))
    assert experiment_main(["datafrac", "--markdown", str(out)]) == 0
    text = capsys.readouterr().out
    assert text == markdown("datafrac", out)
    head, table = text.split("\n\n", 1)
    assert "`python -m interp.experiment datafrac --quick --out x`" in head and "`0123456789`" in head
    assert "Some CPU, 2 cores" in head and "13 min 14 s" in head
    lines = table.strip().splitlines()
    assert len(lines) == 2 + 2  # header, rule, one row per fraction
    low, high = ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])
    assert low[:6] == ["0.30", "50", "1 of 3", "0 of 3", "> 500", "400–400"]  # 2 of 3 never: the median is beyond the budget; none diverged
    assert high[:6] == ["0.60", "101", "3 of 3", "0 of 3", "300", "200–1 000"]


def test_markdown_bad_input(tmp_path, capsys):
    assert experiment_main(["datafrac", "--markdown", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--markdown" in err[0] and "summary.csv" in err[0]
    assert experiment_main(["datafrac", "--quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0]


def test_the_rebuilt_accelerate_summary_is_what_its_script_and_summarise_give(tmp_path):
    """docs/data/accelerate/quick was rebuilt from a README table (its experiment.json says so): the script
    that did it, run again through today's summarise, gives the stored summary."""
    src = docs.ROOT / "docs/data/accelerate/quick"
    subprocess.run([sys.executable, str(src / "rebuild.py"), str(tmp_path)], check=True, cwd=docs.ROOT,
                   env={**os.environ, "PYTHONPATH": str(docs.ROOT)})
    assert (tmp_path / tables.SUMMARY_FILE).read_text() == (src / tables.SUMMARY_FILE).read_text()
    assert "rebuilt" in tables.provenance(src)["note"]


def test_run_snapshot_block_is_the_runs_numbers(tmp_path):
    """interp.snapshot: a run's facts in run.json, and a docs block renders exactly its markdown."""
    from interp.analyze import analyze_run
    from interp.config import TrainConfig
    from interp.snapshot import main as snapshot_main
    from interp.snapshot import markdown
    from interp.train import train

    cfg = TrainConfig(task="s4", family="mlp", d_model=8, d_mlp=16, steps=40, eval_every=20, save_every=20)
    run = train(cfg, tmp_path / "run", progress=False)
    rows, summary = analyze_run(run)
    assert snapshot_main([str(run), str(tmp_path / "snap"), "--command", "python -m interp.train s4 --family mlp"]) == 0
    s = json.loads((tmp_path / "snap" / "run.json").read_text())
    assert s["family"] == "mlp" and s["steps"] == 40 and s["test_acc"] == pytest.approx(rows[-1]["test_acc"], abs=1e-9)
    assert len(s["feature_rank"]) == 1 and "irrep_shares" in s  # group run: the key irreps' shares (none: the largest)
    text = markdown(tmp_path / "snap")
    assert "`python -m interp.train s4 --family mlp`" in text and "| task, family, p | s4, mlp, 24 |" in text
    page = f"x\n<!-- generated: python -m interp.snapshot --markdown {tmp_path / 'snap'} -->\nold\n<!-- /generated -->\n"
    assert docs.render_blocks(page, root=Path("/")) == page.replace("old\n", "\n" + text + "\n")
    # a run that fell back from its best test accuracy gets a row saying where it stood; one that did not, none
    assert "test_best" not in s or s["test_best"]["test_acc"] - s["test_acc"] > 0.01
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    lines[1].update(test_acc=lines[-1]["test_acc"] + 0.5, param_norm=12.5)
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert snapshot_main([str(run), str(tmp_path / "fell"), "--command", "x"]) == 0
    best = json.loads((tmp_path / "fell" / "run.json").read_text())["test_best"]
    assert best["step"] == lines[1]["step"] and best["param_norm"] == 12.5
    assert f"at step {lines[1]['step']} (12.5; " in markdown(tmp_path / "fell")
    lines[1].update(test_acc=lines[-1]["test_acc"] + 0.005)
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert snapshot_main([str(run), str(tmp_path / "flat"), "--command", "x"]) == 0
    assert "test_best" not in json.loads((tmp_path / "flat" / "run.json").read_text()) or max(
        x["test_acc"] for x in lines) - lines[-1]["test_acc"] > 0.01


@pytest.mark.parametrize("page", [p for p in docs.pages() if docs.RUN_BLOCK.search(p.read_text())])
def test_every_run_block_has_its_stored_run(page):
    for _, data, _, _ in docs.RUN_BLOCK.findall(page.read_text()):
        seeds = docs.ROOT / data / "seeds.json"
        s = json.loads((seeds if seeds.is_file() else docs.ROOT / data / "run.json").read_text())
        assert s["command"] and s["commit"] and s["cpu"] and (seeds.is_file() or s["wall_s"] > 0)
