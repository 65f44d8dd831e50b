"""Seed experiments, one module each, on top of the sweep engine (``python -m interp.experiment NAME``).

An experiment module defines:

``DESCRIPTION``
    one line for ``--help``.
``add_arguments(parser)``
    its own flags (e.g. ``--p``), besides the common ``--quick``, ``--out`` and the sweep's backend flags.
``spec(args) -> interp.sweep.Spec``
    the sweep it runs (the ``--quick`` version when ``args.quick``).
``summarise(out_dir) -> list[dict]``
    the rows of ``DIR/summary.csv``, computed from ``DIR/results.csv`` (and the members' run
    directories or analysis tables). It draws nothing: ``python -m interp.report DIR`` does.

A new experiment is a new module here and a line in ``EXPERIMENTS``.
"""

from importlib import import_module

EXPERIMENTS = ("datafrac",)


def load(name: str):
    """The experiment module ``name`` (one of ``EXPERIMENTS``)."""
    return import_module(f"interp.experiments.{name}")
