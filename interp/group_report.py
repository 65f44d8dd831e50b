"""The report's figures for runs analysed as a group (``interp.group_analysis``): per-irrep shares and their
course over training, with captions generated from the run's tables (``interp.report`` draws them)."""

from __future__ import annotations

from interp import group_analysis, plots


def _basis_words(summary: dict) -> tuple[str, str]:
    """(what an irrep is called, the basis sentence) for the captions."""
    if summary.get("basis") == "log":
        return "log-frequency", (f"Log basis: residues are numbered by their discrete logarithm to the primitive root "
                                 f"{summary.get('primitive_root')}, so {summary.get('group')}'s frequencies play the part of "
                                 "the Fourier frequencies; zero (no logarithm) is left out.")
    return "irrep", f"Irreps basis: {summary.get('group')}'s real irreducible representations."


def caption_shares(summary: dict, irrep_rows: list[dict], step: int) -> str:
    """Caption of the share bars: the largest shares of W_E, W_U and the MLP at ``step``, from the table."""
    word, basis = _basis_words(summary)
    names = summary["irreps"]
    at = [r for r in irrep_rows if int(r["step"]) == step]
    parts = [f"{basis} Bars: the share of |W_E|^2 (element-token rows), |W_U|^2 and |W_L|^2 (element-class columns) "
             f"in each {word}, and of the MLP's centred activation variance in its block {{trivial, {word}}}^2; "
             f"* marks key {word}s ({group_analysis.irrep_set(summary, summary.get('key_irreps', []))})."]
    for col, label in (("W_E_frac", "W_E"), ("W_U_frac", "W_U"), ("mlp_frac", "MLP")):
        rows = [r for r in at if r[col] == r[col]]
        if rows:
            top = max(rows, key=lambda r: r[col])
            parts.append(f"Largest {label} share at step {step}: {names[int(top['irrep'])]} {top[col]:.0%}.")
    return " ".join(parts)


def caption_training(summary: dict, irrep_rows: list[dict]) -> str:
    """Caption of the heatmap over training: where each key irrep's W_E share starts and ends."""
    word, basis = _basis_words(summary)
    steps = sorted({int(r["step"]) for r in irrep_rows})
    parts = [f"{basis} Share of |W_E|^2 in each {word} at every checkpoint."]
    for k in summary.get("key_irreps", []):
        series = [r for r in irrep_rows if int(r["irrep"]) == k]
        if series:
            parts.append(f"{summary['irreps'][k]}: {series[0]['W_E_frac']:.0%} at step {steps[0]}, "
                         f"{series[-1]['W_E_frac']:.0%} at step {steps[-1]}.")
    return " ".join(parts)


def group_figures(name: str, summary: dict, irrep_rows: list[dict], step: int) -> list[tuple[str, object, str]]:
    """``(key, figure, caption)`` of the irrep figures of one run (empty without an irreps table)."""
    if not irrep_rows:
        return []
    word = "log-frequency" if summary.get("basis") == "log" else "irrep"
    keys = summary.get("key_irreps", [])
    return [
        ("irrep_shares", plots.irrep_shares(irrep_rows, summary["irreps"], step, keys,
                                            f"Share of each {word} ({name}, step {step})"), caption_shares(summary, irrep_rows, step)),
        ("irrep_training", plots.irrep_over_training(irrep_rows, summary["irreps"], "W_E_frac", keys,
                                                     f"Share of W_E per {word} across training ({name})"), caption_training(summary, irrep_rows)),
    ]
