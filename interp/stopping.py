"""When a run ends before its step budget: the three stopping rules, decided in one place.

``interp.train`` and the stack (``interp.stack``) call ``stop_reason`` after every evaluation; a run
that stops saves a checkpoint at that step and records the reason in ``config.json`` (``ended``), so a
resume does nothing more. ``steps`` stays the cap.

``stop_after_grok N``
    N steps after the first evaluation whose test accuracy reaches ``GROK_ACC`` (0.99).
``settle_tol T`` (Varma et al.'s ungrokking: "until the test accuracy has settled")
    once the test accuracy has moved by less than T (its largest minus its smallest value) over the
    evaluations in the last fifth of the steps so far, **and** the latest test accuracy lies more than
    ``LEFT_START`` (0.05) from the first evaluation's (``left_start``). In an ungrokking run the first
    evaluation is the source network's accuracy: a member that still sits at it has not begun to fall,
    and near D_crit it can sit there for tens of decay times before it does, so a flat curve at the
    source's level never counts as settled (such a member runs to ``steps``).
``equilibrium_tol T`` (the D_crit comparison "at convergence")
    once the parameter norm has moved by less than the fraction T of its latest value over the
    evaluations in the last fifth of the steps so far.

The last two never stop a run before ``min_steps``, nor before the last fifth holds
``MIN_WINDOW_EVALS`` evaluations (so a curve that has not been watched for long cannot look flat).
"""

from __future__ import annotations

from interp.config import GROK_ACC, TrainConfig

WINDOW = 0.2  # "the last fifth" of the steps trained so far
MIN_WINDOW_EVALS = 5
LEFT_START = 0.05  # settle_tol counts only once the test accuracy is this far from its first evaluation's


def window(metrics: list[dict], step: int, key: str) -> list[float]:
    """The values of ``key`` at the evaluations in the last fifth of ``step`` (steps >= 0.8 step)."""
    return [r[key] for r in metrics if r["step"] >= (1 - WINDOW) * step and r.get(key) is not None]


def moved(metrics: list[dict], step: int, key: str, relative: bool = False) -> float | None:
    """How far ``key`` moved (largest minus smallest) over the last fifth of ``step``, divided by its
    latest value if ``relative``; None while that window has fewer than ``MIN_WINDOW_EVALS`` evaluations."""
    vals = window(metrics, step, key)
    if len(vals) < MIN_WINDOW_EVALS:
        return None
    spread = max(vals) - min(vals)
    return spread / abs(vals[-1]) if relative else spread


def left_start(metrics: list[dict], key: str = "test_acc", gap: float = LEFT_START) -> bool:
    """Whether the latest value of ``key`` lies more than ``gap`` from its first evaluation's (the level
    the run started from: the source's accuracy, for a continued run)."""
    vals = [r[key] for r in metrics if r.get(key) is not None]
    return len(vals) >= 2 and abs(vals[-1] - vals[0]) > gap


def stop_reason(cfg: TrainConfig, metrics: list[dict], step: int) -> str | None:
    """Why a run at ``step`` with evaluation rows ``metrics`` (``step``, ``test_acc``, ``param_norm``)
    should end now, or None to go on. Never stops at or past ``cfg.steps`` (the run ends there anyway)."""
    if step >= cfg.steps:
        return None
    if cfg.stop_after_grok is not None:
        g = next((r["step"] for r in metrics if r["test_acc"] >= GROK_ACC), None)
        if g is not None and step - g >= cfg.stop_after_grok:
            return f"stop_after_grok {cfg.stop_after_grok}: test accuracy reached {GROK_ACC} at step {g}"
    if step < cfg.min_steps:
        return None
    lo = f"{(1 - WINDOW) * step:.0f}"
    if cfg.settle_tol is not None:
        d = moved(metrics, step, "test_acc")
        if d is not None and d < cfg.settle_tol and left_start(metrics):
            return (f"settle_tol {cfg.settle_tol:g}: test accuracy moved {d:.3g} over steps {lo}-{step}, "
                    f"{abs(metrics[-1]['test_acc'] - metrics[0]['test_acc']):.3g} from its start")
    if cfg.equilibrium_tol is not None:
        d = moved(metrics, step, "param_norm", relative=True)
        if d is not None and d < cfg.equilibrium_tol:
            return f"equilibrium_tol {cfg.equilibrium_tol:g}: parameter norm moved {d:.3g} of itself over steps {lo}-{step}"
    return None
