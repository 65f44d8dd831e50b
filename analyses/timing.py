"""When a run generalises: the late test-accuracy jump, and survival curves of seeds with censoring.

Pure functions over the rows of a run's ``metrics.jsonl`` (dicts with ``step``, ``train_acc``,
``test_acc``, ``param_norm``) and over lists of times; nothing here reads files.

**Late jump** (``late_jump``). Memorisation is the first evaluation with train accuracy >= ``mem_acc``
(0.99). The plateau is the test accuracy then; the top is the highest test accuracy reached at or after
it. If the top is at least ``min_rise`` above the plateau, the jump is the first evaluation (at or after
memorisation) whose test accuracy has covered half of the rise from plateau to top; its step and the
parameter norm there are reported, with ``delay`` = jump step / memorisation step (how late the jump
is, in units of the time memorisation took). A run that never memorises, or whose test accuracy
rises by less than ``min_rise`` after memorising, has no jump (``jump_step`` None).

**Survival with censoring** (``kaplan_meier``). A seed that reached the target at step t is an
event at t; one that never did within its budget T is right-censored at T (all we know is that it
needs more than T steps). The Kaplan-Meier estimate of S(t), the fraction of seeds still not
generalised after step t, multiplies ``1 - d_i / n_i`` over the event times t_i <= t (d_i events among
the n_i seeds still at risk just before t_i; a seed censored at c is at risk for t <= c). With one
common budget and all censoring at its end this is simply ``1 - (events <= t) / n``. The median is
the first event time where S falls to 0.5 or below (None if it never does: "more than the budget").
The estimate is ``scipy.stats.ecdf`` on ``scipy.stats.CensoredData``.
"""

from __future__ import annotations

import math
from typing import Sequence

from scipy import stats


def first_step(rows: Sequence[dict], key: str, threshold: float) -> int | None:
    """The first ``step`` whose ``key`` is >= ``threshold`` (None if none)."""
    return next((r["step"] for r in rows if r[key] >= threshold), None)


def late_jump(rows: Sequence[dict], mem_acc: float = 0.99, min_rise: float = 0.1) -> dict:
    """Memorisation, the plateau, the test-accuracy jump after it and the weight norm on the way.

    Args:
        rows: metrics rows, ascending in step, with ``step``, ``train_acc``, ``test_acc``, ``param_norm``.
        mem_acc: the train accuracy that counts as memorised.
        min_rise: the least rise of test accuracy after memorisation that counts as a jump.
    Returns:
        ``mem_step``, ``plateau_test_acc`` (test accuracy at memorisation), ``top_test_acc``,
        ``jump_step``, ``jump_test_acc``, ``delay`` (jump step / memorisation step), and the norm at
        step 0, at memorisation, at the jump and at the end (``norm0``, ``mem_norm``, ``jump_norm``,
        ``final_norm``); entries that do not exist are None.
    """
    rows = list(rows)
    out = {"mem_step": None, "plateau_test_acc": None, "top_test_acc": None, "jump_step": None, "jump_test_acc": None,
           "delay": None, "norm0": rows[0]["param_norm"] if rows else None, "mem_norm": None, "jump_norm": None,
           "final_norm": rows[-1]["param_norm"] if rows else None}
    i_mem = next((i for i, r in enumerate(rows) if r["train_acc"] >= mem_acc), None)
    if i_mem is None:
        return out
    after = rows[i_mem:]
    plateau, top = after[0]["test_acc"], max(r["test_acc"] for r in after)
    out.update(mem_step=after[0]["step"], plateau_test_acc=plateau, top_test_acc=top, mem_norm=after[0]["param_norm"])
    if top - plateau < min_rise:
        return out
    half = plateau + 0.5 * (top - plateau)
    jump = next(r for r in after if r["test_acc"] >= half)
    out.update(jump_step=jump["step"], jump_test_acc=jump["test_acc"], jump_norm=jump["param_norm"],
               delay=jump["step"] / out["mem_step"] if out["mem_step"] else math.inf)
    return out


def kaplan_meier(times: Sequence[float], observed: Sequence[bool]) -> tuple[list[float], list[float]]:
    """Kaplan-Meier estimate of the survival function from right-censored times.

    Args:
        times: per seed, the step it generalised at (``observed``) or was last seen not generalised.
        observed: per seed, whether ``times`` is an event (True) or a censoring time (False).
    Returns:
        ``(event_times, survival)``: the distinct event times ascending, and S just after each.
        S is 1 before the first event time.
    """
    if len(times) != len(observed):
        raise ValueError(f"{len(times)} times but {len(observed)} observed flags")
    events = [t for t, o in zip(times, observed) if o]
    if not events:
        return [], []
    res = stats.ecdf(stats.CensoredData(uncensored=events, right=[t for t, o in zip(times, observed) if not o]))
    seen = set(events)
    pairs = [(float(t), float(s)) for t, s in zip(res.sf.quantiles, res.sf.probabilities) if t in seen]
    return [t for t, _ in pairs], [s for _, s in pairs]


def survival_at(event_times: Sequence[float], survival: Sequence[float], t: float) -> float:
    """S(t) from ``kaplan_meier``'s step function (right-continuous: events at t count)."""
    s = 1.0
    for u, v in zip(event_times, survival):
        if u > t:
            break
        s = v
    return s


def km_median(event_times: Sequence[float], survival: Sequence[float]) -> float | None:
    """The first event time at which S <= 0.5 (None: fewer than half the seeds were seen to generalise)."""
    return next((t for t, s in zip(event_times, survival) if s <= 0.5 + 1e-12), None)
