"""A measured run's facts, kept small for the docs: ``python -m interp.snapshot RUN_DIR DIR --command "..."``.

Writes ``DIR/run.json`` from a trained and analysed run directory: how it was made (the command, the
commit, the machine, the torch threads, the wall time), its final accuracies and the first step at 99 %
test accuracy (and its best test accuracy, with the parameter norm then, when it ended more than
``BEST_DROP`` below it), its key frequencies or irreps (clustering and embedding check), for group runs each key
irrep's share of the embedding, of the first operand's total embedding (Chughtai et al.'s
``percent_x_embed``) and of the unembedding at the final checkpoint, each hidden layer's final feature
rank, and its local learning coefficient curve where ``--llc`` was run (first, peak, last).

``markdown(DIR)`` (``python -m interp.snapshot --markdown DIR``) prints that as the Markdown table the
docs embed between ``<!-- generated: python -m interp.snapshot --markdown DIR -->`` and
``<!-- /generated -->`` (``interp.docs`` regenerates the block; ``tests/test_docs.py`` checks it).

A preset over seeds (``python -m interp.sweep TASK --preset NAME --grid seed=1,2,3 --stop-after-grok 100 --out
SWEEP``, then ``python -m interp.snapshot SWEEP docs/data/presets/NAME --command "..."``) is kept as
``DIR/seeds.json`` instead (``DIR``'s name is the preset's): per seed the step it grokked at by the preset's rule
(``interp.config.PRESET_GROK_RULES``: the first step at 99 % test accuracy, or, for the digits MLP, half of its
test accuracy's late rise), and the preset's budget against ``BUDGET_MARGIN`` (1.5) times the slowest seed;
``tests/test_presets.py`` holds every stored preset to it.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

from interp import runs
from interp.analysis_files import load_analysis, load_table
from interp.cli import Parser
from interp.runs import RunError
from interp.text import fmt_step

RUN_FILE = "run.json"
SEEDS_FILE = "seeds.json"  # a preset over seeds (seeds_snapshot)
BEST_DROP = 0.01  # test accuracy: a best this far above the final one gets its own row
BUDGET_MARGIN = 1.5  # a preset's budget covers its slowest measured seed this many times over


def snapshot(run_dir: Path, command: str, note: str | None = None) -> dict:
    """The facts of ``run_dir`` (trained and analysed) as a JSON-able dict (see the module docstring)."""
    run = runs.load_run(run_dir)
    meta = json.loads((run_dir / runs.CONFIG_FILE).read_text())
    metrics = runs.read_metrics(run_dir)
    rows, summary = load_analysis(run_dir)
    last = metrics[-1]
    grok = next((m["step"] for m in metrics if m["test_acc"] >= 0.99), None)
    cfg = run.config
    out = {"command": command, "note": note, "commit": meta.get("git_commit"), "cpu": meta.get("machine", {}).get("cpu"),
           "torch_threads": meta.get("machine", {}).get("torch_threads"), "wall_s": last.get("elapsed_s"),
           "task": cfg.task, "family": cfg.family, "p": None if cfg.task_spec.sequence or cfg.task_spec.d_vocab(cfg) == 0 else cfg.p, "steps": last["step"],
           "train_acc": last["train_acc"], "test_acc": last["test_acc"], "test_loss": last["test_loss"], "test_99_step": grok}
    best = max(metrics, key=lambda m: m["test_acc"])
    if best["test_acc"] - last["test_acc"] > BEST_DROP:  # a run that fell back: where it stood at its best
        out["test_best"] = {"step": best["step"], "test_acc": best["test_acc"], "param_norm": best.get("param_norm"),
                            "final_param_norm": last.get("param_norm")}
    if "key_irreps" in summary:
        names = summary["irreps"]
        out["key"] = [names[k] for k in summary["key_irreps"]]
        out["key_embedding"] = [names[k] for k in summary.get("key_irreps_embedding", [])]
        final = [r for r in load_table(run_dir, "irreps.csv") if r["step"] == run.steps[-1]]
        out["irrep_shares"] = {names[r["irrep"]]: {c: r[c] for c in ("W_E_frac", "x_embed_frac", "W_U_frac")} for r in final
                               if r["irrep"] in summary["key_irreps"] or r["W_E_frac"] > 0.01}
    elif "key_frequencies" in summary:
        out["key"] = summary["key_frequencies"]
        out["key_embedding"] = summary.get("key_frequencies_embedding", [])
    layers = load_table(run_dir, "layers.csv")
    ranks = lambda step: [f"{r['feature_rank']} of {r['width']}" for r in sorted(layers, key=lambda r: r["layer"]) if r["step"] == step]  # noqa: E731
    out["feature_rank"] = ranks(run.steps[-1])
    if len({r["layer"] for r in layers}) > 1:  # a deep model: the ranks at the first checkpoint too, to compare
        out["feature_rank_first"] = ranks(run.steps[0])
    if cfg.task_spec.sequence:  # the phase change: each answer position's fall, and the heads
        from analyses import phase

        out["infinite_data"] = cfg.infinite_data
        out["phase_step"] = phase.fall_step([m["step"] for m in metrics], [m["test_loss"] for m in metrics])
        out["position_falls"] = summary.get("position_falls")
        out["final_test_loss_pos"] = last.get("test_loss_pos")
        if rows and rows[-1].get("induction_max") is not None and not math.isnan(rows[-1]["induction_max"]):
            from interp.analysers import INDUCTION_HEAD

            out["induction"] = {"first": rows[0]["induction_max"], "final": rows[-1]["induction_max"],
                                "heads": summary.get("induction_heads"),
                                "from_step": next((r["step"] for r in rows if r["induction_max"] >= INDUCTION_HEAD), None)}
    lc = [r for r in rows if r.get("lc_train") is not None and not math.isnan(r["lc_train"])]
    if lc:  # local complexity (ReLU MLPs): around train / test / random points
        pick = lambda r: {"step": r["step"], "train": r["lc_train"], "test": r["lc_test"], "random": r["lc_random"]}  # noqa: E731
        lo, hi = metrics[0]["test_acc"], max(m["test_acc"] for m in metrics)
        out["local_complexity"] = {"first": pick(lc[0]), "train_low": pick(min(lc, key=lambda r: r["lc_train"])),
                                   "train_high": pick(max(lc, key=lambda r: r["lc_train"])), "final": pick(lc[-1]),
                                   "settings": summary.get("lc_settings"),
                                   "test_half_rise": next((m["step"] for m in metrics if hi > lo and m["test_acc"] >= lo + 0.5 * (hi - lo)), None)}
    from interp.llc import load_llc

    llc_rows, llc_info = load_llc(run_dir)
    if llc_rows:
        peak = max(llc_rows, key=lambda r: r["llc_mean"])
        after = [r["llc_mean"] for r in llc_rows if grok is not None and r["step"] >= grok]
        out["llc"] = {"first": [llc_rows[0]["step"], llc_rows[0]["llc_mean"]], "peak": [peak["step"], peak["llc_mean"]],
                      "after_99": [min(after), max(after)] if after else None,
                      "last": [llc_rows[-1]["step"], llc_rows[-1]["llc_mean"]], "n_checkpoints": len(llc_rows),
                      "settings": {k: llc_info.get("settings", {}).get(k) for k in ("epsilon", "gamma", "n_beta", "chains", "draws", "burnin")}}
    return out


def _num(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


# How a preset's measurement over seeds reads the step each seed grokked at (interp.config.PRESET_GROK_RULES names
# the rule per preset): the member's key, what a seed that has none did not do, the table's column.
GROK_RULES = {
    "test_99": ("test_99_step", "reach 99 % test accuracy", "first step at 99 % test accuracy"),
    "late_jump": ("jump_step", "show a late rise of test accuracy (at least 0.1 above its level at memorisation)",
                  "half of the test accuracy's rise after memorisation"),
}


def seeds_snapshot(sweep_dir: Path, command: str, note: str | None = None, preset: str | None = None) -> dict:
    """A sweep over seeds of one preset (``python -m interp.sweep TASK --preset NAME --grid seed=...``) as a
    JSON-able dict: how it was made, the preset's grok rule (``interp.config.PRESET_GROK_RULES``, by default
    "test_99"), and per member its seed, status, first step at 99 % test accuracy, last step and final test
    accuracy (from ``results.csv``); under the "late_jump" rule also its memorisation step, the step at half of
    the test accuracy's later rise and its best test accuracy (``analyses.timing.late_jump`` of its metrics)."""
    from analyses.timing import late_jump
    from interp.config import PRESET_GROK_RULES

    sweep_dir = Path(sweep_dir)
    rule = PRESET_GROK_RULES.get(preset, "test_99")
    spec = json.loads((sweep_dir / "sweep.json").read_text())
    members = []
    with open(sweep_dir / "results.csv") as f:
        for r in csv.DictReader(f):
            num = lambda k: None if r.get(k) in (None, "") else float(r[k])  # noqa: E731
            m = {"run": Path(r["run"]).name, "seed": int(float(r["seed"])), "status": r["status"],
                 "test_99_step": None if num("test_99_step") is None else int(num("test_99_step")),
                 "final_step": None if num("final_step") is None else int(num("final_step")),
                 "final_test_acc": num("final_test_acc")}
            if rule == "late_jump":
                lj = late_jump(runs.read_metrics(sweep_dir / "runs" / m["run"]))
                m.update(mem_step=lj["mem_step"], jump_step=lj["jump_step"], top_test_acc=lj["top_test_acc"])
            members.append(m)
    if not members:
        raise FileNotFoundError(f"{sweep_dir / 'results.csv'}: no finished member")
    meta = json.loads((sweep_dir / "runs" / members[0]["run"] / runs.CONFIG_FILE).read_text())
    return {"command": command, "note": note, "commit": meta.get("git_commit"), "cpu": meta.get("machine", {}).get("cpu"),
            "torch_threads": meta.get("machine", {}).get("torch_threads"), "task": spec["spec"]["base"]["task"],
            "steps": spec["spec"]["base"]["steps"], "rule": rule, "members": sorted(members, key=lambda m: m["seed"])}


