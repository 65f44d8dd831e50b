"""interp: train grokking transformers on CPU and take their checkpoints apart.

The flow (one direction): ``tasks`` + ``model`` -> ``train`` -> run directory (``runs``) ->
``analyses`` -> ``analyze`` tables -> ``report`` / notebooks.
"""

from interp.config import TrainConfig
from interp.runs import Run, RunError, load_checkpoint, load_run

__all__ = ["TrainConfig", "Run", "RunError", "load_run", "load_checkpoint"]
