"""Many runs as one grid: stacked on this machine, or spread over a Ray cluster.

    python -m interp.sweep mod_add --preset small --grid frac=0.3,0.4,0.5 --grid seed=1,2,3 --out sweeps/frac
    python -m interp.sweep mod_add --preset small --grid seed=1,2,3,4 --out sweeps/s --backend ray
    python -m interp.sweep mod_add --p 113 --grid train_size=1000,2000 --out sweeps/d --backend ray --address HOST:6379

The command takes ``interp.train``'s flags (the base config of every member) plus ``--grid FIELD=V1,V2``
(repeatable; the members are the product of all grids). It

1. expands the spec into member configs and writes ``DIR/sweep.json`` (the spec and the members);
2. groups members whose tensors have the same shapes (``interp.stack.pack_key``: task, p, model
   sizes, schedule) into packs of at most ``--pack`` members, sorted by training-set size so that
   little padding is wasted; members with an option the stack does not implement train alone
   with ``interp.train``;
3. trains each pack as one stack (``interp.stack``): ``--backend local`` one pack after another in this
   process, ``--backend ray`` one Ray task per pack;
4. writes every member as an ordinary run directory ``DIR/runs/<name>/`` (``<name>`` joins the varied
   fields, e.g. ``frac0.3_seed1``), and ``DIR/results.csv`` (``RESULT_COLUMNS``) as members finish.

Re-running the same command resumes: finished members are skipped, the others continue from their
saved state. A member that fails (the training loss becomes NaN, or a combination of grid values
that no config allows) is marked ``failed`` with the reason; the others go on, and the command exits
with status 1 at the end. Bad input (unknown field, bad value, empty grid, a field both gridded and
given as a flag, an unreachable ``--address``, a ``DIR`` that holds another sweep) exits with status 2
and one line, before anything is written.

On a cluster every worker writes its members' run directories under ``DIR`` itself, so ``DIR`` must
be on storage that the driver and all workers share (NFS or similar), at the same path.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import multiprocessing
import os
import re
import signal
import socket
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from analyses.timing import first_step
from interp import runs, tables
from interp.cli import Parser
from interp.config import ConfigError, TrainConfig, value_parser
from interp.device import resolve
from interp.runs import RunError
from interp.speed import tune_allocator
from interp.stack import Member, pack_key, saved_step, stackable, train_pack
from interp.train import Diverged, add_config_flags, given_fields, train

log = logging.getLogger(__name__)

SWEEP_FILE = tables.SWEEP_FILE
RESULTS_FILE = tables.RESULTS_FILE
RUNS_DIR = "runs"
OUTCOME_COLUMNS = ["status", "train_99_step", "test_99_step", "final_step", "final_train_acc", "final_test_acc",
                   "final_test_loss", "final_param_norm", "wall_s", "reason"]
FIELD_NAMES = [f for f in TrainConfig.__dataclass_fields__]


class SweepError(Exception):
    """Bad sweep input (spec, output directory, backend address); the message names it."""


# ---- the spec ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    """A sweep: the fields every member shares (``base``) and the grid of values to cross."""

    base: dict
    grid: dict[str, list]

    def to_dict(self) -> dict:
        return {"base": self.base, "grid": self.grid}


@dataclass(frozen=True)
class MemberSpec:
    """One grid point: its name, its grid values, and its config (or why no config allows it)."""

    name: str
    values: dict
    config: TrainConfig | None
    error: str | None = None


def parse_grid(items: list[str], base: dict, explicit: set[str] = frozenset()) -> dict[str, list]:
    """``["frac=0.3,0.5", "seed=1,2"]`` -> ``{"frac": [0.3, 0.5], "seed": [1, 2]}``, each value checked.

    Raises:
        SweepError: unknown field, empty or unparsable value list, a repeated field, a field also
            given as a plain flag, or a value that the field does not allow on its own.
    """
    grid: dict[str, list] = {}
    for item in items:
        name, sep, text = item.partition("=")
        field = name.strip().replace("-", "_")
        if not sep:
            raise SweepError(f"--grid {item!r}: expected FIELD=V1,V2,...")
        if field == "task":
            raise SweepError("--grid task: the task is the positional argument; run one sweep per task")
        if field not in FIELD_NAMES:
            raise SweepError(f"--grid {name}: unknown field; fields: {', '.join(f for f in FIELD_NAMES if f != 'task')}")
        if field in grid:
            raise SweepError(f"--grid {name}: given twice; list all its values in one --grid")
        if field in explicit:
            raise SweepError(f"--grid {name}: also given as --{field.replace('_', '-')}; give it in one place")
        texts = [t.strip() for t in text.split(",")]
        if not text.strip() or any(t == "" for t in texts):
            raise SweepError(f"--grid {item!r}: empty value; give comma-separated values, e.g. {field}=1,2")
        parse = value_parser(field)
        values = []
        for t in texts:
            try:
                values.append(parse(t))
            except ValueError:
                raise SweepError(f"--grid {name}: {t!r} is not a valid {parse.__name__}") from None
        if len(set(map(repr, values))) != len(values):
            raise SweepError(f"--grid {name}: repeated value in {text!r}")
        grid[field] = values
    if not grid:
        raise SweepError("no --grid given: a sweep varies at least one field (use python -m interp.train for one run)")
    check_values(Spec({k: v for k, v in base.items() if k not in grid}, grid))
    return grid


def check_values(spec: Spec) -> None:
    """Refuse a spec whose shared fields, or one of whose grid values on its own, no config allows.

    Combinations of grid values that clash (``n_heads`` not dividing a gridded ``d_model``) are not
    refused here: those members fail, the others run.
    """
    try:
        runs.init_checkpoint(TrainConfig(**spec.base))  # and init_from names a checkpoint that fits
    except ConfigError as e:
        raise SweepError(str(e)) from None
    for field, values in spec.grid.items():
        for v in values:
            try:
                runs.init_checkpoint(TrainConfig(**{**spec.base, field: v}))
            except ConfigError as e:
                raise SweepError(f"--grid {field.replace('_', '-')}={v!r}: {e}") from None


def _slug(v) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(v))


def expand(spec: Spec) -> list[MemberSpec]:
    """The members of ``spec``: the product of its grids, in grid order (last field fastest)."""
    out = []
    for combo in itertools.product(*spec.grid.values()):
        values = dict(zip(spec.grid, combo))
        name = "_".join(f"{k}{_slug(v)}" for k, v in values.items())
        try:
            out.append(MemberSpec(name, values, TrainConfig(**{**spec.base, **values})))
        except ConfigError as e:
            out.append(MemberSpec(name, values, None, str(e)))
    if len({m.name for m in out}) != len(out):
        raise SweepError("grid values give two members the same directory name; use values that differ in letters or digits")
    return out


# ---- outcomes ----------------------------------------------------------------------------------
def outcome(run_dir: Path) -> dict:
    """A finished member's row of ``results.csv`` from its run directory's metrics."""
    metrics = runs.read_metrics(run_dir)
    last = metrics[-1]
    return {"status": "ok", "train_99_step": first_step(metrics, "train_acc", 0.99), "test_99_step": first_step(metrics, "test_acc", 0.99),
            "final_step": last["step"], "final_train_acc": last["train_acc"], "final_test_acc": last["test_acc"],
            "final_test_loss": last["test_loss"], "final_param_norm": last["param_norm"], "wall_s": last["elapsed_s"],
            "reason": (runs.ended(run_dir) or {}).get("reason", "")}


def failed(reason: str, run_dir: Path | None = None) -> dict:
    row = {k: None for k in OUTCOME_COLUMNS}
    metrics = runs.read_metrics(run_dir) if run_dir is not None else []
    if metrics:  # what it reached before failing
        row.update({k: v for k, v in outcome(run_dir).items() if k.startswith(("train_99", "test_99", "final_", "wall"))})
    return {**row, "status": "failed", "reason": reason}


def run_pack(members: list[tuple[str, dict, str]], device: str = "cpu", threads: int | None = None,
             on_progress: Callable[[int, list[dict]], None] | None = None) -> dict[str, dict]:
    """Train one pack and return ``{member name: outcome row}``; what both backends call.

    Args:
        members: ``(name, config dict, run directory)`` of each member (plain data, so a Ray task
            can receive it).
        device: torch device of the stack.
        threads: torch threads for this pack (``None``: leave the setting).
        on_progress: passed to ``interp.stack.train_pack``.
    Never raises for a member's failure: a pack that fails as a whole marks all its members failed.
    """
    if threads:
        torch.set_num_threads(threads)
    cfgs = [(name, TrainConfig.from_dict(d), Path(out)) for name, d, out in members]
    try:
        if len(cfgs) == 1 and not stackable(cfgs[0][1]):
            name, cfg, out = cfgs[0]
            try:
                train(cfg, out, resume=True, progress=False, device=device)
            except Diverged as e:
                return {name: failed(str(e).split(": ", 1)[-1], out)}
            return {name: outcome(out)}
        done = train_pack([Member(cfg, out) for _, cfg, out in cfgs], device, on_progress)
    except (RunError, ValueError, RuntimeError) as e:
        reason = f"pack failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        log.warning(reason)
        return {name: failed(reason, out) for name, _, out in cfgs}
    return {name: failed(m.failed, out) if m.failed else outcome(out) for (name, _, out), m in zip(cfgs, done)}


def member_bytes(cfg: TrainConfig) -> int:
    """A generous estimate of the memory one member of a stack needs: float32 weights, gradients and
    AdamW moments, its per-token tables, and the evaluation's activations over every input (the
    largest part: ``[n_examples, d_mlp + d_vocab_out]`` mixed rows, post-ReLU and float64 logits)."""
    d, v, o = cfg.d_model, cfg.d_vocab, cfg.d_vocab_out
    params = (v + cfg.n_ctx) * d + 4 * d * d + 2 * d * cfg.d_mlp + d * o + 4 * d + cfg.d_mlp + o
    tables = cfg.n_heads * (2 * v + 1) * (cfg.d_mlp + o) * 2
    evaluation = cfg.n_examples * (2 * (cfg.d_mlp + o) + 4 * o)  # float32 rows, float64 logits and log-softmax
    return 4 * (5 * params + tables) + 4 * evaluation + 8 * cfg.n_train * 3 * cfg.n_heads


def _free_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None


MAX_AUTO_PACK = 256


def auto_pack_size(cfgs: list[TrainConfig], device: str | torch.device = "cpu", workers: int = 1) -> int:
    """``--pack auto``: as many members per stack as fit in the device's free memory (at most
    ``MAX_AUTO_PACK``, with a margin: 80 % of a GPU's free memory; on the CPU half of the available
    memory, shared by ``workers`` processes), and on the CPU no more than gives every core a pack.

    The split follows the machine's core count, not ``workers``, so that ``--workers 1`` and ``N``
    train the same packs: a member's bits can depend on its pack's size (a stack of one takes other
    kernels than a stack of three), never on which process trains the pack.

    Raises:
        SweepError: the free memory cannot be read on this machine (give ``--pack N``).
    """
    if not cfgs:
        return 1
    dev = torch.device(device)
    free = _free_bytes(dev)
    if free is None:
        raise SweepError("--pack auto: cannot read this machine's free memory; give the pack size as a number")
    need = max(member_bytes(c) for c in cfgs)
    if dev.type == "cuda":
        return max(1, min(MAX_AUTO_PACK, int(0.8 * free / need)))
    fit = int(0.5 * free / (need * max(workers, 1)))
    return max(1, min(MAX_AUTO_PACK, fit, math.ceil(len(cfgs) / (os.cpu_count() or 1))))


def plan_packs(todo: list[tuple[MemberSpec, Path]], pack_size: int) -> list[list[tuple[MemberSpec, Path]]]:
    """Group members by ``pack_key`` (and the step they resume from), smallest training sets first,
    into packs of at most ``pack_size``; members the stack cannot train go alone."""
    groups: dict[tuple, list] = {}
    for m, out in todo:
        key = pack_key(m.config, saved_step(out)) if stackable(m.config) else ("alone", m.name)
        groups.setdefault(key, []).append((m, out))
    packs = []
    for group in groups.values():
        group.sort(key=lambda mo: mo[0].config.n_train)
        packs += [group[i : i + pack_size] for i in range(0, len(group), pack_size)]
    return packs


# ---- the table ---------------------------------------------------------------------------------
def write_results(out: Path, spec: Spec, members: list[MemberSpec], rows: dict[str, dict]) -> None:
    """``results.csv``: one row per finished member, in member order (atomic rewrite, ``interp.tables``)."""
    table = [{"run": f"{RUNS_DIR}/{m.name}", **m.values, **{c: rows[m.name][c] for c in OUTCOME_COLUMNS}}
             for m in members if m.name in rows]
    tables.write_csv(out / RESULTS_FILE, table, ["run", *spec.grid, *OUTCOME_COLUMNS])


def read_results(out: Path) -> list[dict]:
    """Rows of ``DIR/results.csv`` as strings (empty cells are ``""``); ``[]`` if there is none yet.
    ``interp.experiments.common.results`` reads them typed."""
    return tables.read_csv(Path(out) / RESULTS_FILE, raw=True)


def _row_from_csv(r: dict) -> dict:
    def num(k):
        v = r.get(k, "")
        return None if v == "" else (int(v) if k.endswith("_step") else float(v))

    return {**{k: num(k) for k in OUTCOME_COLUMNS if k not in ("status", "reason")}, "status": r["status"], "reason": r.get("reason", "")}


def load_sweep(out: Path) -> tuple[Spec, list[MemberSpec]]:
    """The spec and members of the sweep in ``out`` (``sweep.json``)."""
    path = Path(out) / SWEEP_FILE
    try:
        d = json.loads(path.read_text())
        spec = Spec(d["spec"]["base"], d["spec"]["grid"])
    except FileNotFoundError:
        raise SweepError(f"{path}: missing; is {out} a sweep directory?") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise SweepError(f"{path}: not a sweep file ({e})") from None
    return spec, expand(spec)


# ---- backends ----------------------------------------------------------------------------------
def check_address(address: str) -> None:
    """Refuse a Ray address that is not ``HOST:PORT`` or where nothing listens (within 3 s)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise SweepError(f"--address {address!r}: expected HOST:PORT of a Ray head (e.g. 127.0.0.1:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as e:
        raise SweepError(f"--address {address}: cannot reach a Ray head there ({e.strerror or e})") from None


def _init_ray(address: str | None):
    if address:  # heads started by `ray start` require their token; ray reads this when imported
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    try:
        import ray
    except ImportError:
        raise SweepError("--backend ray: the ray package is not installed (pip install ray)") from None
    kwargs = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    if address:
        host = address.rpartition(":")[0]
        if host in ("127.0.0.1", "localhost"):
            kwargs["_node_ip_address"] = "127.0.0.1"  # keep every connection on loopback
        kwargs["address"] = address
    else:
        kwargs.update(num_cpus=os.cpu_count(), _node_ip_address="127.0.0.1")
    for attempt in (1, 2):  # Ray gives its local services a fixed 30 s to start; a busy machine can miss that once
        try:
            ray.init(**kwargs)
            return ray
        except Exception as e:  # noqa: BLE001 - ray raises a bare Exception for this
            ray.shutdown()
            if "timed out during startup" not in str(e):
                raise
            if attempt == 2:
                raise SweepError(f"--backend ray: Ray did not start ({str(e).splitlines()[0]})") from None
            log.warning("Ray did not start within its 30 s (a busy machine?); trying once more")


def _worker_init(parent: int) -> None:
    """A local worker process: one torch thread (one core), the allocator tuned as interp.train does,
    and (Linux) killed with its parent, so that a killed sweep leaves no worker writing its members."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
    torch.set_num_threads(1)
    tune_allocator()


def _run_local(packs, device, on_done, on_progress, workers: int = 1):
    """Packs one after another in this process (``workers`` 1), or in ``workers`` processes at once,
    each with one torch thread; a member computes the same bits either way (tests/test_sweep.py)."""
    if workers <= 1 or len(packs) <= 1:
        for pack in packs:
            on_done(run_pack(pack, device, on_progress=on_progress))
        return
    # spawn, not fork: a forked child inherits torch's OpenMP state, which deadlocks its first parallel op
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, len(packs)), mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(run_pack, pack, str(device), 1) for pack in packs]
        try:
            for f in as_completed(futures):
                on_done(f.result())
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def _run_ray(packs, device, address, on_done):
    ray = _init_ray(address)
    try:
        task = ray.remote(num_cpus=1)(run_pack)
        pending = [task.remote(pack, device, 1) for pack in packs]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            on_done(ray.get(ready[0]))
    finally:
        ray.shutdown()


def _configs(members: list[MemberSpec]) -> list:
    return [(m.name, m.config.to_dict() if m.config else m.error) for m in members]


def run_sweep(spec: Spec, out: Path, backend: str = "local", address: str | None = None, pack_size: int | str = 8,
              device: str = "cpu", progress: bool = True, workers: int = 1) -> dict[str, dict]:
    """Run (or resume) the sweep ``spec`` in ``out``; returns ``{member name: outcome row}``.

    ``pack_size`` is the most members per stack, or ``"auto"`` (``auto_pack_size``); ``workers`` is the
    number of local worker processes (``backend == "local"``).

    Raises:
        SweepError: ``out`` holds a different sweep, or the backend cannot start (nothing written).
    """
    out = Path(out)
    check_values(spec)
    members = expand(spec)
    if (out / SWEEP_FILE).is_file():
        old, old_members = load_sweep(out)
        # Same sweep = same members with the same configs. Comparing configs (defaults filled in) rather than
        # the raw spec lets a sweep written before a new config field existed be resumed.
        if _configs(old_members) != _configs(members):
            diff = next((k for k in ("grid", "base") if getattr(old, k) != json.loads(json.dumps(getattr(spec, k)))), "spec")
            raise SweepError(f"--out {out}: holds a different sweep ({diff} {getattr(old, diff)} there); use another --out")
    elif out.exists() and any(out.iterdir()):
        raise SweepError(f"--out {out}: exists and is not a sweep directory; use an empty or new directory")
    if backend == "ray" and address:
        check_address(address)
    rows = {r["run"].removeprefix(f"{RUNS_DIR}/"): _row_from_csv(r) for r in read_results(out)}
    runs.write_text(out / SWEEP_FILE, json.dumps({"spec": spec.to_dict(), "members": [
        {"name": m.name, "values": m.values, "config": m.config.to_dict() if m.config else None, "error": m.error} for m in members
    ]}, indent=2) + "\n")

    todo = []
    for m in members:
        run_dir = out / RUNS_DIR / m.name
        if m.name in rows:
            continue
        if m.config is None:
            rows[m.name] = failed(f"bad config: {m.error}")
        elif saved_step(run_dir) >= m.config.steps or runs.ended(run_dir):  # finished before the table was written
            rows[m.name] = outcome(run_dir)
        else:
            todo.append((m, run_dir))
    write_results(out, spec, members, rows)
    if pack_size == "auto":
        pack_size = auto_pack_size([m.config for m, _ in todo], device, workers if backend == "local" else 1)
    packs = [[(m.name, m.config.to_dict(), str(d)) for m, d in pack] for pack in plan_packs(todo, pack_size)]
    log.info("%s: %d members, %d to train in %d packs", out, len(members), len(todo), len(packs))

    bar = tqdm(total=len(members), initial=len(rows), disable=not progress, unit="run", desc=out.name, dynamic_ncols=True,
               bar_format="{l_bar}{bar}| {n:.1f}/{total} runs [{elapsed}<{remaining}{postfix}]")
    state = {"pack": 0}

    def show(n: float, postfix: str) -> None:
        bar.n = min(n, len(members))  # fractional: members done plus the running pack's share of its steps
        bar.set_postfix_str(postfix, refresh=False)
        bar.refresh()

    def on_progress(step: int, latest: list[dict]) -> None:
        pack = packs[min(state["pack"], len(packs) - 1)]
        steps = max(TrainConfig.from_dict(pack[0][1]).steps, 1)
        accs = [r["test_acc"] for r in latest]
        show(len(rows) + len(pack) * step / steps,
             f"pack {state['pack'] + 1}/{len(packs)} step {step}: test_acc {min(accs):.2f}-{max(accs):.2f}")

    def on_done(result: dict[str, dict]) -> None:
        rows.update(result)
        write_results(out, spec, members, rows)
        state["pack"] += 1
        accs = [r["final_test_acc"] for r in result.values() if r["final_test_acc"] is not None]
        show(len(rows), f"{state['pack']}/{len(packs)} packs done" + (f"; final test_acc {min(accs):.2f}-{max(accs):.2f}" if accs else ""))

    if backend == "ray":
        _run_ray(packs, device, address, on_done)
    else:
        _run_local(packs, device, on_done, on_progress, workers)
    bar.close()
    return rows


# ---- plans -------------------------------------------------------------------------------------
PLAN_STEPS = 3  # timed steps per shape (after two warm-up steps)


def _seconds_per_member_step(cfgs: list[TrainConfig], device: torch.device) -> tuple[float, float]:
    """``(train, evaluation)`` seconds per member of a few steps of these configs' actual shapes on
    ``device``: a stack of them if they stack, else ``interp.train``'s loss and AdamW alone."""
    from interp.train import loss_closure, make_optimizer
    from interp.families import build_model, to_device
    from interp.tasks import make_dataset

    cfgs = [c.replace(mask_from=None, init_from=None) for c in cfgs]  # the shapes are what costs time
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if stackable(cfgs[0]):
        from interp.stack import Pack

        pack = Pack([Member(c, None) for c in cfgs], device)
        step, evaluate = pack.train_step, pack.evaluate
    else:
        model = to_device(build_model(cfgs[0]), device)
        opt, loss = make_optimizer(model, cfgs[0]), loss_closure(model, cfgs[0], make_dataset(cfgs[0]).to(device))

        def step():
            loss(0).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        def evaluate():
            with torch.no_grad():
                loss(0)
    for _ in range(2):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(PLAN_STEPS):
        step()
    sync()
    t_step = (time.perf_counter() - t) / PLAN_STEPS
    t = time.perf_counter()
    evaluate()
    sync()
    return t_step / len(cfgs), (time.perf_counter() - t) / len(cfgs)


def plan(specs: list[Spec], args: argparse.Namespace, note: str = "") -> dict:
    """What running ``specs`` (the stages of a sweep) would cost here, without training: members,
    member-steps, and the wall time estimated from a few timed steps of each pack shape on
    ``args.device`` (``stop_after_grok`` members may end earlier: the steps are an upper bound)."""
    from interp.device import name as machine_name
    from interp.speed import flush_denormals

    device = resolve(args.device)
    workers = args.workers if args.backend == "local" else 1
    members = [(i, m) for i, spec in enumerate(specs) for m in expand(spec) if m.config is not None]
    groups: dict[tuple, list[TrainConfig]] = {}
    for i, m in members:  # each stage is its own sweep, run after the one before: packs form within a stage
        groups.setdefault((i, *pack_key(m.config)) if stackable(m.config) else (i, "alone", m.name), []).append(m.config)
    busy: dict[int, float] = {}  # per stage, summed over its packs
    threads = torch.get_num_threads()
    if device.type == "cpu" and workers > 1:
        torch.set_num_threads(1)  # as each worker process will run
    with flush_denormals():
        for (stage, *_), cfgs in groups.items():
            size = len(cfgs) if args.pack == "auto" else min(args.pack, len(cfgs))
            size = min(size, auto_pack_size(cfgs, device, workers)) if args.pack == "auto" else size
            train_s, eval_s = _seconds_per_member_step(cfgs[:size], device)
            busy[stage] = busy.get(stage, 0.0) + sum(c.steps * train_s + (c.steps // c.eval_every + 1) * eval_s for c in cfgs)
    torch.set_num_threads(threads)
    per_stage = Counter(i for i, _ in members)
    width = lambda n: min(workers, n) if device.type == "cpu" else 1  # noqa: E731  workers busy in a stage of n members
    parallel = width(max(per_stage.values(), default=1))
    return {"members": len(members), "member_steps": sum(m.config.steps for _, m in members),
            "estimated_s": round(sum(b / width(per_stage[i]) for i, b in busy.items())), "workers": parallel, "machine": machine_name(device), "threads_per_worker": 1 if workers > 1 and device.type == "cpu" else torch.get_num_threads(),
            "gpu_estimate": "not measured" if device.type == "cpu" else "this one", "note": note}


def format_plan(p: dict) -> str:
    """The plan as a sentence and, last, a JSON line."""
    text = (f"{p['members']} members, {p['member_steps']:,} member-steps; estimated {p['estimated_s'] / 60:.1f} min "
            f"with {p['workers']} worker(s) on {p['machine']} (from {PLAN_STEPS} timed steps of each pack shape)")
    return text + (f"\n{p['note']}" if p["note"] else "") + "\n" + json.dumps(p)


# ---- command line ------------------------------------------------------------------------------
def add_backend_flags(p: argparse.ArgumentParser) -> None:
    """``--backend --address --pack --workers --device --plan --quiet``: how a sweep (or an experiment) runs."""
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: packs in --workers processes on this machine; ray: one Ray task per pack (default: local)")
    p.add_argument("--address", default=None, help="HOST:PORT of a running Ray cluster's head (--backend ray; default: start Ray in this process)")
    p.add_argument("--pack", default="auto", metavar="N|auto",
                   help="most members trained together in one stack; auto: as many as fit in the device's free memory "
                        "(on the CPU, no more than gives every worker a pack) (default: auto)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="local worker processes, one torch thread each (default: one per core, here %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device of the stacks: cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--plan", action="store_true", help="print the members, member-steps and estimated wall time, and train nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m interp.sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(p)
    p.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2,...",
                   help="vary a config field over these values (repeatable; the sweep is the product of all grids); "
                        "FIELD is any flag name above, with dashes or underscores")
    p.add_argument("--out", type=Path, required=True, help="sweep directory (sweep.json, results.csv, runs/<name>/)")
    add_backend_flags(p)
    return p


def check_backend_args(args: argparse.Namespace) -> None:
    """``--pack``, ``--workers``, ``--address`` and ``--device`` of ``interp.sweep`` and ``interp.experiment``
    (``args.pack`` becomes an int or ``"auto"``; raises ``SweepError``/``ConfigError`` naming the flag)."""
    if args.pack != "auto":
        try:
            args.pack = int(args.pack)
        except ValueError:
            raise SweepError(f"--pack {args.pack!r}: must be a whole number >= 1 or auto") from None
        if args.pack < 1:
            raise SweepError(f"--pack {args.pack}: must be >= 1 or auto")
    if args.workers < 1:
        raise SweepError(f"--workers {args.workers}: must be >= 1")
    if args.address and args.backend != "ray":
        raise SweepError("--address: only used with --backend ray")
    resolve(args.device)
    if args.pack == "auto" and _free_bytes(torch.device(args.device)) is None:
        raise SweepError("--pack auto: cannot read this machine's free memory; give the pack size as a number")


def report_outcome(prog: str, out: Path, rows: dict[str, dict], seconds: float, table: Path) -> int:
    """Print the one-line outcome of a sweep (stderr names the failed members); the exit status."""
    bad = [n for n, r in rows.items() if r["status"] != "ok"]
    print(f"{out}: {len(rows) - len(bad)} of {len(rows)} members ok in {seconds:.0f}s -> {table}")
    if bad:
        print(f"{prog}: {len(bad)} of {len(rows)} members failed ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); "
              f"reasons in {out / RESULTS_FILE}", file=sys.stderr)
        return 1
    return 0


def spec_from_args(args: argparse.Namespace) -> Spec:
    """The sweep spec of a command line (raises ``SweepError``/``ConfigError`` on bad input)."""
    base = {"task": args.task, **given_fields(args)}
    explicit = {f for f in FIELD_NAMES if hasattr(args, f)}  # flags on the command line, not the preset's
    TrainConfig(**base)  # the base must be valid on its own
    check_backend_args(args)
    grid = parse_grid(args.grid, base, explicit)
    return Spec({k: v for k, v in base.items() if k not in grid}, grid)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        spec = spec_from_args(args)
        tune_allocator()  # as interp.train does (interp.speed)
        t = time.perf_counter()
        if args.plan:
            print(format_plan(plan([spec], args)))
            return 0
        rows = run_sweep(spec, args.out, args.backend, args.address, args.pack, args.device, progress=not args.quiet,
                         workers=args.workers)
    except (SweepError, ConfigError) as e:
        print(f"python -m interp.sweep: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; re-run the same command to continue the sweep in {args.out}", file=sys.stderr)
        return 130
    return report_outcome("python -m interp.sweep", args.out, rows, time.perf_counter() - t, args.out / RESULTS_FILE)


if __name__ == "__main__":
    sys.exit(main())