def seeds_markdown(s: dict, preset: str) -> str:
    """The Markdown table of a ``seeds_snapshot``, with the preset's budget (``interp.config.PRESETS``) against
    ``BUDGET_MARGIN`` times its slowest seed."""
    from interp.config import PRESETS

    key, _, column = GROK_RULES[s.get("rule", "test_99")]
    late = key == "jump_step"
    head = (["seed", "memorised at", column, "best test accuracy"] if late else ["seed", column]) + ["last step", "final test accuracy"]
    lines = [f"Made by `{s['command']}` at commit `{(s.get('commit') or 'unknown')[:10]}` on {s.get('cpu') or 'an unrecorded CPU'} "
             f"(torch threads: {s.get('torch_threads')})." + (f" {s['note']}" if s.get("note") else ""), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    step = lambda x: "not reached" if x is None else fmt_step(x)  # noqa: E731
    for m in s["members"]:
        cells = [str(m["seed"])] + ([step(m["mem_step"]), step(m[key]), _num(m["top_test_acc"], 4)] if late else [step(m[key])])
        cells += ["-" if m["final_step"] is None else fmt_step(m["final_step"]), _num(m["final_test_acc"], 4)]
        lines.append("| " + " | ".join(cells) + " |")
    steps = [m[key] for m in s["members"]]
    budget = PRESETS.get(preset, {}).get("steps")
    lines.append("")
    done = [x for x in steps if x is not None]
    if done:
        lines.append(f"Slowest seed{'' if len(done) == len(steps) else ' of those that reached it'}: {fmt_step(max(done))} steps; "
                     f"{BUDGET_MARGIN:g} times that is {fmt_step(math.ceil(BUDGET_MARGIN * max(done)))}; the `{preset}` "
                     f"preset's budget: {'-' if budget is None else fmt_step(budget)} steps.")
    problem = budget_problem(s, budget)
    lines.append(f"**The budget does not cover these seeds:** {problem}." if problem else "The budget covers these seeds.")
    return "\n".join(lines) + "\n"


def budget_problem(s: dict, budget: int | None) -> str | None:
    """Why a preset's ``budget`` (steps) does not cover the seeds of ``seeds_snapshot`` ``s``, or ``None``: every
    seed must have grokked by the snapshot's rule (``GROK_RULES``: by default 99 % test accuracy), and the budget
    must be at least ``BUDGET_MARGIN`` times the slowest."""
    key, missing, _ = GROK_RULES[s.get("rule", "test_99")]
    steps = [m[key] for m in s["members"]]
    if budget is None:
        return "no such preset"
    if None in steps:
        return f"{steps.count(None)} of {len(steps)} seeds did not {missing} within {fmt_step(s['steps'])} steps"
    if budget < BUDGET_MARGIN * max(steps):
        return f"{fmt_step(budget)} steps is less than {BUDGET_MARGIN:g} times the slowest seed's {fmt_step(max(steps))}"
    return None


def markdown(d: Path) -> str:
    """The Markdown table of ``d/run.json``, or of ``d/seeds.json`` (``seeds_markdown``, the preset named by
    ``d``'s name) (see the module docstring)."""
    if (Path(d) / SEEDS_FILE).is_file():
        return seeds_markdown(json.loads((Path(d) / SEEDS_FILE).read_text()), Path(d).name)
    s = json.loads((Path(d) / RUN_FILE).read_text())
    wall = "-" if s.get("wall_s") is None else f"{s['wall_s'] / 60:.1f} min"
    lines = [f"Made by `{s['command']}` at commit `{(s.get('commit') or 'unknown')[:10]}` on {s.get('cpu') or 'an unrecorded CPU'} "
             f"(torch threads: {s.get('torch_threads')}), {wall} of training; then `python -m interp.analyze`."
             + (f" {s['note']}" if s.get("note") else ""), "",
             "| quantity | value |", "|---|---|",
             f"| task, family, p | {s['task']}, {s['family']}, {_num(s['p'])} |",
             f"| final step: train / test accuracy, test loss | {fmt_step(s['steps'])}: {_num(s['train_acc'], 4)} / "
             f"{_num(s['test_acc'], 4)}, {_num(s['test_loss'])} |",
             f"| first step at 99 % test accuracy | {fmt_step(s['test_99_step']) if s['test_99_step'] is not None else 'not reached'} |"]
    if "test_best" in s:
        b = s["test_best"]
        lines.append(f"| best test accuracy, above the final one (parameter norm then; final) | {_num(b['test_acc'], 4)} at step "
                     f"{fmt_step(b['step'])} ({_num(b['param_norm'])}; {_num(b['final_param_norm'])}) |")
    if "key" in s:
        lines.append(f"| key frequencies or irreps (neuron clustering) | {', '.join(map(str, s['key'])) or 'none'} |")
        lines.append(f"| embedding check | {', '.join(map(str, s['key_embedding'])) or 'none'} |")
    for name, sh in s.get("irrep_shares", {}).items():
        lines.append(f"| {name}: share of W_E / of the first operand's total embedding / of W_U | "
                     f"{sh['W_E_frac']:.1%} / {_num(sh['x_embed_frac'] * 100 if sh['x_embed_frac'] is not None else None, 4)}% / "
                     f"{sh['W_U_frac']:.1%} |")
    if "phase_step" in s:
        steps = lambda xs: ", ".join("none" if x is None else fmt_step(x) for x in xs)  # noqa: E731
        lines.append(f"| data | {'infinite (a fresh batch every step)' if s['infinite_data'] else 'finite'} |")
        lines.append(f"| steepest fall of the test loss (a factor 3 or more) | {'none' if s['phase_step'] is None else fmt_step(s['phase_step'])} |")
        lines.append(f"| each answer position's steepest fall | {steps(s.get('position_falls') or [])} |")
        if s.get("final_test_loss_pos"):
            lines.append(f"| final test loss at each answer position | {', '.join(_num(v) for v in s['final_test_loss_pos'])} |")
    if "induction" in s:
        i = s["induction"]
        lines.append(f"| largest induction score: first / final checkpoint; first step at 0.4 | {i['first']:.2f} / {i['final']:.2f}; "
                     f"{'not reached' if i['from_step'] is None else fmt_step(i['from_step'])} |")
    if "local_complexity" in s:
        lc = s["local_complexity"]
        at = lambda r: f"{r['train']:.1f} / {r['test']:.1f} / {r['random']:.1f} (step {fmt_step(r['step'])})"  # noqa: E731
        lines.append(f"| local complexity, train / test / random points: first checkpoint | {at(lc['first'])} |")
        lines.append(f"| ... at the lowest and the highest around training points | {at(lc['train_low'])}; {at(lc['train_high'])} |")
        lines.append(f"| ... final | {at(lc['final'])} |")
        lines.append(f"| test accuracy: half of its rise reached at | "
                     f"{'-' if lc['test_half_rise'] is None else fmt_step(lc['test_half_rise'])} |")
    if s.get("feature_rank"):
        if s.get("feature_rank_first"):
            lines.append(f"| feature rank per hidden layer (first checkpoint) | {'; '.join(s['feature_rank_first'])} |")
        lines.append(f"| feature rank per hidden layer (final) | {'; '.join(s['feature_rank'])} |")
    if "llc" in s:
        l = s["llc"]
        st = ", ".join(f"{k} {v}" for k, v in l["settings"].items() if v is not None)
        lines.append(f"| LLC ({l['n_checkpoints']} checkpoints; {st}): first, peak, last | "
                     f"{l['first'][1]:.1f} (step {fmt_step(l['first'][0])}), {l['peak'][1]:.1f} (step {fmt_step(l['peak'][0])}), "
                     f"{l['last'][1]:.1f} (step {fmt_step(l['last'][0])}) |")
        if l.get("after_99"):
            lines.append(f"| LLC from the first step at 99 % test accuracy on: lowest, highest | {l['after_99'][0]:.1f}, {l['after_99'][1]:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = Parser(prog="python -m interp.snapshot", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", nargs="?", type=Path, metavar="RUN_DIR", help="a trained and analysed run directory, or a "
                   "sweep over seeds of one preset (a directory with sweep.json: seeds.json instead of run.json)")
    p.add_argument("out", nargs="?", type=Path, metavar="DIR", help="where run.json goes (e.g. docs/data/models/NAME; for a "
                   "sweep, docs/data/presets/PRESET)")
    p.add_argument("--command", default=None, help="the command that trained the run (recorded as it is)")
    p.add_argument("--note", default=None, help="a sentence printed after the provenance line (e.g. what else was run on it)")
    p.add_argument("--markdown", type=Path, default=None, metavar="DIR", help="instead: print DIR/run.json as the docs' table")
    args = p.parse_args(argv)
    try:
        if args.markdown is not None:
            print(markdown(args.markdown), end="")
            return 0
        if args.run_dir is None or args.out is None or not args.command:
            p.error("RUN_DIR, DIR and --command are needed (or --markdown DIR)")
        sweep = (args.run_dir / "sweep.json").is_file()
        s = seeds_snapshot(args.run_dir, args.command, args.note, args.out.name) if sweep else snapshot(args.run_dir, args.command, args.note)
    except (RunError, FileNotFoundError) as e:
        print(f"python -m interp.snapshot: error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    runs.write_text(args.out / (SEEDS_FILE if sweep else RUN_FILE), json.dumps(s, indent=1) + "\n")
    print(markdown(args.out), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
