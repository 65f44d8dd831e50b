"""The analysis tables on disk (``RUN_DIR/analysis/``): file names, the CSV cells, the manifest, loading.

``summary.json`` is written last and lists the SHA-256 of every table written with it; a table whose
hash does not match (left by an interrupted analysis) is not read. Cells: an empty cell is NaN;
``step``-like columns (``INT_COLUMNS``) are ints, every other cell a float.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
from pathlib import Path

from interp import group_analysis, runs
from interp.analysers import FREQUENCY_COLUMNS, FREQUENCY_TABLE, analysis_columns, extra_tables
from interp.runs import RunError

log = logging.getLogger(__name__)

ANALYSIS_TABLE = "checkpoints.csv"
SUMMARY_FILE = "summary.json"
ANALYSIS_VERSION = 9  # bump when a column's meaning or the columns change: cached tables are then recomputed
INT_COLUMNS = {"step", "freq", "head", "a", "b", "layer", "width", "feature_rank", *group_analysis.INT_COLUMNS}


def to_csv(rows: list[dict], columns: list[str]) -> str:
    def cell(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else repr(v)
        return str(v)

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([cell(r[c]) for c in columns])
    return buf.getvalue()


def parse_csv(text: str, columns: list[str]) -> list[dict]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames != columns:
        raise ValueError(f"columns {reader.fieldnames} are not {columns}")
    return [{k: (int(v) if k in INT_COLUMNS else float(v) if v != "" else math.nan) for k, v in r.items()} for r in reader]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _read_table(d: Path, name: str, columns: list[str], summary: dict) -> list[dict]:
    """Rows of table ``name``, if it is the one ``summary`` (the manifest) was written with."""
    text = (d / name).read_text()
    want = summary.get("tables", {}).get(name)
    if want != sha256(text):
        raise RunError(f"{d / name}: does not match {SUMMARY_FILE} (left by an interrupted or older analysis); "
                       f"rerun python -m interp.analyze {d.parent}")
    try:
        return parse_csv(text, columns)
    except (ValueError, KeyError) as e:
        raise RunError(f"{d / name}: corrupt ({e}); rerun python -m interp.analyze {d.parent} --force") from None


def _read_summary(d: Path) -> dict:
    try:
        return json.loads((d / SUMMARY_FILE).read_text())
    except FileNotFoundError as e:
        raise RunError(f"{e.filename}: missing; run python -m interp.analyze {d.parent}") from None
    except ValueError as e:
        raise RunError(f"{d / SUMMARY_FILE}: corrupt ({e}); rerun python -m interp.analyze {d.parent} --force") from None


def load_analysis(run_dir: str | Path) -> tuple[list[dict], dict]:
    """The cached analysis of a run: ``(rows of checkpoints.csv, summary.json)``; empty cells are NaN.

    Raises:
        RunError: the run has not been analysed (``python -m interp.analyze RUN_DIR``), or the files
        are corrupt or do not belong together (``summary.json`` lists the hash of each table).
    """
    d = Path(run_dir) / runs.ANALYSIS_DIR
    summary = _read_summary(d)
    try:
        rows = _read_table(d, ANALYSIS_TABLE, analysis_columns(), summary)
    except FileNotFoundError as e:
        raise RunError(f"{e.filename}: missing; run python -m interp.analyze {run_dir}") from None
    return rows, summary


def load_frequency_table(run_dir: str | Path) -> list[dict]:
    """Rows of ``frequencies.csv`` (empty for tasks the Fourier analysers do not apply to).

    Raises:
        RunError: the table is corrupt or was not written with the run's ``summary.json``.
    """
    d = Path(run_dir) / runs.ANALYSIS_DIR
    if not (d / FREQUENCY_TABLE).is_file():
        return []
    return _read_table(d, FREQUENCY_TABLE, FREQUENCY_COLUMNS, _read_summary(d))


def load_irrep_table(run_dir: str | Path) -> list[dict]:
    """Rows of ``irreps.csv`` (``interp.group_analysis``; empty for tasks that are not analysed as a group).

    Raises:
        RunError: the table is corrupt or was not written with the run's ``summary.json``.
    """
    d = Path(run_dir) / runs.ANALYSIS_DIR
    if not (d / group_analysis.IRREP_TABLE).is_file():
        return []
    return _read_table(d, group_analysis.IRREP_TABLE, group_analysis.IRREP_COLUMNS, _read_summary(d))


def load_cache(run_dir: Path) -> tuple[list[dict], dict[str, list[dict]], dict] | None:
    """The cached analysis to extend: ``(rows, {extra table: rows}, summary)``, or ``None`` when there is
    none, it is of another ``ANALYSIS_VERSION``, or its files do not match (a warning says why)."""
    d = run_dir / runs.ANALYSIS_DIR
    if not (d / SUMMARY_FILE).exists():
        return None
    try:
        summary = _read_summary(d)
        if summary.get("version") != ANALYSIS_VERSION:
            return None
        extra = {name: _read_table(d, name, cols, summary) for name, cols in extra_tables().items() if (d / name).is_file()}
        return load_analysis(run_dir)[0], extra, summary
    except RunError as e:
        log.warning("ignoring the cached analysis: %s", e)
        return None


def load_table(run_dir: str | Path, name: str) -> list[dict]:
    """Rows of the extra table ``name`` an analyser wrote (``interp.analysers.extra_tables``; empty if absent).

    Raises:
        RunError: the table is corrupt or was not written with the run's ``summary.json``.
    """
    d = Path(run_dir) / runs.ANALYSIS_DIR
    if not (d / name).is_file():
        return []
    return _read_table(d, name, extra_tables()[name], _read_summary(d))
