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
import os
import re
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from analyses.timing import first_step
from interp import runs, tables
from interp.cli import Parser
from interp.config import ConfigError, TrainConfig, value_parser
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
            "reason": ""}


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
                train(cfg, out, resume=True, progress=False)
            except Diverged as e:
                return {name: failed(str(e).split(": ", 1)[-1], out)}
            return {name: outcome(out)}
        done = train_pack([Member(cfg, out) for _, cfg, out in cfgs], device, on_progress)
    except (RunError, ValueError, RuntimeError) as e:
        reason = f"pack failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        log.warning(reason)
        return {name: failed(reason, out) for name, _, out in cfgs}
    return {name: failed(m.failed, out) if m.failed else outcome(out) for (name, _, out), m in zip(cfgs, done)}


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


def _run_local(packs, device, on_done, on_progress):
    for pack in packs:
        on_done(run_pack(pack, device, on_progress=on_progress))


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


def run_sweep(spec: Spec, out: Path, backend: str = "local", address: str | None = None, pack_size: int = 8,
              device: str = "cpu", progress: bool = True) -> dict[str, dict]:
    """Run (or resume) the sweep ``spec`` in ``out``; returns ``{member name: outcome row}``.

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
        elif saved_step(run_dir) >= m.config.steps:  # finished before the table was written
            rows[m.name] = outcome(run_dir)
        else:
            todo.append((m, run_dir))
    write_results(out, spec, members, rows)
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
        pack = packs[state["pack"]]
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
        _run_local(packs, device, on_done, on_progress)
    bar.close()
    return rows


# ---- command line ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m interp.sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(p)
    p.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2,...",
                   help="vary a config field over these values (repeatable; the sweep is the product of all grids); "
                        "FIELD is any flag name above, with dashes or underscores")
    p.add_argument("--out", type=Path, required=True, help="sweep directory (sweep.json, results.csv, runs/<name>/)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local: packs one after another in this process; ray: one Ray task per pack (default: local)")
    p.add_argument("--address", default=None, help="HOST:PORT of a running Ray cluster's head (--backend ray; default: start Ray in this process)")
    p.add_argument("--pack", type=int, default=8, help="most members trained together in one stack (default: 8)")
    p.add_argument("--device", default="cpu", help="torch device of the stacks, e.g. cpu, cuda, cuda:1 (default: cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def check_device(device: str) -> None:
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise SweepError(f"--device {device!r}: not a torch device (e.g. cpu, cuda, cuda:0)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SweepError(f"--device {device}: CUDA is not available on this machine")
    if dev.type not in ("cpu", "cuda"):
        raise SweepError(f"--device {device}: only cpu and cuda are supported")


def check_backend_args(args: argparse.Namespace) -> None:
    """``--pack``, ``--address`` and ``--device`` of ``interp.sweep`` and ``interp.experiment``."""
    if args.pack < 1:
        raise SweepError(f"--pack {args.pack}: must be >= 1")
    if args.address and args.backend != "ray":
        raise SweepError("--address: only used with --backend ray")
    check_device(args.device)


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
        rows = run_sweep(spec, args.out, args.backend, args.address, args.pack, args.device, progress=not args.quiet)
    except (SweepError, ConfigError) as e:
        print(f"python -m interp.sweep: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; re-run the same command to continue the sweep in {args.out}", file=sys.stderr)
        return 130
    return report_outcome("python -m interp.sweep", args.out, rows, time.perf_counter() - t, args.out / RESULTS_FILE)


if __name__ == "__main__":
    sys.exit(main())
