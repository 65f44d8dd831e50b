"""Train a grokking transformer into a run directory.

    python -m interp.train mod_add --p 113            # the canonical run, about 5-8 min on 2 CPU cores
    python -m interp.train mod_add --p 113 --resume   # continue it after an interruption

The loop is flat on purpose (nanoGPT style): set-up, then for each step (full batch by default) the forward,
float64 loss, backward and AdamW step, with the optional gradient filter, ⊥Grad projection and
fixed-norm rescale of ``interp.optim`` around the step; evaluation and checkpointing on schedule.
Only losses, accuracies and norms are measured here; interpretability measures live in ``analyses/``.

Resuming is exact: the state file holds the weights, the AdamW moments, the gradient filter's
state, the fixed-norm target and the step, the data is the full (fixed) training set every step, or
a mini-batch that is a function of the seed and the step alone (``batch_size``), and nothing else
random happens after initialisation, so a resumed run ends with the same bits as an uninterrupted one. ``--resume --steps N`` with a new N
extends (or, before the end, shortens) the run and records that in ``config.json``, so that a later
plain ``--resume`` continues to N; resuming a run that has already reached its steps does nothing
and says so. ``config.json`` records the engine the run trains with (``fast`` or ``hooked``), never
``auto``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from interp import optim, prune, runs
from interp.cli import Parser
from interp.config import PRESET_SOURCES, PRESET_TASKS, PRESETS, ConfigError, TrainConfig, value_parser
from interp.tasks import TASKS
from interp.device import describe, resolve
from interp.families import build_model, family_of, to_device
from interp.losses import criterion, float32_collapse, loss_fn
from interp.runs import RunError
from interp.speed import deterministic, flush_denormals, tune_allocator
from interp.stopping import stop_reason
from interp.tasks import REGRESSION_TOL, Dataset, batch_positions, infinite_batch, input_rows, make_dataset

log = logging.getLogger(__name__)


class Diverged(RunError):
    """The training loss became NaN or infinite; the run stops (its last checkpoint is kept)."""


# ---- pieces of the loop ----------------------------------------------------------------------
def make_optimizer(model: HookedTransformer, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (``orthoadamw`` too: the loop projects the gradient first); ``sgd``: plain
    gradient descent (no momentum; ``wd`` as coupled L2)."""
    params = optim.trainable(model)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.wd)
    # fused: one kernel for all parameters (about 4x faster than the per-tensor loop on CPU)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.wd, betas=(cfg.beta1, cfg.beta2), eps=cfg.adam_eps, fused=True)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate of the update that takes the model from ``step`` to ``step + 1``."""
    if cfg.warmup and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    return cfg.lr


def use_fast(cfg: TrainConfig, model: torch.nn.Module) -> bool:
    """Whether ``cfg.engine`` trains ``model`` through its family's fast path (``auto``: where it applies)."""
    return family_of(cfg).uses_fast(cfg, model)


def logits_fn(model: torch.nn.Module, cfg: TrainConfig):
    """The forward used for evaluation, ``inputs -> logits`` at the answer positions: the family's
    fast path where it applies, else its reference forward (``interp.families``)."""
    family = family_of(cfg)
    if use_fast(cfg, model):
        return lambda x: family.fast.logits(model, cfg, x)
    return lambda x: family.forward(model, cfg, x)


def loss_closure(model: torch.nn.Module, cfg: TrainConfig, data: Dataset):
    """The loss the loop minimises at a step, ``step -> loss``: over the whole training set, or over
    that step's mini-batch (``batch_size``, ``interp.tasks.batch_positions``), or a fresh batch
    (``infinite_data``, ``interp.tasks.infinite_batch``); the family's fast loss
    where it applies (the softmax cross-entropy is built into it), else ``criterion(cfg.loss)`` of
    ``logits_fn``.
    """
    x_all, y_all = data.inputs[data.train_idx], data.train_labels
    loss, forward = criterion(cfg.loss), logits_fn(model, cfg)
    fast_loss = family_of(cfg).fast.loss if use_fast(cfg, model) and cfg.loss == "softmax" else None
    held_out = input_rows(data.inputs[data.test_idx]) if cfg.infinite_data else None

    def batch(step: int):
        if held_out is not None:  # a fresh batch, a function of the seed and the step
            x, y = infinite_batch(cfg, step, held_out)
            return x.to(x_all.device), y.to(x_all.device)
        pos = batch_positions(cfg, step)
        return (x_all, y_all) if pos is None else (x_all[pos.to(x_all.device)], y_all[pos.to(x_all.device)])

    def closure(step: int = 0):
        x, y = batch(step)
        return fast_loss(model, cfg, x, y) if fast_loss is not None else loss(forward(x), y)

    return closure


