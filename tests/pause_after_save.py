"""Run ``python -m MODULE ARGS...`` and stop for good right after one checkpoint is saved.

    python tests/pause_after_save.py RUN_DIR STEP MARKER MODULE ARGS...

When ``interp.runs.save_checkpoint`` has written RUN_DIR's checkpoint at STEP (or a later one), the
process writes that step into the file MARKER and then sleeps forever, holding everything else it was
about to write. A test waits for MARKER and kills the process with SIGKILL: the kill lands at a known
point, after a checkpoint and before the metrics and resume state that follow it, however fast or slow
the machine is (polling for a checkpoint and then killing can race the run to its end).
"""

from __future__ import annotations

import runpy
import sys
import time
from pathlib import Path

from interp import runs

probe, at_step, marker = Path(sys.argv[1]).resolve(), int(sys.argv[2]), Path(sys.argv[3])
module, args = sys.argv[4], sys.argv[5:]
_save = runs.save_checkpoint


def save_then_hold(run_dir, step, model):
    path = _save(run_dir, step, model)
    if Path(run_dir).resolve() == probe and step >= at_step:
        marker.write_text(f"{step}\n")
        while True:  # hold here until SIGKILL
            time.sleep(3600)
    return path


runs.save_checkpoint = save_then_hold
sys.argv = [module, *args]
runpy.run_module(module, run_name="__main__", alter_sys=True)
