"""What the command-line entry points share: bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import argparse


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (no usage block) and exit code 2."""

    def error(self, message: str):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")