def split_metrics(logits: torch.Tensor, data: Dataset, loss=loss_fn) -> dict[str, float]:
    """Loss (default: float64 log-softmax cross-entropy) and accuracy on the train split (against the
    labels training uses) and the test split, from the logits of all ``data.inputs`` (several answer
    positions: the loss and accuracy over all answer tokens, plus ``{split}_loss_pos``, the loss at each
    answer position, and ``{split}_seq_acc``, the fraction of examples with every answer token right), and the
    training set's float32 softmax collapse (``softmax_collapse_frac``, ``zero_loss_frac``:
    ``interp.losses.float32_collapse``)."""
    out = {}
    regression = data.labels.is_floating_point()
    for split, idx, y in (("train", data.train_idx, data.train_labels), ("test", data.test_idx, data.labels[data.test_idx])):
        lg = logits[idx]
        out[f"{split}_loss"] = loss(lg, y).item()
        if regression:  # right: the example's mean squared error is below REGRESSION_TOL (Omnigrok's accuracy)
            out[f"{split}_acc"] = ((lg.double() - y.double()).square().mean(-1) < REGRESSION_TOL).double().mean().item()
            continue
        out[f"{split}_acc"] = (lg.argmax(-1) == y).double().mean().item()
        if y.dim() == 2:  # several answer positions: the loss at each, and whether all of an example's are right
            out[f"{split}_loss_pos"] = [loss(lg[:, i], y[:, i]).item() for i in range(y.shape[1])]
            out[f"{split}_seq_acc"] = (lg.argmax(-1) == y).all(-1).double().mean().item()
    if logits.dim() == 2 and logits.shape[-1] > 1 and not regression:
        out.update(float32_collapse(logits[data.train_idx], data.train_labels))
    return out


@torch.no_grad()
def evaluate(model: HookedTransformer, data: Dataset, forward, loss=loss_fn) -> dict[str, float]:
    """Loss (default: float64 log-softmax) and accuracy on the train and test splits, and the parameter norm."""
    out = split_metrics(forward(data.inputs), data, loss)
    out["param_norm"] = torch.sqrt(sum((p.double() ** 2).sum() for p in model.parameters())).item()
    return out


