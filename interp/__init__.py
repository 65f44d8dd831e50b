"""interp: train grokking transformers on CPU and take their checkpoints apart.

The flow (one direction): a ``tasks.Task`` and its split + a ``families.ModelFamily`` -> ``train`` ->
run directory (``runs``) -> the ``analysers.ANALYSERS`` (each wraps a function of ``analyses``) ->
``analyze`` tables -> ``report`` / notebooks. The three registries (``interp.tasks.TASKS``,
``interp.families.FAMILIES``, ``interp.analysers.ANALYSERS``) and ``interp.experiments.EXPERIMENTS`` are
where a new task, model, measure or experiment goes: one module and one registration each
(``docs/extending.md``).
"""

from interp.config import TrainConfig
from interp.runs import Run, RunError, load_checkpoint, load_run

__all__ = ["TrainConfig", "Run", "RunError", "load_run", "load_checkpoint"]
