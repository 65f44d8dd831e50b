"""What the command-line entry points share: bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import math


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (no usage block) and exit code 2."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def number_list(text: str, flag: str, kind: type = float, positive: bool = False, error: type[Exception] = ValueError) -> list:
    """The values of a comma-separated flag such as ``--seeds 1,2,3`` or ``--llc-gammas 10,100``.

    ``kind`` parses each value (``int`` or ``float``); ``positive`` asks each to be a finite number
    above 0. Raises ``error`` with one line naming the flag: a value that does not parse, none at all,
    or (with ``positive``) one that is not above 0.
    """
    what = "whole numbers" if kind is int else "numbers"
    try:
        values = [kind(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise error(f"{flag} {text}: not a comma-separated list of {what}") from None
    if not values:
        raise error(f"{flag} {text}: give at least one value")
    if positive and not all(math.isfinite(v) and v > 0 for v in values):
        raise error(f"{flag} {text}: every value must be a positive number")
    return values
