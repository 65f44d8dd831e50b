"""Rebuild this directory from the README table recorded at commit fab11de (the runs are no longer on disk).

    PYTHONPATH=. python docs/data/accelerate/quick/rebuild.py docs/data/accelerate/quick


Per-seed steps to 99% test accuracy come from the table ("> 4 000": censored at the 4 000-step budget);
every other column (lr, wd, changes, budget, Kaplan-Meier medians, speed-ups) is computed by
interp.experiments.accelerate.summarise from the arms' configs, as the original run did. The table
shows no failed member (every censored seed ran its whole 4 000 steps, where one that failed would
have been censored earlier), so every member is written as finished: 0 diverged per arm.
"""
import json, sys
from argparse import Namespace
from pathlib import Path
from interp.experiments import accelerate
from interp.experiment import write_summary
from interp import tables

out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
table = {  # arm: per-seed test_99_step, None = never within the budget
    "adamw": [700, 1850, 2450], "adamw_lr3x": [300, 450, 550], "grokfast_ema": [1000, 1500, None],
    "grokfast_ma": [None] * 3, "stablemax": [None] * 3, "orthoadamw": [150, 300, 350],
    "init_x0.5": [1000, 1300, 2900], "ticket": [550, 1300, 1400]}
base, seeds = accelerate.settings(Namespace(quick=True, p=None))
arms = accelerate.arms(base)
arms["ticket"] = {"mask_from": "experiments/tickets_quick/masks/ticket_seed{seed}.safetensors"}  # the run's absolute path is not known
for arm, steps in table.items():
    d = out / "work" / arm
    d.mkdir(parents=True, exist_ok=True)
    (d / "sweep.json").write_text(json.dumps({"spec": {"base": {**base, **arms[arm]}, "grid": {"seed": seeds}}, "members": []}))
    rows = [{"run": f"runs/seed{s}", "seed": s, "status": "ok", "test_99_step": t, "final_step": base["steps"]} for s, t in zip(seeds, steps)]
    tables.write_csv(d / "results.csv", rows)
write_summary(out, accelerate.summarise(out / "work"))
info = {"experiment": "accelerate", "argv": ["accelerate", "--quick", "--tickets", "experiments/tickets_quick", "--out", "experiments/accelerate_quick"],
        "command": "python -m interp.experiment accelerate --quick --out experiments/accelerate_quick, then the same with --tickets experiments/tickets_quick",
        "commit": "fab11deaa699a72f47265a76eead2c3a14ec2b55",
        "machine": "the project's 2-core development VM (CPU model not recorded then)",
        "wall_s": 856 + 121,
        "note": ("rebuilt from the README's table at that commit (the runs are no longer on disk): the per-seed steps are the table's, "
                 "every other column is computed from them by the experiment's summarise; the ticket arm's masks path is written relative")}
(out / "experiment.json").write_text(json.dumps(info, indent=2) + "\n")
import shutil; shutil.rmtree(out / "work")
