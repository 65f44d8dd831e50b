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
train the tickets; or continue from a given run), or one sweep and a setting its summary reads
(semigrok records ``--plateau-frac`` next to its sweep), defines instead of (or besides) ``spec``:

``run(args, sweep) -> dict[str, dict]``
    checks its inputs first (raising ``interp.sweep.SweepError`` or ``interp.config.ConfigError``
    before anything is written), then calls ``sweep(spec, stage)`` once per stage: it runs or resumes
    the sweep ``spec`` in ``DIR/stage`` with the command's backend flags and returns that sweep's
    outcome rows by member name. ``run`` returns all stages' rows, keyed ``"stage/name"``.

and ``plan_specs(args) -> list[interp.sweep.Spec]``: every stage's sweep, built before any has run
(a stage built from an earlier one's results is built as if they came out as hoped), for ``--plan``.

Optionally ``figures(out_dir) -> list[interp.plots.Figure]``: the experiment's own figures, which
``python -m interp.report DIR`` draws above the summary table (``DIR/experiment.json`` names the
experiment, so the report knows which module to ask).

``TABLES``: the tables ``python -m interp.experiment NAME --markdown DIR`` prints from
``DIR/summary.csv``, a list of ``{"title": str (optional), "rows": predicate (optional), "transform":
function of the list of rows (optional, e.g. to put groups side by side), "columns": [(header, column
or function of the row)], or a function of the rows returning that}`` (``interp.tables.markdown_table``);
optionally ``NOTES(rows) -> str``, a paragraph printed below them (the report's caption, from the same rows; empty: none).

What the experiments share (finished rows, grouping, medians where a seed that never got there
counts as later, ``first_step``, ``run_stages``) is in ``interp.experiments.common``.

A new experiment is a new module here and a line in ``EXPERIMENTS``.
"""

from importlib import import_module

from interp.experiments.common import run_stages  # noqa: F401  (the common ``run``; helpers live in common)

EXPERIMENTS = ("datafrac", "ungrok", "semigrok", "tickets", "omnigrok", "accelerate", "dcrit", "phase", "lazyrich")


def load(name: str):
    """The experiment module ``name`` (one of ``EXPERIMENTS``)."""
    return import_module(f"interp.experiments.{name}")
