"""Reading numbers out of generated text, so caption tests check the numbers and not the wording."""

from __future__ import annotations

import re

_NUMBER = re.compile(r"(?<![\w.])-?\d[\d ]*(?:\.\d+)?(?![\w])")


def numbers(text: str) -> list[float]:
    """Every number in ``text`` in order (``12 500`` is one number; words like C_gen or p113 hold none)."""
    return [float(m.group().replace(" ", "")) for m in _NUMBER.finditer(text)]


def sentence(text: str, anchor: str) -> str:
    """The sentence of ``text`` that starts with (or contains) ``anchor``, up to its full stop."""
    i = text.index(anchor)
    start = max(text.rfind(". ", 0, i) + 2, 0) if text.rfind(". ", 0, i) >= 0 else 0
    m = re.compile(r"\.(\s|$)").search(text, i)
    return text[start: m.start() if m else len(text)]
