"""Tables on disk: the file names of sweeps and experiments, typed CSV read/write, Markdown tables.

Every CSV the sweeps and experiments write goes through ``write_csv`` and every one they read back
through ``read_csv``, so a cell means the same thing both ways:

=========================  ===========================  ========================================
value written              cell                          value read back
=========================  ===========================  ========================================
``None`` or a float NaN    empty                         ``None``
``True`` / ``False``       ``True`` / ``False``          ``True`` / ``False``
an int                     its digits                    an int
a float                    ``repr`` (``digits`` given:   a float
                           that many significant ones)
anything else              ``str(v)``                    a str (unless it reads as a number)
=========================  ===========================  ========================================

``experiment.json`` (``EXPERIMENT_FILE``) records how an experiment directory was made: the
command, the commit, the machine (CPU model, GPU name when it ran on one) and the wall time; the
header of ``python -m interp.experiment NAME --markdown DIR`` is read from it (``provenance``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from interp import runs

SWEEP_FILE = "sweep.json"  # a sweep's spec and members (interp.sweep)
RESULTS_FILE = "results.csv"  # one row per finished member of a sweep (interp.sweep)
SUMMARY_FILE = "summary.csv"  # an experiment's summary (interp.experiment)
EXPERIMENT_FILE = "experiment.json"  # which experiment made a directory, with which command, where, how long


def cell(v, digits: int | None = None) -> str:
    """One CSV cell (see the module docstring); ``digits``: significant digits of a float."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}g}" if digits else repr(v)
    return str(v)


def parse(s: str):
    """A cell read back: ``""`` -> None, ``True``/``False`` -> bool, then int, float, else the string."""
    if s == "":
        return None
    if s in ("True", "False"):
        return s == "True"
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return s


def to_csv(rows: list[dict], columns: list[str] | None = None, digits: int | None = None) -> str:
    """The CSV text of ``rows`` (header: ``columns``, default the first row's keys; a missing key is empty)."""
    cols = list(columns) if columns is not None else list(rows[0]) if rows else []
    if not cols:
        return ""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    w.writerows([[cell(r.get(c), digits) for c in cols] for r in rows])
    return buf.getvalue()


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None, digits: int | None = None) -> str:
    """Write ``rows`` to ``path`` atomically (``interp.runs.write_text``); returns the text."""
    text = to_csv(rows, columns, digits)
    runs.write_text(Path(path), text)
    return text


def read_csv(path: Path, raw: bool = False, text: frozenset[str] | set[str] = frozenset()) -> list[dict]:
    """The rows of a CSV file, cells parsed by ``parse``; ``[]`` if there is no file.

    Args:
        raw: keep every cell a string (empty: ``""``).
        text: columns kept as strings (names, lists written as text), whatever they look like.
    """
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return rows if raw else [{k: v if k in text else parse(v) for k, v in r.items()} for r in rows]


# ---- where a result came from ---------------------------------------------------------------------
def machine(device: str = "cpu") -> str:
    """The machine a result came from, in words (``interp.device.name``): the CPU model and core
    count, and the GPU's name on CUDA."""
    from interp.device import name

    return name(device)


def write_provenance(out: Path, experiment: str, argv: list[str], wall_s: float, device: str = "cpu") -> dict:
    """Write ``DIR/experiment.json``: the experiment, its command, the commit, the machine and the wall time."""
    info = {"experiment": experiment, "argv": list(argv),
            "command": " ".join(["python -m interp.experiment", *argv]),
            "commit": runs._git_commit(), "machine": machine(device), "wall_s": round(wall_s, 1)}
    runs.write_text(Path(out) / EXPERIMENT_FILE, json.dumps(info, indent=2) + "\n")
    return info


def provenance(out: Path) -> dict:
    """``DIR/experiment.json`` (``{}`` when there is none)."""
    path = Path(out) / EXPERIMENT_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def duration(seconds: float) -> str:
    """``1 h 2 min``, ``13 min 14 s``, ``52 s``."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"


# ---- Markdown ----------------------------------------------------------------------------------
def table_cell(r: dict, how) -> str:
    """One cell of a reader's table: ``how`` is a column name or a function of the row; None is "–"."""
    v = how(r) if callable(how) else r.get(how)
    return "–" if v is None else v if isinstance(v, str) else fmt(v)


def experiment_tables(rows: list[dict], specs: list[dict]) -> list[tuple[str, list[str], list[list[str]]]]:
    """An experiment's ``TABLES`` (``interp.experiments``) applied to its summary rows: for each table
    that has rows, ``(title, headers, cells)``. What ``--markdown`` prints and the report shows."""
    out = []
    for t in specs:
        rs = [r for r in rows if t.get("rows", lambda r: True)(r)]
        rs = t["transform"](rs) if rs and "transform" in t else rs
        if not rs:
            continue
        columns = t["columns"](rs) if callable(t["columns"]) else t["columns"]
        out.append((t.get("title", ""), [h for h, _ in columns], [[table_cell(r, how) for _, how in columns] for r in rs]))
    return out


def markdown_table(rows: list[dict], columns: list[tuple[str, object]]) -> str:
    """A Markdown table: ``columns`` is ``[(header, key or function of the row)]``; a None cell is "–"."""
    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(table_cell(r, how) for _, how in columns) + " |" for r in rows]
    return "\n".join(lines)


def sig(x: float | None, n: int = 3) -> str:
    """``x`` to ``n`` significant digits, trailing zeros kept (``23.0``, ``2.50``, ``0.0610``), whole
    numbers from 10^n on (``1174``); ``–`` for None."""
    if x is None:
        return "–"
    if abs(x) >= 10 ** n:
        return str(round(x))
    return f"{x:#.{n}g}".rstrip(".")


def fmt(v, digits: int = 3) -> str:
    """A number for a reader: ints with thin grouping (``12 500``), floats to ``digits`` significant digits."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) >= 1000):
        return f"{int(v):,}".replace(",", " ")
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)
