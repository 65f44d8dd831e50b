"""Run every analyser over every checkpoint of a run and cache the tables in ``RUN_DIR/analysis/``.

    python -m interp.analyze checkpoints/mod_add_p113           # analyse new checkpoints only
    python -m interp.analyze checkpoints/mod_add_p113 --force   # recompute everything
    python -m interp.analyze checkpoints/mod_add_p113 --readme  # print the README's results block
    python -m interp.analyze checkpoints/s4 --irrep standard    # a group run: one irrep's rows of irreps.csv
    python -m interp.analyze checkpoints/mod_add_p113 --llc     # also the LLC (devinterp; interp.llc)

Files (read them with ``load_analysis``, plain ``csv`` or ``pandas.read_csv``; an empty cell is NaN):

``analysis/checkpoints.csv`` (``ANALYSIS_TABLE``), one row per checkpoint: ``step`` and the columns of
every analyser in ``interp.analysers.ANALYSERS`` (listed with their docs under "Columns" below). An
analyser that does not apply to a run (its task, model family or config) leaves its cells empty and
``summary.json``'s ``skipped`` says why, under the analyser's name.

``analysis/frequencies.csv`` (``FREQUENCY_TABLE``), one row per (checkpoint, frequency k = 1..(p-1)/2):
    step, freq, W_E_norm, W_L_norm (sqrt(cos^2 + sin^2) Fourier norms), excluded_loss (train loss
    with only that frequency's two directions removed; key frequencies only, empty for the others)

``analysis/layers.csv`` (``interp.analysers.LAYER_TABLE``; MLPs and transformers with more than one layer), one
row per (checkpoint, hidden layer): ``step, layer, width, feature_rank`` (Fan et al.'s numerical rank of the
covariance of the layer's activations over up to 2 048 test examples), ``key_frac`` (the share of its centred
activation variance over all pairs in the key frequencies' or irreps' blocks; empty where there are none).

``analysis/positions.csv`` (``interp.analysers.POSITION_TABLE``; sequence tasks), one row per (checkpoint, answer
position): ``step, answer, position`` (the input position whose output predicts it), ``train_loss, test_loss,
train_acc, test_acc`` of that answer token, and for ``add5`` ``test_loss_carry, test_loss_no_carry``: its test loss
on the examples with and without a carry into that digit. ``summary.json``'s ``position_falls`` holds the step of
each answer position's steepest fall of test loss (``analyses.phase.fall_step`` on ``metrics.jsonl``).

``analysis/heads.csv`` (``interp.analysers.HEAD_TABLE``; a transformer on a sequence task), one row per
(checkpoint, layer, head): ``step, layer, head, prev_token, induction`` (the scores of ``analyses.phase`` over the
first 256 test examples). ``summary.json``'s ``induction_heads`` lists the heads whose induction score on the
final checkpoint is at least 0.4; ``checkpoints.csv``'s ``ablated_*_loss`` are the losses with them mean-ablated.
That is the sequence tasks' counterpart of the excluded loss: the Fourier directions do not exist there, but the
circuit that generalises (the induction heads) can be removed, and the training loss without it shows whether
the fit of the training set already depends on it.

``analysis/local_complexity.csv`` (``interp.analysers.LC_TABLE``; ReLU MLPs, on unless ``--no-local-complexity``),
one row per (checkpoint, hidden layer): ``step, layer, train, test, random``, the mean number of that layer's
neurons whose region boundary cuts a small neighbourhood of a training point, a test point and a random point
of the box the training points span (``analyses.local_complexity``: Humayun et al.'s cross-polytope of 8
random directions, radius ``--lc-radius`` x the training points' RMS norm, 64 points per split; for token
inputs the space is the operand vectors side by side). ``summary.json``'s ``lc_settings`` records the settings;
a new radius recomputes every checkpoint.

``analysis/llc.csv`` and ``llc.json`` (only with ``--llc``; ``interp.llc``, optional extra ``llc``): the local
learning coefficient of every ``--llc-every``-th checkpoint (llc_mean after the burn-in, llc_std over SGLD
chains, per-chain values, n_beta, whether the calibration passed the settings) with the sampler's settings and
loss traces; ``--llc-calibrate`` writes ``llc_calibration.csv`` / ``.json`` / ``.html`` (an epsilon x gamma grid
on one checkpoint judged by the stability rule; ``--llc`` uses the chosen point and refuses settings that did
not pass unless ``--llc-force``).

``analysis/summary.json`` (``SUMMARY_FILE``): ``key_frequencies`` (clustering the last hidden layer's neurons on
the final checkpoint, ``analyses.fourier``), ``key_frequencies_step``, ``key_frequencies_embedding`` (Fourier
norm of the operands' embeddings > max/4), ``key_frequencies_by_layer`` (each hidden layer clustered alone), ``neurons_per_frequency``, ``unclustered_neurons``, ``dead_neurons``,
``small_clusters`` (frequencies with fewer than ``min_cluster_neurons`` neurons: not key),
``cluster_threshold``, ``mechanism_note`` (why the clock/pizza columns are empty, or null), the stability of the set (``key_frequencies_by_threshold`` at thresholds
0.8 / 0.85 / 0.9, ``key_frequencies_by_step`` on the last three checkpoints, ``key_frequencies_stable``
if all of them agree), ``phases`` (steps, with their definitions in ``phase_definitions`` and, where
Fourier phases are left out, the reason in ``phases_note``), ``fourier_applies`` and ``note``,
``skipped`` ({analyser: reason} for each analyser that does not apply), ``family`` (the model family),
``cmem_neurons`` (the neurons the circuit split gives to C_mem; the others
are C_gen's), ``cgen_more_efficient_from`` (the step from which cgen_efficiency >= cmem_efficiency at
every later checkpoint, or null), ``steps_computed`` (by the last call) and ``tables``: the SHA-256 of each table written with it.
``summary.json`` is written last and read as the manifest of the set: tables whose hash does not
match it (left by an analysis that was interrupted between files) are not used, and a re-run
recomputes them.

Restricted and excluded loss (Nanda et al. 2023): treat each logit column (one output class) as a
function over the p^2 inputs and project it onto the key-frequency directions (``analyses.fourier``:
cos/sin(w_k(a + b)) for each key frequency k, w_k = 2 pi k / p; orthonormal and orthogonal to the
constant). The *restricted* logits keep only that projection plus the per-class mean over inputs;
their loss on the test split shows how well the Fourier circuit alone already generalises. The
*excluded* logits are the logits minus the projection; their loss on the train split shows how
much the model still fits the training set without the circuit (memorisation).

Conventions: the key frequencies of the final checkpoint, and its split of the neurons between
C_gen and C_mem, are used for every checkpoint (as Nanda et al. do). mod_add uses the sum directions cos/sin(w(a + b)), mod_sub
the difference directions cos/sin(w(a - b)). For the other tasks (and even p) the Fourier columns
are left empty and the command prints one line saying why.

Groups (``interp.group_analysis``, whose docstring has the details): ``mod_mul`` and ``mod_div`` with a
prime p are analysed in the *log basis* (Z_{p-1} in discrete-log coordinates, over the (p - 1)^2 pairs of
non-zero residues: zero has no logarithm), the group tasks ``s4``/``s5``/``a5`` in the *irreps basis*
(``analyses.groups``). Every column above is then filled with "key frequency" read as "key irrep"
(a frequency of Z_{p-1} in the log basis) and the projections onto its isotypic directions; Gini is
over the norms of the element rows of W_E and element columns of W_L in the isotypic basis.
``analysis/irreps.csv`` (``group_analysis.IRREP_TABLE``) replaces ``frequencies.csv``: one row per
(checkpoint, irrep) with ``step, irrep, dim, W_E_frac, x_embed_frac, W_U_frac, W_L_frac, mlp_frac, excluded_loss``.
The summary says which basis was used (``basis``: ``fourier`` is absent, ``log`` or ``irreps``, with
``basis_note``) and holds the key irreps (``key_irreps``, ``key_irrep_names``, ...).

Phases (steps; the full wording is in ``PHASE_DEFINITIONS`` and in the summary):
    memorised                first train_acc >= 0.99
    circuit_formation_start  the excluded loss starts its rise: last checkpoint before the peak at
                             which the smoothed log excluded loss is within 10% of its rise from its
                             minimum (after 'memorised') to its peak (a rise of at least 2x)
    cgen_overtakes_cmem      first cgen_logit >= cmem_logit after 'memorised'
    cleanup_start            peak of the smoothed excluded loss after 'memorised', once it has fallen
                             10% below it: the end of its rise through circuit formation
    test_acc_0.9, grokked    first test_acc >= 0.9, >= 0.99
"Smoothed" is a centred running mean of log10(excluded_loss) over 5 checkpoints (fewer at the ends
of the run): after memorisation the excluded loss can sit near 1e-3, where checkpoint-to-checkpoint
noise is large on a log scale, so neither its raw minimum nor its raw peak is used. The
excluded-loss markers follow Nanda et al., who describe the phases by it (falls in memorisation,
rises in circuit formation, stops rising in cleanup); they read their boundaries off the curves
(memorisation ends at 1.4k steps, cleanup starts at 9.4k for their p = 113 run) rather than by a
rule, so the steps here need not match theirs, even for the same curves. The three Fourier phases
are only defined when key frequencies were found: without them the excluded loss is just the train
loss and C_gen is empty, so they are ``None`` and ``phases_note`` says why.

Incremental: a re-run analyses only checkpoints missing from the table. The key frequencies and
the neuron split are recomputed when the final checkpoint changed; if either differs from the
cached one, every row is recomputed (the key-frequency and circuit columns depend on them),
otherwise only the new rows.

Speed: one model is built and each checkpoint's tensors are loaded into it; the logits of all inputs
come from one batched call of the family's fast path (``interp.model.fast_logits`` for the 1-layer
transformer) or its forward; every analyser works on those logits and the small weight matrices.
One torch thread by default (``--threads``).

Python: ``analyze_run`` (compute and cache), ``interp.analysis_files.load_analysis`` /
``load_frequency_table`` / ``load_irrep_table`` (read the cache), ``analysis_throughput`` (checkpoints
per second, for ``interp.bench``), ``interp.phases.detect_phases``, ``interp.text.results_block``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from tqdm.auto import tqdm

from analyses import efficiency
from interp import group_analysis, runs
from interp import analysers
from interp.analysers import FREQUENCY_TABLE, Checkpoint, analysis_columns, extra_tables, fourier_note
from interp.analysis_files import (ANALYSIS_TABLE, ANALYSIS_VERSION, SUMMARY_FILE, load_analysis, load_cache, load_frequency_table,
                                   load_irrep_table, sha256, to_csv)
from interp.cli import Parser
from interp.config import ConfigError
from interp.device import resolve
from interp.families import build_model, family_of, to_device
from interp.phases import FOURIER_PHASES, PHASE_DEFINITIONS, detect_phases
from interp.runs import Run, RunError
from interp.speed import flush_denormals
from interp.text import key_frequency_sentence, results_block

log = logging.getLogger(__name__)

# the API: analyse a run, and read what was cached (interp.analysis_files)
__all__ = ["ANALYSIS_TABLE", "FREQUENCY_TABLE", "SUMMARY_FILE", "analyze_run", "analysis_throughput", "load_analysis",
           "load_frequency_table", "load_irrep_table", "main"]


# ---- the whole run ------------------------------------------------------------------------------
@contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` torch intra-op threads (``None``: leave the setting), then restore it."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Loader:
    """One reusable model per run; each checkpoint's weights are loaded into it and its logits of
    every input computed in one batched call (the family's fast path where it applies)."""

    def __init__(self, run: Run, device: torch.device):
        cfg = run.config
        self.run, self.family, self.device = run, family_of(cfg), device
        with torch.no_grad():
            self.model = build_model(cfg).eval()
        self.dev_model = self.model if device.type == "cpu" else to_device(build_model(cfg), device).eval()
        self.fast = self.family.fast is not None and self.family.fast.applies(self.model, cfg)

    @torch.no_grad()
    def __call__(self, step: int) -> Checkpoint:
        path = runs.ckpt_path(self.run.path, step)
        state, _ = runs.read_tensors(path)
        runs.load_state_dict_into(self.model, state, path)
        if self.dev_model is not self.model:
            self.dev_model.load_state_dict(self.model.state_dict())
        x, cfg = self.run.dataset.inputs.to(self.device), self.run.config
        logits = self.family.fast.logits(self.dev_model, cfg, x) if self.fast else self.family.forward(self.dev_model, cfg, x)
        return Checkpoint(self.run, step, self.model, logits.cpu())


def analyze_run(
    run_dir: str | Path, force: bool = False, progress: bool = False, write: bool = True, threads: int | None = 1,
    device: str | torch.device = "cpu", local_complexity: analysers.LocalComplexityOptions | None = None,
) -> tuple[list[dict], dict]:
    """Analyse every checkpoint of a run not yet in its cached tables, and write the tables.

    Args:
        run_dir: a run directory written by ``python -m interp.train``.
        force: ignore the cache and recompute every checkpoint.
        progress: show a progress bar.
        write: write the tables into ``run_dir/analysis/`` (``False``: compute only, for benchmarks).
        threads: torch threads for the analysis (restored afterwards; ``None`` leaves them). One by
            default: the per-checkpoint products are small, a second thread gained nothing on the
            2-core machine and made the analysis 3-14x slower whenever another process was busy.
        device: where the model's forward over every input runs (the analysers' products, which
            are small, stay on the CPU).
        local_complexity: the ``local_complexity`` analyser's options (``None``: on, default radius); a
            changed radius recomputes every checkpoint.
    Returns:
        ``(rows, summary)``: one dict per checkpoint (``interp.analysers.analysis_columns()``) sorted by
        step, and the summary (see the module docstring); ``summary["steps_computed"]`` lists the
        checkpoints this call analysed.
    Raises:
        RunError: the run directory, its config, split or a checkpoint is missing or corrupt; nothing
        is written then.
    """
    token = analysers.LC_OPTIONS.set(local_complexity or analysers.LocalComplexityOptions())
    try:
        with torch_threads(threads), flush_denormals():  # interp.speed: denormals slow every thread they reach
            return _analyze_run(Path(run_dir), force, progress, write, torch.device(device))
    finally:
        analysers.LC_OPTIONS.reset(token)


def _analyze_run(run_dir: Path, force: bool, progress: bool, write: bool, device: torch.device) -> tuple[list[dict], dict]:
    t0 = time.perf_counter()
    run = runs.load_run(run_dir)
    if not run.steps:
        raise RunError(f"{run_dir / runs.CKPT_DIR}: run has no checkpoints")
    cfg, final = run.config, run.steps[-1]
    columns = analysis_columns()
    cache = None if force else load_cache(run_dir)
    note = fourier_note(run)
    summary = {"version": ANALYSIS_VERSION, "task": cfg.task, "p": cfg.p, "family": cfg.family,
               "fourier_applies": note is None, "note": note}
    active, skipped = [], {}
    for a in analysers.ANALYSERS:
        why = a.applies(run)
        if why is None:
            active.append(a)
        else:
            skipped[a.name] = why
    summary["skipped"] = skipped
    for a in active:
        if a.summarise is not None:
            part = a.summarise(run, cache[2] if cache else None)
            if cache and any(k in part and cache[2].get(k) != part[k] for k in a.depends_on):
                log.info("%s: the %s summary changed: recomputing every checkpoint", run_dir, a.name)
                cache = None
            summary.update(part)
    key_freqs = summary.get("key_frequencies", summary.get("key_irreps", []))

    have = {r["step"]: r for r in cache[0]} if cache else {}
    have_extra: dict[int, dict[str, list[dict]]] = {}
    for name, rows in (cache[1] if cache else {}).items():
        for r in rows:
            have_extra.setdefault(r["step"], {}).setdefault(name, []).append(r)
    todo = [s for s in run.steps if s not in have]

    states = {a.name: a.start(run, summary) if a.start is not None else None for a in active}
    load = _Loader(run, device) if todo else None
    for step in tqdm(todo, desc=f"analyse {run_dir.name}", unit="ckpt", disable=not progress, dynamic_ncols=True):
        ck = load(step)
        row, extra = {c: math.nan for c in columns}, {}
        for a in active:
            out = a.row(ck, states[a.name])
            values, more = out if isinstance(out, tuple) else (out, {})
            row.update(values)
            for name, rs in more.items():
                extra.setdefault(name, []).extend(rs)
        row["step"] = step
        have[step], have_extra[step] = row, extra

    rows = [have[s] for s in run.steps]
    summary["phases"] = detect_phases(rows, fourier_phases=bool(key_freqs))
    summary["cgen_more_efficient_from"] = efficiency.more_efficient_from(
        [r["step"] for r in rows], [r["cgen_efficiency"] for r in rows], [r["cmem_efficiency"] for r in rows])
    summary["phase_definitions"] = PHASE_DEFINITIONS
    summary["mechanism_note"] = skipped.get("mechanism")
    if note is None and not key_freqs:
        summary["phases_note"] = (f"no key frequency was found on the final checkpoint (step {final}): the excluded loss is "
                                  "then just the train loss and C_gen is empty, so the Fourier phases "
                                  f"({', '.join(FOURIER_PHASES)}) are not defined")
    summary["n_checkpoints"] = len(rows)
    summary["steps_computed"] = todo
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    tables = {ANALYSIS_TABLE: to_csv(rows, columns)}
    for name, cols in extra_tables().items():
        extra_rows = [r for s in run.steps for r in have_extra.get(s, {}).get(name, [])]
        if extra_rows:
            tables[name] = to_csv(extra_rows, cols)
    summary["tables"] = {name: sha256(text) for name, text in tables.items()}
    if write:  # the tables first, the summary (their manifest) last
        d = run_dir / runs.ANALYSIS_DIR
        for name in extra_tables():
            if name not in tables and (d / name).is_file():
                (d / name).unlink()  # a table of an earlier analysis that this one does not write
        for name, text in tables.items():
            runs.write_text(d / name, text)
        runs.write_text(d / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    log.info("%s: analysed %d of %d checkpoints in %.1fs", run_dir, len(todo), len(rows), summary["seconds"])
    return rows, summary


def analysis_throughput(run_dir: str | Path, threads: int | None = 1) -> dict[str, float]:
    """Time a full analysis of ``run_dir`` (no cache, nothing written): checkpoints per second.

    Args:
        run_dir: a run directory.
        threads: torch threads, as in ``analyze_run``.
    Returns:
        ``{"n_checkpoints", "seconds", "checkpoints_per_s"}``; the seconds include loading the run and
        finding the key frequencies.
    """
    t = time.perf_counter()
    rows, _ = analyze_run(run_dir, force=True, write=False, threads=threads)
    dt = time.perf_counter() - t
    return {"n_checkpoints": len(rows), "seconds": round(dt, 3), "checkpoints_per_s": round(len(rows) / dt, 2)}


# ---- command line ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m interp.analyze", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run directory written by python -m interp.train")
    p.add_argument("--force", action="store_true", help="ignore the cached tables and recompute every checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1; a second one only helps on an idle machine)")
    p.add_argument("--device", default="cpu", help="where the model's forward runs: cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--readme", action="store_true", help="print only the README's results block (Markdown) for this run")
    p.add_argument("--irrep", default=None, metavar="NAME", help="group and log-basis runs: also print this irrep's shares "
                   "and excluded loss per checkpoint (its name, e.g. 'standard', '[3,2]', 'freq 5', or its index)")
    g = p.add_argument_group("local complexity (ReLU MLPs; Humayun et al.)")
    g.add_argument("--no-local-complexity", action="store_true", help="skip the lc_* columns (local_complexity.csv)")
    g.add_argument("--lc-radius", type=float, default=analysers.LC_RADIUS, metavar="R",
                   help=f"the neighbourhood's radius as a fraction of the training points' RMS norm (default {analysers.LC_RADIUS})")
    from interp import llc
    llc.add_arguments(p)
    return p


def _fmt(v) -> str:
    return "-" if v is None else str(v)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads {args.threads}: must be >= 1")
    if not args.lc_radius > 0 or not math.isfinite(args.lc_radius):
        parser.error(f"--lc-radius {args.lc_radius}: must be a number > 0")
    lc = analysers.LocalComplexityOptions(enabled=not args.no_local_complexity, radius=args.lc_radius)
    from interp import llc
    try:
        llc_cfg = llc.config_from_args(args)
    except llc.LLCError as e:
        parser.error(str(e))
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        device = resolve(args.device)
        irrep = None if args.irrep is None else group_analysis.irrep_from_flag(args.run_dir, args.irrep)
        rows, summary = analyze_run(args.run_dir, force=args.force, progress=not args.quiet, threads=args.threads, device=device,
                                    local_complexity=lc)
    except (RunError, ConfigError) as e:
        print(f"python -m interp.analyze: error: {e}", file=sys.stderr)
        return 2
    if irrep is not None:
        print(group_analysis.irrep_lines(load_irrep_table(args.run_dir), summary, irrep), end="")
    if args.readme:
        print(results_block(rows, summary, load_irrep_table(args.run_dir)), end="")
        return 0
    out = args.run_dir / runs.ANALYSIS_DIR
    print(f"{args.run_dir}: analysed {len(summary['steps_computed'])} new of {len(rows)} checkpoints "
          f"in {summary['seconds']:.1f}s -> {out}/{ANALYSIS_TABLE}")
    if summary.get("basis") in ("log", "irreps"):
        print(f"{summary['basis_note']}")
        print(f"key irreps (step {summary['key_irreps_step']}): {group_analysis.key_irrep_sentence(summary)}")
    elif not summary.get("fourier_applies"):
        print(f"note: {summary['note']}; only losses, accuracies and weight norms were computed")
    else:
        print(f"key frequencies (step {summary['key_frequencies_step']}): {key_frequency_sentence(summary)}; "
              f"embedding check: {summary['key_frequencies_embedding']}")
    if summary.get("mechanism_note"):
        print(f"note: {summary['mechanism_note']}")
    if summary.get("position_falls") is not None:
        print(f"steepest fall of each answer position's test loss: {summary['position_falls']}"
              + (f"; induction heads (final checkpoint): {summary['induction_heads']}" if "induction_heads" in summary else ""))
    if "lc_settings" in summary:
        first, last = rows[0], rows[-1]
        print(f"local complexity (boundaries near a point; train / test / random): step {first['step']} "
              + " / ".join(f"{first[f'lc_{s}']:.3g}" for s in analysers.LC_SPLITS) + f", step {last['step']} "
              + " / ".join(f"{last[f'lc_{s}']:.3g}" for s in analysers.LC_SPLITS))
    ph = summary["phases"]
    print("phases: " + ", ".join(f"{k} {_fmt(v)}" for k, v in ph.items()))
    if summary.get("phases_note"):
        print(f"note: {summary['phases_note']}")
    if llc_cfg is not None:
        try:
            llc.main_part(args, llc_cfg)
        except (llc.LLCError, RunError) as e:
            print(f"python -m interp.analyze: error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
