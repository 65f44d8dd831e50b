"""The README is the project's own: no pointer to files users do not have, and its results are the default run's."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from interp.analyze import analyze_run
from interp.text import results_block

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUN = ROOT / "checkpoints" / "mod_add_p113"
BEGIN, END = "<!-- results: python -m interp.analyze checkpoints/mod_add_p113 --readme -->\n", "<!-- /results -->\n"


def readme_results() -> str:
    text = (ROOT / "README.md").read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1, "the README's results block has lost its markers"
    return text[text.index(BEGIN) + len(BEGIN): text.index(END)]


def test_no_reference_to_documents_users_do_not_have():
    names = ["SCIENCE" + ".md", "DESIGN" + ".md", "../" + "shared"]  # the project's private notes
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    hits = [f for f in files if Path(ROOT / f).is_file() and f.endswith((".py", ".md", ".ipynb", ".toml", "Makefile"))
            and any(n in (ROOT / f).read_text(errors="replace") for n in names)]
    assert hits == []


def test_readme_results_block_is_a_generated_list():
    block = readme_results()
    assert block.startswith("- **Key frequencies** ") and "- **Phases** (`summary.json`)" in block
    assert not re.search(r"\bRESULTS_BLOCK\b", block)


@pytest.mark.slow
@pytest.mark.skipif(not (DEFAULT_RUN / "config.json").is_file(), reason="no default p = 113 run (make run)")
def test_readme_results_are_the_default_runs():
    rows, summary = analyze_run(DEFAULT_RUN, write=False)  # the run's tables are read, never rewritten
    assert rows[-1]["step"] == 15000, "the default run is not finished"
    assert readme_results() == results_block(rows, summary)


def test_readme_is_a_short_guide_that_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    first_block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    assert [line.split("#")[0].strip() for line in first_block.strip().splitlines()] == ["make run", "make test"]
    assert text.index("```bash") < text.index("\n## ")  # before any section
    # every local link resolves, and every experiment has its page linked
    links = re.findall(r"\]\(((?:docs|notebooks|interp)/[^)#]*)\)", text)
    assert links and all((ROOT / link).exists() for link in links), [link for link in links if not (ROOT / link).exists()]
    from interp.experiments import EXPERIMENTS

    assert all(f"docs/experiments/{name}.md" in links for name in EXPERIMENTS)


def test_docs_links_resolve():
    for page in (ROOT / "docs").rglob("*.md"):
        for link in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / link).exists(), f"{page.relative_to(ROOT)}: broken link {link}"
