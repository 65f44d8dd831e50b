"""How numbers are written in the sentences a user reads (results blocks, captions, notes)."""

from __future__ import annotations

import math


def fmt_step(step: int | None) -> str:
    """``10 500``-style step (``not reached`` for ``None``)."""
    return "not reached" if step is None else f"{step:,}".replace(",", " ")


def fmt_num(x: float) -> str:
    """Three significant digits, thousands separated by a space (``0.0041``, ``24.6``, ``1 578``)."""
    if x is None or not math.isfinite(x):
        return "n/a"
    if abs(x) >= 1000:
        return f"{round(x):,}".replace(",", " ")
    return f"{x:.3g}"


def fmt_set(values) -> str:
    return "{" + ", ".join(str(v) for v in values) + "}"