def state_tensors(model: HookedTransformer, opt: torch.optim.Optimizer, extra: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Weights (``model.``), optimiser state (``opt.``) and ``extra`` (other keys) for the state file."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            tensors[f"opt.{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return {**tensors, **(extra or {})}


def load_state(path: Path, model: HookedTransformer, opt: torch.optim.Optimizer) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """Load weights and optimiser state; returns the metadata and the other (``extra``) tensors."""
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
    return meta, {k: v for k, v in tensors.items() if not k.startswith(("model.", "opt."))}


# ---- the run ---------------------------------------------------------------------------------
def train(cfg: TrainConfig, out: Path, resume: bool = False, progress: bool = True, device: str | torch.device = "cpu") -> Path:
    """Train ``cfg`` into run directory ``out`` (continuing it if ``resume``) on ``device``; returns ``out``.

    The run ends after ``cfg.steps`` steps, or earlier when a stopping rule (``interp.stopping``:
    ``stop_after_grok``, ``settle_tol``, ``equilibrium_tol``) says so at an evaluation; then
    ``config.json`` records the step and the reason under ``ended``, and a later resume does nothing.

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

    if resume and runs.ended(out):
        end = runs.ended(out)
        log.info("%s: ended at step %d (%s); nothing to do", out, end["step"], end["reason"])
        return out

    # set-up: the model is built (seeded) on the CPU, so that every device starts from the same weights
    device = torch.device(device)
    dataset = make_dataset(cfg).to(device)
    resuming = resume and state_file.exists()
    model = to_device(build_model(cfg) if resuming else runs.init_model(cfg), device)  # init_from's weights, when given
    masks = prune.run_masks(cfg, out, model, resume)  # --mask-from: {name: 0/1 mask}; checked before anything is written
    masks = {n: m.to(device) for n, m in masks.items()}
    named = dict(model.named_parameters())
    prune.apply_masks(named, masks)
    params, opt = optim.trainable(model), make_optimizer(model, cfg)
    grad_filter = optim.make_grad_filter(cfg, params)
    norm0 = optim.total_norm(params)  # --fixed-norm's target: the norm at step 0 (after masking)
    cfg = cfg.replace(engine="fast" if use_fast(cfg, model) else "hooked")  # what config.json records
    forward, train_loss, loss = logits_fn(model, cfg), loss_closure(model, cfg, dataset), criterion(cfg.loss)
    if resuming:
        meta, extra = load_state(state_file, model, opt)
        try:
            norm0 = optim.load_option_state(extra, grad_filter, norm0)
        except ValueError as e:
            raise RunError(f"{state_file}: {e}") from None
        step, elapsed = int(meta["step"]), float(meta.get("elapsed", 0.0))
        if step >= cfg.steps:
            log.info("%s: already at step %d (--steps %d); nothing to do", out, step, cfg.steps)
            return out
        if runs.read_config(out).steps != cfg.steps:
            runs.record_extension(out, cfg.steps, step)
            log.info("%s: steps changed to %d (recorded in %s)", out, cfg.steps, runs.CONFIG_FILE)
        metrics = [r for r in runs.read_metrics(out) if r["step"] <= step]
        runs.record_resume(out, step, describe(device))
        log.info("resuming %s at step %d on %s", out, step, device)
    else:  # fresh run (or a run killed before its first save)
        step, elapsed, metrics = 0, 0.0, []
        runs.init_run_dir(out, cfg, dataset, describe(device))
        if masks:
            prune.write_masks(out / prune.MASKS_FILE, masks)

    def checkpoint() -> None:
        runs.save_checkpoint(out, step, model)
        runs.write_metrics(out, metrics)
        meta = {"step": str(step), "elapsed": repr(elapsed)}
        runs.write_tensors(state_file, state_tensors(model, opt, optim.option_state(grad_filter, norm0)), metadata=meta)

    def record() -> dict:
        row = {"step": step, **evaluate(model, dataset, forward, loss), "lr": lr_at(cfg, max(step - 1, 0)), "elapsed_s": round(elapsed, 3)}
        if not math.isfinite(row["train_loss"]):
            raise Diverged(f"{out}: training loss is not finite at step {step}")
        metrics.append(row)
        return row

    if step == 0:
        record()
        checkpoint()

    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc=out.name, unit="step", dynamic_ncols=True)
    t0 = time.perf_counter() - elapsed
    # see interp.speed: flushing keeps late steps as fast as early ones; a forward through W_E[tokens] (the hooked one,
    # and the sequence tasks' fast path) needs deterministic kernels
    with flush_denormals(), deterministic(cfg.engine == "hooked" or cfg.task_spec.sequence):
        while step < cfg.steps:
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, step)
            train_loss(step).backward()
            for n, m in masks.items():  # masked weights get no gradient (so AdamW's moments stay 0 there)
                named[n].grad.mul_(m)
            grad_filter.apply()  # Grokfast: g <- g + lambda * low-pass(g); nothing for 'none'
            if cfg.optimizer == "orthoadamw":
                optim.orthogonalize(params)  # ⊥Grad: g <- g - (g.w / w.w) w, per tensor
            if cfg.l2:
                optim.add_l2(params, cfg.l2)  # Adam's coupled L2: g <- g + l2 * w
            opt.step()
            prune.apply_masks(named, masks)  # and no update: exactly 0 whatever the optimiser did
            if cfg.fixed_norm:
                optim.rescale_to_norm(params, norm0)
            opt.zero_grad(set_to_none=True)
            step += 1
            elapsed = time.perf_counter() - t0
            bar.update(1)
            if step % cfg.eval_every == 0 or step == cfg.steps:
                row = record()
                bar.set_postfix(train_acc=f"{row['train_acc']:.3f}", test_acc=f"{row['test_acc']:.3f}", test_loss=f"{row['test_loss']:.2e}")
            reason = stop_reason(cfg, metrics, step) if step % cfg.eval_every == 0 else None
            if step % cfg.save_every == 0 or step == cfg.steps or reason:
                checkpoint()
            if reason:
                runs.record_end(out, step, reason)
                log.info("%s: ended at step %d (%s)", out, step, reason)
                break
    bar.close()
    return out


# ---- command line ----------------------------------------------------------------------------
def add_config_flags(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    """The positional TASK, one flag per ``TrainConfig`` field (``--data-seed`` for ``data_seed``) and
    ``--preset``. Only given flags land in the namespace: defaults come from the dataclass."""
    p.add_argument("task", choices=list(TASKS), metavar="TASK", help=f"one of: {', '.join(TASKS)} (interp.tasks)")
    for f in dataclasses.fields(TrainConfig):
        if f.name == "task" or f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=f"{f.metadata['help']} (default: {f.default})")
        else:
            p.add_argument(flag, type=value_parser(f.name), default=argparse.SUPPRESS, help=f"{f.metadata['help']} (default: {f.default})")
    def describe(name: str) -> str:
        about = [x for x in (PRESET_TASKS.get(name), PRESET_SOURCES.get(name)) if x]
        return f"{name}{' (' + '; '.join(about) + ')' if about else ''}: {PRESETS[name]}"

    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="start from a named set of values (explicit flags "
                   "override it), each with its task and, for a paper's setting, the code it was read from: "
                   + "; ".join(describe(k) for k in PRESETS))


def given_fields(args: argparse.Namespace) -> dict:
    """The config fields a command line sets: the preset's values, then the explicit flags.

    Raises:
        ConfigError: the preset is written for another task (``interp.config.PRESET_TASKS``).
    """
    want = PRESET_TASKS.get(args.preset)
    if want is not None and args.task != want:
        raise ConfigError(f"--preset {args.preset}: it is written for the {want} task, not {args.task} "
                          f"(presets for {args.task}: {', '.join(k for k in sorted(PRESETS) if PRESET_TASKS.get(k, args.task) == args.task)})")
    return {**PRESETS.get(args.preset, {}), **{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}}


def build_parser() -> argparse.ArgumentParser:
    """``add_config_flags`` plus the run directory, resume and progress flags."""
    p = Parser(
        prog="python -m interp.train",
        description="Train a model (by default the 1-layer HookedTransformer) on a task (by default a + b mod p), writing a resumable run directory.",
    )
    add_config_flags(p)
    p.add_argument("--out", type=Path, default=None, help="run directory (default: checkpoints/<task>_p<p>[_<changed fields>])")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last saved state (start it if --out does not exist yet; do nothing if it is finished); only --steps may differ from the saved config, and a new --steps is recorded in its config.json")
    p.add_argument("--device", default="cpu", help="where to train: cpu, cuda or cuda:N (default: cpu); recorded in config.json, and a run may resume on another device")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, Path]:
    given = given_fields(args)
    task = TASKS[given["task"]]
    for name in ("p", "frac"):
        if task.sequence and name in given:
            raise ConfigError(f"--{name} {given[name]!r}: {task.name} is a sequence task: its examples are drawn, not "
                              f"enumerated ({'--p applies only to the modular tasks' if name == 'p' else 'give --train-size'})")
    if task.regression and given.get("loss", "mse") != "mse":
        raise ConfigError(f"--loss {given['loss']!r}: {task.name} is a regression task (real-valued targets): only mse applies")
    order = task.group_order
    if order is not None and "p" in given:
        raise ConfigError(f"--p {given['p']!r}: {given['task']} is a group task: its size is fixed by the group "
                          f"({order} elements), and --p applies only to the modular tasks")
    cfg = TrainConfig(**given)
    out = args.out or runs.DEFAULT_ROOT / runs.default_run_name(cfg)
    if args.resume and (out / runs.CONFIG_FILE).is_file():
        saved = runs.read_config(out)
        changed = {k: v for k, v in given.items()
                   if k not in ("steps", "task") and v != getattr(saved, k) and not (k in ("engine", "family") and v == "auto")}
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
        device = resolve(args.device)
        tune_allocator()
        t = time.perf_counter()
        train(cfg, out, resume=args.resume, progress=not args.quiet, device=device)
    except Diverged as e:
        print(f"python -m interp.train: {e}", file=sys.stderr)
        return 1
    except (ConfigError, RunError) as e:
        print(f"python -m interp.train: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if out is None or not (out / runs.CONFIG_FILE).is_file():
            print("\ninterrupted before the run started; nothing was trained", file=sys.stderr)
        else:
            print(f"\ninterrupted; continue with: python -m interp.train {args.task} --out {out} --resume", file=sys.stderr)
        return 130
    last, end = runs.read_metrics(out)[-1], runs.ended(out)
    if end:
        print(f"{out}: ended early, {end['reason']}")
    print(f"{out}: step {last['step']}, train_acc {last['train_acc']:.4f}, test_acc {last['test_acc']:.4f}, "
          f"test_loss {last['test_loss']:.3g}, {time.perf_counter() - t:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
