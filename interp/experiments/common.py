"""What every experiment does with its sweeps' outcomes: finished rows, groups, censored medians, first steps.

An outcome that never happened within the budget (a seed that never reached 99% test accuracy) is
``None``; so is one a member that diverged had not reached (``ok_rows``: a diverged member counts,
it is never dropped). The *censored median* counts it as later than every outcome that did happen, so the median
is ``None`` ("beyond the budget") when half or more of the seeds never got there; the range
(``spread``) is over the outcomes that happened. ``first_step`` (the first evaluation at or above a
threshold) is ``analyses.timing.first_step``, which ``interp.sweep`` uses for ``results.csv`` too.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path

from analyses.timing import first_step  # noqa: F401  (the one definition; experiments import it from here)
from interp import tables
from interp.cli import number_list


def run_stages(specs: dict, sweep) -> dict[str, dict]:
    """The common ``run``: check every stage's spec (``{stage: interp.sweep.Spec}``) before the first
    one writes anything, then run them in order; rows keyed ``"stage/name"``."""
    from interp.sweep import check_values

    for spec in specs.values():
        check_values(spec)
    rows = {}
    for stage, spec in specs.items():
        rows.update({f"{stage}/{name}": r for name, r in sweep(spec, stage).items()})
    return rows


def is_sweep(d: Path) -> bool:
    """Whether ``d`` is a sweep directory (it has ``sweep.json``)."""
    return (Path(d) / tables.SWEEP_FILE).is_file()


def results(sweep_dir: Path) -> list[dict]:
    """``results.csv`` of a sweep, typed (``interp.tables.read_csv``): empty cells are None; ``[]`` if none yet."""
    return tables.read_csv(Path(sweep_dir) / tables.RESULTS_FILE)


DIVERGED = "training loss is not finite"  # how interp.train and interp.stack begin a diverged member's reason


def diverged(row: dict) -> bool:
    """Whether a ``results.csv`` row is a member that diverged (failed: its training loss became NaN or infinite)."""
    return row["status"] == "failed" and str(row.get("reason") or "").startswith(DIVERGED)


def ok_rows(sweep_dir: Path) -> list[dict]:
    """The typed ``results.csv`` rows that are outcomes, each with ``diverged`` (bool): the members
    that finished (status ``ok``) and those that diverged. A diverged member counts, as a member that
    got nowhere after it diverged: its ``final_*`` columns are None (it has no final state within the
    budget) and a step it had not reached (``test_99_step`` None) is beyond the budget, as for a
    finished member that never got there. Other failures (a bad config, a crash) are no outcome and
    are left out; the sweep's exit status reports them."""
    out = []
    for r in results(sweep_dir):
        if r["status"] == "ok":
            out.append({**r, "diverged": False})
        elif diverged(r):
            out.append({**r, **{k: None for k in r if k.startswith("final_")}, "diverged": True})
    return out


def diverged_text(rows: list[dict]) -> str:
    """``"k of N diverged"`` over ``ok_rows``' rows."""
    return f"{sum(bool(r.get('diverged')) for r in rows)} of {len(rows)} diverged"


def read_summary(out: Path) -> list[dict]:
    """``DIR/summary.csv``, typed; ``[]`` if there is none."""
    return tables.read_csv(Path(out) / tables.SUMMARY_FILE)


def group(rows: Iterable[dict], key: Callable[[dict], Hashable] | str) -> dict:
    """``{key value: [rows]}`` in ascending key order (``key``: a column name or a function of the row)."""
    f = (lambda r: r[key]) if isinstance(key, str) else key
    out: dict = {}
    for r in rows:
        out.setdefault(f(r), []).append(r)
    return dict(sorted(out.items()))


def _finite(xs: Iterable[float | None]) -> list[float]:
    return [x for x in xs if x is not None and math.isfinite(x)]


def median(xs: Iterable[float | None]) -> float | None:
    """The median of the values that are there (None and NaN left out); None if there are none."""
    xs = _finite(xs)
    return statistics.median(xs) if xs else None


def spread(xs: Iterable[float | None]) -> tuple[float | None, float | None, float | None]:
    """``(median, min, max)`` of the values that are there; ``(None, None, None)`` if there are none."""
    xs = _finite(xs)
    return (statistics.median(xs), min(xs), max(xs)) if xs else (None, None, None)


def censored_median(xs: Iterable[float | None]) -> float | None:
    """The median counting a None (never within the budget) as later than every value: None when
    half or more are None (the median is then beyond the budget)."""
    xs = [math.inf if x is None else x for x in xs]
    if not xs:
        return None
    m = statistics.median(xs)
    return m if math.isfinite(m) else None


def seed_list(text: str | None, default: list[int]) -> list[int]:
    """``--seeds``: comma-separated integers (``None``: ``default``).

    Raises:
        SweepError: not integers, or none.
    """
    from interp.sweep import SweepError

    return list(default) if text is None else number_list(text, "--seeds", int, error=SweepError)
