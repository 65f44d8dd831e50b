"""Train a grokking transformer into a run directory.

    python -m interp.train mod_add --p 113            # the canonical run, about 5-8 min on 2 CPU cores
    python -m interp.train mod_add --p 113 --resume   # continue it after an interruption

The loop is flat on purpose (nanoGPT style): set-up, then for each full-batch step the forward,
float64 loss, backward and AdamW step; evaluation and checkpointing on schedule. Only losses,
accuracies and norms are measured here; interpretability measures live in ``analyses/``.

Resuming is exact: the state file holds the weights, the AdamW moments and the step, the data is
the full (fixed) training set every step and nothing random happens after initialisation, so a
resumed run ends with the same bits as an uninterrupted one. ``--resume --steps N`` with a new N
extends (or, before the end, shortens) the run and records that in ``config.json``, so that a later
plain ``--resume`` continues to N; resuming a run that has already reached its steps does nothing
and says so. ``config.json`` records the engine the run trains with (``fast`` or ``hooked``), never
``auto``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from interp import runs
from interp.cli import Parser
from interp.config import PRESETS, TASK_NAMES, ConfigError, TrainConfig
from interp.model import build_model, fast_applies, fast_logits, fast_loss, hooked_logits, loss_fn
from interp.runs import RunError
from interp.speed import flush_denormals, tune_allocator
from interp.tasks import Dataset, make_dataset

log = logging.getLogger(__name__)


# ---- pieces of the loop ----------------------------------------------------------------------
def make_optimizer(model: HookedTransformer, cfg: TrainConfig) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    # fused: one kernel for all parameters (about 4x faster than the per-tensor loop on CPU)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.wd, betas=(cfg.beta1, cfg.beta2), fused=True)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate of the update that takes the model from ``step`` to ``step + 1``."""
    if cfg.warmup and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    return cfg.lr


def use_fast(cfg: TrainConfig, model: HookedTransformer) -> bool:
    """Whether ``cfg.engine`` trains ``model`` through the fast path (``auto``: where it applies)."""
    if cfg.engine == "hooked":
        return False
    if cfg.engine == "fast" and not fast_applies(model):
        raise ConfigError("--engine fast: the fast forward does not apply to this model")
    return fast_applies(model)


def logits_fn(model: HookedTransformer, cfg: TrainConfig):
    """The forward used for evaluation: ``tokens [batch, 3] -> logits [batch, d_vocab_out]``."""
    if use_fast(cfg, model):
        return lambda tokens: fast_logits(model, tokens[:, 0], tokens[:, 1], cfg.eq_token)
    return lambda tokens: hooked_logits(model, tokens)


def loss_closure(model: HookedTransformer, cfg: TrainConfig, data: Dataset):
    """The loss the loop minimises, full batch: ``fast_loss`` where it applies, else the hooked forward."""
    x, y = data.inputs[data.train_idx], data.labels[data.train_idx]
    if use_fast(cfg, model):
        return lambda: fast_loss(model, x[:, 0], x[:, 1], y, cfg.eq_token)
    return lambda: loss_fn(hooked_logits(model, x), y)


@torch.no_grad()
def evaluate(model: HookedTransformer, data: Dataset, forward) -> dict[str, float]:
    """Loss (float64 log-softmax) and accuracy on the train and test splits, and the parameter norm."""
    logits = forward(data.inputs)
    out = {}
    for split, idx in (("train", data.train_idx), ("test", data.test_idx)):
        lg, y = logits[idx], data.labels[idx]
        out[f"{split}_loss"] = loss_fn(lg, y).item()
        out[f"{split}_acc"] = (lg.argmax(-1) == y).double().mean().item()
    out["param_norm"] = torch.sqrt(sum((p.double() ** 2).sum() for p in model.parameters())).item()
    return out


