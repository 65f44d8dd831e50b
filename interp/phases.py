"""Phase boundaries of a run, read off its analysis table (``summary.json``'s ``phases``).

Nanda et al. describe grokking in three phases by the excluded loss: memorisation (it falls),
circuit formation (it rises), cleanup (it stops rising and the weight norm falls); the rules here
place those boundaries, plus the first checkpoints at 90% and 99% test accuracy. Each rule is
stated in ``PHASE_DEFINITIONS`` (copied into every ``summary.json``) and tested on synthetic curves.
"""

from __future__ import annotations

import math

SMOOTH_CHECKPOINTS = 5  # window of the centred running mean of log10(excluded_loss)
RISE_FRACTION = 0.1  # circuit formation starts where the smoothed rise has not yet covered this fraction
MIN_RISE = math.log10(2)  # a smoothed rise smaller than 2x is not called a rise
CLEANUP_DROP = 0.9  # the peak counts once a later smoothed value is this fraction of it or less

PHASE_DEFINITIONS = {
    "memorised": "first checkpoint with train_acc >= 0.99 (the training set is fitted)",
    "circuit_formation_start": "the excluded loss starts to rise: the last checkpoint before its peak at which the smoothed "
                               "log excluded loss is still within 10% of its rise from its minimum after 'memorised' to "
                               "its peak (none if that rise is less than 2x). Smoothed: a centred running mean of "
                               "log10(excluded_loss) over 5 checkpoints. Nanda et al. put the end of memorisation at 1.4k "
                               "steps for their p = 113 run, read off the same curve (Fourier tasks with key frequencies only)",
    "cgen_overtakes_cmem": "first checkpoint after 'memorised' with cgen_logit >= cmem_logit: the key-frequency "
                           "circuit contributes more of the correct-class logit than the rest (Fourier tasks with key "
                           "frequencies only)",
    "cleanup_start": "checkpoint of the peak of the smoothed excluded loss after 'memorised', provided a later smoothed "
                     "value is at most 0.9 times the peak: the excluded loss rises through circuit formation and stops "
                     "rising when weight decay starts removing the memorising part. Nanda et al. start cleanup at 9.4k "
                     "steps for their p = 113 run, read off the curves (Fourier tasks with key frequencies only; none "
                     "while still rising)",
    "test_acc_0.9": "first checkpoint with test_acc >= 0.9",
    "grokked": "first checkpoint with test_acc >= 0.99",
}
FOURIER_PHASES = ("circuit_formation_start", "cgen_overtakes_cmem", "cleanup_start")


def _first(rows: list[dict], cond) -> int | None:
    return next((r["step"] for r in rows if cond(r)), None)


def smoothed_log10(values: list[float], window: int = SMOOTH_CHECKPOINTS) -> list[float]:
    """Centred running mean of ``log10(values)`` over ``window`` points (fewer at both ends)."""
    logs = [math.log10(max(v, 1e-300)) for v in values]
    h = window // 2
    return [sum(logs[max(0, i - h): i + h + 1]) / len(logs[max(0, i - h): i + h + 1]) for i in range(len(logs))]


def detect_phases(rows: list[dict], fourier_phases: bool = True) -> dict[str, int | None]:
    """Phase boundaries (steps; ``None`` where not reached or not applicable) as defined in ``PHASE_DEFINITIONS``.

    Args:
        rows: the analysis table (``step``, ``train_acc``, ``test_acc``, ``excluded_loss``,
            ``cgen_logit``, ``cmem_logit``), in any order.
        fourier_phases: whether key frequencies were found; without them the three Fourier phases
            (``FOURIER_PHASES``) are ``None``.
    """
    rows = sorted(rows, key=lambda r: r["step"])
    memorised = _first(rows, lambda r: r["train_acc"] >= 0.99)
    formation = overtake = cleanup = None
    late = [r for r in rows if memorised is not None and r["step"] >= memorised and not math.isnan(r["excluded_loss"])]
    if fourier_phases and late:
        s = smoothed_log10([r["excluded_loss"] for r in late])
        peak = max(range(len(s)), key=s.__getitem__)
        if any(v <= s[peak] + math.log10(CLEANUP_DROP) for v in s[peak + 1:]):
            cleanup = late[peak]["step"]
        low = min(range(peak + 1), key=s.__getitem__)
        rise = s[peak] - s[low]
        if rise >= MIN_RISE:
            level = s[low] + RISE_FRACTION * rise
            formation = late[max(i for i in range(low, peak + 1) if s[i] <= level)]["step"]
        overtake = _first(late, lambda r: r["cgen_logit"] >= r["cmem_logit"])
    return {
        "memorised": memorised,
        "circuit_formation_start": formation,
        "cgen_overtakes_cmem": overtake,
        "cleanup_start": cleanup,
        "test_acc_0.9": _first(rows, lambda r: r["test_acc"] >= 0.9),
        "grokked": _first(rows, lambda r: r["test_acc"] >= 0.99),
    }
