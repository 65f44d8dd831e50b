"""Run directories: the one place that knows their layout, writes them atomically and reads them.

A run directory holds everything needed to rebuild a run::

    <run>/config.json                  {"config": TrainConfig fields, "versions": ..., "git_commit": ...,
                                        "extensions": [...] (one entry per --resume that changed --steps)}
    <run>/split.safetensors            train_idx, test_idx, train_labels (the split itself, not only its seed)
    <run>/metrics.jsonl                one JSON object per evaluation
    <run>/ckpt/step_NNNNNN.safetensors HookedTransformer state_dict, fp32
    <run>/state/state.safetensors      what --resume needs: weights, AdamW moments, step
    <run>/analysis/                    cached analysis tables (interp.analyze)
    <run>/report.html                  (interp.report)

Every file is written to a temporary name in its directory, flushed to disk (``fsync``) and only
then renamed into place (and the directory flushed), so a reader, a resumed run after ``kill -9``
or a machine that lost power sees either the previous complete file or the new complete one, never
half of one: the previous resume state stays in place until the new one is complete on disk.
Nothing is pickled: tensors go through safetensors, everything else is JSON.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from transformer_lens import HookedTransformer

from interp.config import ConfigError, TrainConfig
from interp.families import build_model, family_of
from interp.tasks import Dataset, all_examples

CONFIG_FILE = "config.json"
SPLIT_FILE = "split.safetensors"
METRICS_FILE = "metrics.jsonl"
CKPT_DIR = "ckpt"
STATE_DIR = "state"
STATE_FILE = "state.safetensors"
ANALYSIS_DIR = "analysis"
REPORT_FILE = "report.html"
DEFAULT_ROOT = Path("checkpoints")
_CKPT_RE = re.compile(r"^step_(\d{6,})\.safetensors$")


class RunError(Exception):
    """A run directory or one of its files is missing, corrupt or not what was asked for."""


# ---- atomic writes ---------------------------------------------------------------------------
def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; give it the mode open() would
    try:
        write(tmp)
        _fsync(tmp, os.O_RDONLY)  # the data is on disk before the name points at it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))  # and so is the rename


def _fsync(path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file in the same directory, then rename)."""
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text))


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save tensors with safetensors, atomically."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}  # a CUDA run's files are the same
    _atomic(Path(path), lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a safetensors file and its metadata; a missing or corrupt file raises ``RunError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: file is missing")
    try:
        tensors = load_file(path)
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise RunError(f"{path}: not a readable safetensors file ({e})") from None
    return tensors, metadata


# ---- paths -----------------------------------------------------------------------------------
def ckpt_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CKPT_DIR / f"step_{step:06d}.safetensors"


def state_path(run_dir: Path) -> Path:
    return Path(run_dir) / STATE_DIR / STATE_FILE


def checkpoint_steps(run_dir: Path) -> list[int]:
    """Steps that have a checkpoint file, ascending."""
    d = Path(run_dir) / CKPT_DIR
    if not d.is_dir():
        return []
    return sorted(int(m.group(1)) for f in d.iterdir() if (m := _CKPT_RE.match(f.name)))


def default_run_name(cfg: TrainConfig) -> str:
    """``<task>_p<p>`` plus ``_<field><value>`` for each model/data/optimiser field off its default."""
    base = TrainConfig(task=cfg.task, p=cfg.p)
    skip = {"task", "p", "steps", "eval_every", "save_every", "engine"}
    spec = cfg.task_spec  # p names a modular task's size; it means nothing to a group (fixed order) or a task without tokens
    parts = [cfg.task if spec.group_order is not None or spec.d_vocab(cfg) < 1 or spec.sequence else f"{cfg.task}_p{cfg.p}"]
    for k, v in cfg.to_dict().items():
        if k not in skip and v != getattr(base, k):
            if k == "init_from":
                parts.append(f"from-{Path(cfg.init_source[0]).name}" + (f"@{cfg.init_source[1]}" if cfg.init_source[1] is not None else ""))
            else:
                parts.append(f"{k}{Path(v).name if isinstance(v, str) and '/' in v else v}")  # a file field: its name only
    return "_".join(parts)


# ---- writing ---------------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("torch", "transformer-lens", "numpy", "safetensors", "interp"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


@functools.lru_cache(maxsize=1)  # one subprocess per process, not per run (a sweep writes many)
def _git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return r.stdout.strip() or None if r.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def init_run_dir(run_dir: Path, cfg: TrainConfig, dataset: Dataset, machine: dict | None = None) -> None:
    """Write ``config.json`` (with ``machine``: ``interp.device.describe`` of where it trains) and the
    split into a new run directory."""
    run_dir = Path(run_dir)
    write_tensors(run_dir / SPLIT_FILE, {"train_idx": dataset.train_idx, "test_idx": dataset.test_idx,
                                         "train_labels": dataset.train_labels})
    meta = {"config": cfg.to_dict(), "versions": _versions(), "git_commit": _git_commit(), "machine": machine}
    write_text(run_dir / CONFIG_FILE, json.dumps(meta, indent=2) + "\n")


def _update_meta(run_dir: Path, change) -> None:
    path = Path(run_dir) / CONFIG_FILE
    meta = json.loads(path.read_text())
    change(meta)
    write_text(path, json.dumps(meta, indent=2) + "\n")


def record_resume(run_dir: Path, at_step: int, machine: dict) -> None:
    """Append to ``config.json``'s ``resumed`` where (``machine``) and from which step the run continued."""
    _update_meta(run_dir, lambda meta: meta.setdefault("resumed", []).append(
        {"at_step": at_step, "machine": machine, "git_commit": _git_commit()}))


def record_end(run_dir: Path, step: int, reason: str) -> None:
    """Record in ``config.json`` (``ended``) that the run stopped at ``step`` before its ``steps``, and why."""
    _update_meta(run_dir, lambda meta: meta.__setitem__("ended", {"step": step, "reason": reason}))


def ended(run_dir: Path) -> dict | None:
    """``{"step", "reason"}`` if the run ended before its ``steps`` (a stopping rule, ``interp.stopping``), else ``None``."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text()).get("ended")
    except json.JSONDecodeError:
        return None


def record_extension(run_dir: Path, steps: int, at_step: int) -> None:
    """Set the run's ``steps`` in ``config.json`` to ``steps`` and append the change to its ``extensions``
    (``from_steps``, ``to_steps``, ``at_step``, and the versions and git commit that continue it)."""
    def change(meta: dict) -> None:
        meta.setdefault("extensions", []).append({"from_steps": meta["config"]["steps"], "to_steps": steps, "at_step": at_step,
                                                  "versions": _versions(), "git_commit": _git_commit()})
        meta["config"]["steps"] = steps
    _update_meta(run_dir, change)


def save_checkpoint(run_dir: Path, step: int, model: HookedTransformer) -> Path:
    path = ckpt_path(run_dir, step)
    write_tensors(path, model.state_dict(), metadata={"step": str(step)})  # fp32, on the CPU (write_tensors)
    return path


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    write_text(Path(run_dir) / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in rows))


# ---- reading ---------------------------------------------------------------------------------
def read_config(run_dir: Path) -> TrainConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not Path(run_dir).is_dir():
        raise RunError(f"{run_dir}: no such run directory")
    if not path.is_file():
        raise RunError(f"{path}: file is missing (is {run_dir} a run directory?)")
    try:
        return TrainConfig.from_dict(json.loads(path.read_text())["config"])
    except (json.JSONDecodeError, KeyError, TypeError, ConfigError) as e:
        raise RunError(f"{path}: not a valid run config ({e})") from None


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise RunError(f"{path}: corrupt line ({e})") from None


def read_split(run_dir: Path, cfg: TrainConfig) -> Dataset:
    """The run's dataset with the split saved in ``split.safetensors``.

    Raises:
        RunError: naming the file, unless ``train_idx`` and ``test_idx`` are 1-D integer tensors that
        together hold every example index ``0 .. N-1`` exactly once.
    """
    path = Path(run_dir) / SPLIT_FILE
    tensors, _ = read_tensors(path)
    inputs, labels = all_examples(cfg)
    n = len(labels)
    try:
        train_idx, test_idx = tensors["train_idx"], tensors["test_idx"]
    except KeyError as e:
        raise RunError(f"{path}: missing tensor {e}") from None
    for name, idx in (("train_idx", train_idx), ("test_idx", test_idx)):
        if idx.dim() != 1 or idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
            raise RunError(f"{path}: {name} must be a 1-D integer tensor (got {idx.dtype}, shape {tuple(idx.shape)})")
        if idx.numel() and (idx.min() < 0 or idx.max() >= n):
            raise RunError(f"{path}: {name} holds indices outside 0..{n - 1} (the {n} examples of {cfg.task} mod {cfg.p})")
        if idx.unique().numel() != idx.numel():
            raise RunError(f"{path}: {name} holds an index more than once")
    if torch.isin(train_idx, test_idx).any():
        raise RunError(f"{path}: train_idx and test_idx overlap")
    if len(train_idx) + len(test_idx) != n:
        raise RunError(f"{path}: split does not cover the {n} examples")
    train_labels = tensors.get("train_labels")  # absent in run directories written before label noise
    if cfg.task_spec.regression:  # real-valued targets and no label noise: they must be the task's own
        if train_labels is not None and not torch.equal(train_labels, labels[train_idx.long()]):
            raise RunError(f"{path}: train_labels are not the targets of train_idx")
    elif train_labels is not None and (len(train_labels) != len(train_idx) or train_labels.min() < 0 or train_labels.max() >= cfg.d_vocab_out):
        raise RunError(f"{path}: train_labels does not match train_idx or holds labels outside 0..{cfg.d_vocab_out - 1}")
    if train_labels is not None and not cfg.task_spec.regression:
        train_labels = train_labels.long()
    return Dataset(inputs, labels, train_idx.long(), test_idx.long(), train_labels)


def load_state_dict_into(model: HookedTransformer, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise RunError(f"{path}: weights do not fit the run's model ({str(e).splitlines()[0]})") from None


@dataclass
class Run:
    """A run directory, loaded: config, dataset with its split, metrics and checkpoint steps."""

    path: Path
    config: TrainConfig
    dataset: Dataset
    metrics: list[dict] = field(repr=False)
    steps: list[int]

    @property
    def inputs(self) -> torch.Tensor:
        return self.dataset.inputs

    @property
    def labels(self) -> torch.Tensor:
        return self.dataset.labels

    @property
    def train_idx(self) -> torch.Tensor:
        return self.dataset.train_idx

    @property
    def test_idx(self) -> torch.Tensor:
        return self.dataset.test_idx

    def load_model(self, step: int | None = None) -> HookedTransformer:
        """A ready ``HookedTransformer`` with the weights of checkpoint ``step`` (default: the last)."""
        if step is None:
            if not self.steps:
                raise RunError(f"{self.path / CKPT_DIR}: run has no checkpoints")
            step = self.steps[-1]
        return load_checkpoint(self.path, step, self.config)


def load_checkpoint(run_dir: Path, step: int, config: TrainConfig | None = None) -> HookedTransformer:
    """Rebuild the run's model and load checkpoint ``step`` into it."""
    config = config or read_config(run_dir)
    path = ckpt_path(run_dir, step)
    state, _ = read_tensors(path)
    with torch.no_grad():
        model = build_model(config)
    load_state_dict_into(model, state, path)
    model.eval()
    return model


# Config fields that fix the tensors of a model: ``init_from`` needs them equal in both runs.
MODEL_FIELDS = ("family", "p", "d_model", "n_heads", "d_mlp", "n_layers", "normalization", "act_fn", "attn_only", "freeze_biases")


def init_checkpoint(cfg: TrainConfig) -> Path | None:
    """The checkpoint file ``cfg.init_from`` names (``None`` without ``init_from``), checked.

    Raises:
        ConfigError: naming ``--init-from`` (one line), if its directory is not a run, the step has
            no checkpoint, or the run's model differs from ``cfg``'s in a ``MODEL_FIELDS`` field or
            in its vocabulary (the task's input and output tokens).
    """
    if cfg.init_source is None:
        return None
    run_dir, step = cfg.init_source
    flag = f"--init-from {cfg.init_from}"
    try:
        src = read_config(run_dir)
    except RunError as e:
        raise ConfigError(f"{flag}: not a run directory ({e})") from None
    steps = checkpoint_steps(run_dir)
    if not steps:
        raise ConfigError(f"{flag}: the run has no checkpoints")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise ConfigError(f"{flag}: the run has no checkpoint at step {step} (it has {len(steps)} from step {steps[0]} to {steps[-1]})")
    for name in (*MODEL_FIELDS, "d_vocab", "d_vocab_out"):
        if getattr(src, name) != getattr(cfg, name):
            raise ConfigError(f"{flag}: its model has {name} {getattr(src, name)!r}, this config {getattr(cfg, name)!r} "
                              f"({', '.join(MODEL_FIELDS)} and the vocabulary must match)")
    return ckpt_path(run_dir, step)


def init_model(cfg: TrainConfig) -> HookedTransformer:
    """The model a new run starts from: ``build_model(cfg)``, with ``cfg.init_from``'s checkpoint
    weights loaded in its place when given (then multiplied by ``cfg.init_scale``, as a seeded init is).

    Raises:
        ConfigError: ``init_from`` is bad (see ``init_checkpoint``); RunError: its checkpoint is corrupt.
    """
    path = init_checkpoint(cfg)
    model = build_model(cfg)
    if path is not None:
        state, _ = read_tensors(path)
        load_state_dict_into(model, state, path)
        if cfg.init_scale != 1.0:
            with torch.no_grad():
                for param in model.parameters():
                    param.mul_(cfg.init_scale)
    return model


def load_run(path: str | os.PathLike) -> Run:
    """Load a run directory written by ``python -m interp.train``."""
    path = Path(path)
    cfg = read_config(path)
    return Run(path, cfg, read_split(path, cfg), read_metrics(path), checkpoint_steps(path))