def state_tensors(model: HookedTransformer, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            tensors[f"opt.{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return tensors


def load_state(path: Path, model: HookedTransformer, opt: torch.optim.Optimizer) -> dict[str, str]:
    tensors, meta = runs.read_tensors(path)
    runs.load_state_dict_into(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, path)
    sd = opt.state_dict()
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            state.setdefault(int(i), {})[name] = v
    if set(state) - set(sd["param_groups"][0]["params"]):
        raise RunError(f"{path}: optimiser state does not fit the run's model")
    sd["state"] = state
    opt.load_state_dict(sd)
    if "step" not in meta:
        raise RunError(f"{path}: no step in its metadata")
    return meta


# ---- the run ---------------------------------------------------------------------------------
def train(cfg: TrainConfig, out: Path, resume: bool = False, progress: bool = True) -> Path:
    """Train ``cfg`` into run directory ``out`` (continuing it if ``resume``); returns ``out``.

    Raises:
        RunError: ``out`` exists and ``resume`` is false, or its resume state is missing or corrupt.
    """
    out = Path(out)
    state_file = runs.state_path(out)
    if resume and not (out / runs.CONFIG_FILE).is_file():
        if out.exists() and any(out.iterdir()):
            raise RunError(f"{out}: not a run directory (no {runs.CONFIG_FILE}); refusing to write into it")
        log.info("%s: nothing to resume yet, starting a new run", out)
        resume = False
    elif not resume and out.exists() and any(out.iterdir()):
        raise RunError(f"{out}: run directory already exists; pass --resume to continue it or --out to pick another")

    # set-up
    dataset = make_dataset(cfg)
    model = build_model(cfg)
    opt = make_optimizer(model, cfg)
    cfg = cfg.replace(engine="fast" if use_fast(cfg, model) else "hooked")  # what config.json records
    forward, train_loss = logits_fn(model, cfg), loss_closure(model, cfg, dataset)
    if resume and state_file.exists():
        meta = load_state(state_file, model, opt)
        step, elapsed = int(meta["step"]), float(meta.get("elapsed", 0.0))
        if step >= cfg.steps:
            log.info("%s: already at step %d (--steps %d); nothing to do", out, step, cfg.steps)
            return out
        if runs.read_config(out).steps != cfg.steps:
            runs.record_extension(out, cfg.steps, step)
            log.info("%s: steps changed to %d (recorded in %s)", out, cfg.steps, runs.CONFIG_FILE)
        metrics = [r for r in runs.read_metrics(out) if r["step"] <= step]
        log.info("resuming %s at step %d", out, step)
    else:  # fresh run (or a run killed before its first save)
        step, elapsed, metrics = 0, 0.0, []
        runs.init_run_dir(out, cfg, dataset)

    def checkpoint() -> None:
        runs.save_checkpoint(out, step, model)
        runs.write_metrics(out, metrics)
        meta = {"step": str(step), "elapsed": repr(elapsed)}
        runs.write_tensors(state_file, state_tensors(model, opt), metadata=meta)

    def record() -> dict:
        row = {"step": step, **evaluate(model, dataset, forward), "lr": lr_at(cfg, max(step - 1, 0)), "elapsed_s": round(elapsed, 3)}
        metrics.append(row)
        return row

    if step == 0:
        record()
        checkpoint()

    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc=out.name, unit="step", dynamic_ncols=True)
    t0 = time.perf_counter() - elapsed
    with flush_denormals():  # see interp.speed: keeps late steps as fast as early ones
        while step < cfg.steps:
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, step)
            train_loss().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            elapsed = time.perf_counter() - t0
            bar.update(1)
            if step % cfg.eval_every == 0 or step == cfg.steps:
                row = record()
                bar.set_postfix(train_acc=f"{row['train_acc']:.3f}", test_acc=f"{row['test_acc']:.3f}", test_loss=f"{row['test_loss']:.2e}")
            if step % cfg.save_every == 0 or step == cfg.steps:
                checkpoint()
    bar.close()
    return out


# ---- command line ----------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """One flag per ``TrainConfig`` field (``--data-seed`` for ``data_seed``), defaults from the dataclass."""
    p = Parser(
        prog="python -m interp.train",
        description="Train a 1-layer HookedTransformer on an algorithmic task mod p, writing a resumable run directory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("task", choices=TASK_NAMES, metavar="TASK", help=f"one of: {', '.join(TASK_NAMES)}")
    for f in dataclasses.fields(TrainConfig):
        if f.name == "task":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=f"{f.metadata['help']} (default: {f.default})")
        else:
            typ = {"int": int, "float": float, "str": str}[f.type if isinstance(f.type, str) else f.type.__name__]
            p.add_argument(flag, type=typ, default=argparse.SUPPRESS, help=f"{f.metadata['help']} (default: {f.default})")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="start from a named set of values (" + "; ".join(f"{k}: {v}" for k, v in PRESETS.items()) + "); explicit flags override it")
    p.add_argument("--out", type=Path, default=None, help="run directory (default: checkpoints/<task>_p<p>[_<changed fields>])")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last saved state (start it if --out does not exist yet; do nothing if it is finished); only --steps may differ from the saved config, and a new --steps is recorded in its config.json")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    return p


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, Path]:
    given = {**PRESETS.get(args.preset, {}), **{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}}
    cfg = TrainConfig(**given)
    out = args.out or runs.DEFAULT_ROOT / runs.default_run_name(cfg)
    if args.resume and (out / runs.CONFIG_FILE).is_file():
        saved = runs.read_config(out)
        changed = {k: v for k, v in given.items()
                   if k not in ("steps", "task") and v != getattr(saved, k) and not (k == "engine" and v == "auto")}
        if given["task"] != saved.task:
            changed["task"] = given["task"]
        if changed:
            k, v = next(iter(changed.items()))
            raise ConfigError(f"--{k.replace('_', '-')} {v!r}: {out} was trained with {getattr(saved, k)!r}; --resume continues a run as it was (only --steps may change)")
        cfg = saved.replace(steps=given.get("steps", saved.steps))
    return cfg, out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = None
    try:
        cfg, out = config_from_args(args)
        tune_allocator()
        t = time.perf_counter()
        train(cfg, out, resume=args.resume, progress=not args.quiet)
    except (ConfigError, RunError) as e:
        print(f"python -m interp.train: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if out is None or not (out / runs.CONFIG_FILE).is_file():
            print("\ninterrupted before the run started; nothing was trained", file=sys.stderr)
        else:
            print(f"\ninterrupted; continue with: python -m interp.train {args.task} --out {out} --resume", file=sys.stderr)
        return 130
    last = runs.read_metrics(out)[-1]
    print(f"{out}: step {last['step']}, train_acc {last['train_acc']:.4f}, test_acc {last['test_acc']:.4f}, "
          f"test_loss {last['test_loss']:.3g}, {time.perf_counter() - t:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
