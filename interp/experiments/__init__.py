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

An experiment that needs more than one sweep (train dense networks, then derive masks from them and
train the tickets; or continue from a given run) defines instead of ``spec``:

``run(args, sweep) -> dict[str, dict]``
    checks its inputs first (raising ``interp.sweep.SweepError`` or ``interp.config.ConfigError``
    before anything is written), then calls ``sweep(spec, stage)`` once per stage: it runs or resumes
    the sweep ``spec`` in ``DIR/stage`` with the command's backend flags and returns that sweep's
    outcome rows by member name. ``run`` returns all stages' rows, keyed ``"stage/name"``.

Optionally ``figures(out_dir) -> list[interp.report.Figure]``: the experiment's own figures, which
``python -m interp.report DIR`` draws above the summary table (``DIR/experiment.json`` names the
experiment, so the report knows which module to ask).

A new experiment is a new module here and a line in ``EXPERIMENTS``.
"""

from importlib import import_module

EXPERIMENTS = ("datafrac", "ungrok", "semigrok", "tickets", "omnigrok", "accelerate", "dcrit")


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


def load(name: str):
    """The experiment module ``name`` (one of ``EXPERIMENTS``)."""
    return import_module(f"interp.experiments.{name}")
