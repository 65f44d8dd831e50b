"""The sentences a user reads about a run: how numbers are written, and the results block of
``python -m interp.analyze RUN --readme`` with its parts (key frequencies, mechanism, stability)."""

from __future__ import annotations

import math

from analyses import mechanism


def fmt_step(step: int | None) -> str:
    """``10 500``-style step (``not reached`` for ``None``)."""
    return "not reached" if step is None else f"{step:,}".replace(",", " ")


def fmt_num(x: float) -> str:
    """Three significant digits, thousands separated by a space (``0.0041``, ``24.6``, ``1 578``)."""
    if x is None or not math.isfinite(x):
        return "n/a"
    if abs(x) >= 1000:
        return f"{round(x):,}".replace(",", " ")
    return f"{x:.3g}"


def fmt_set(values) -> str:
    return "{" + ", ".join(str(v) for v in values) + "}"


# ---- a run's results, in words ---------------------------------------------------------------
def _at(rows: list[dict], step: int | None) -> dict | None:
    return next((r for r in rows if r["step"] == step), None)


def cluster_counts(summary: dict) -> dict[str, int]:
    """How the final checkpoint's MLP neurons split: ``key`` (in a key frequency's cluster), ``unclustered``,
    ``dead``, ``small`` (passed the threshold for a frequency with too few neurons) and their ``total``."""
    out = {"key": sum(summary.get("neurons_per_frequency", {}).values()),
           "unclustered": len(summary.get("unclustered_neurons", [])),
           "dead": len(summary.get("dead_neurons", [])),
           "small": sum(summary.get("small_clusters", {}).values())}
    out["total"] = sum(out.values())
    return out


def key_frequency_sentence(summary: dict) -> str:
    """The key frequencies of a run and how stable they are, in words, from its summary."""
    keys, n = summary.get("key_frequencies", []), cluster_counts(summary)
    thr = summary.get("cluster_threshold", 0.85)
    if not keys:
        head = f"no key frequency (no frequency explains ≥ {thr:.0%} of the variance of ≥ {summary.get('min_cluster_neurons')} neurons)"
    else:
        per = ", ".join(str(v) for v in summary["neurons_per_frequency"].values())
        head = (f"{fmt_set(keys)} ({per} neurons; a frequency needs ≥ {summary.get('min_cluster_neurons')} neurons with "
                f"≥ {thr:.0%} of their variance in it)")
    parts = [f"{n['unclustered']} of {n['total']} neurons explain < {thr:.0%} of their variance with one frequency",
             f"{n['dead']} are dead (no variance)"]
    if n["small"]:
        small = ", ".join(f"{k} ({v})" for k, v in summary["small_clusters"].items())
        parts.append(f"{n['small']} pass the threshold for a frequency with too few neurons ({small})")
    stable, stab = key_frequency_stability(summary)
    return f"{head}; {', '.join(parts)}; {stab if stable else 'the set is not stable: ' + stab}"


def key_frequency_stability(summary: dict) -> tuple[bool, str]:
    """Whether the key-frequency set is the same at the nearby clustering thresholds and on the last
    checkpoints, and in words: where it is the same, or each threshold and step that finds another set."""
    keys = summary.get("key_frequencies", [])
    by_t, by_s = summary.get("key_frequencies_by_threshold", {}), summary.get("key_frequencies_by_step", {})
    if summary.get("key_frequencies_stable"):
        return True, (f"the same set at thresholds {', '.join(by_t)} and on the last {len(by_s)} checkpoints "
                      f"(steps {', '.join(fmt_step(int(x)) for x in by_s)})")
    diff = [f"threshold {t}: {fmt_set(v)}" for t, v in by_t.items() if v != keys]
    diff += [f"step {fmt_step(int(x))}: {fmt_set(v)}" for x, v in by_s.items() if v != keys]
    return False, "; ".join(diff)


def loss_crossings(rows: list[dict], phases: dict) -> dict[str, dict | None]:
    """The first checkpoints after memorisation where restricted and test loss fall below 1 and 0.1
    (``restricted_1``, ``restricted_0.1``, ``test_1``, ``test_0.1``; rows, or None where never)."""
    late = [r for r in rows if phases.get("memorised") is not None and r["step"] >= phases["memorised"]]
    return {f"{col}_{lvl:g}": next((r for r in late if r[f"{col}_loss"] < lvl), None)
            for col in ("restricted", "test") for lvl in (1, 0.1)}


def mechanism_sentence(rows: list[dict], summary: dict) -> str:
    """Clock or pizza, in words, from the final checkpoint's mechanism columns (``analyses.mechanism``).

    Each measure is placed between the medians of Zhong et al.'s pizza-like and clock-like runs
    (``mechanism_position``: 0 pizza, 1 clock); the verdict is "firmly" clock (pizza) when both are at
    or beyond the clock (pizza) median, "closer to" when both are on the same side of halfway, and
    "between" when the two measures disagree. Circularity below 0.99 (the authors' cut) is said.
    """
    if summary.get("mechanism_note"):
        return f"{summary['mechanism_note'][0].upper()}{summary['mechanism_note'][1:]}."
    final = rows[-1]
    gs, di, circ = final["grad_symmetricity"], final["distance_irrelevance"], final["circularity"]
    if not all(math.isfinite(x) for x in (gs, di, circ)):
        return f"The mechanism measures are not defined at step {fmt_step(final['step'])} (a constant correct logit)."
    pz, ck = mechanism.PIZZA_REFERENCE, mechanism.CLOCK_REFERENCE
    t = mechanism.mechanism_position(gs, di)
    ts = list(t.values())
    if all(x >= 1 for x in ts) or all(x <= 0 for x in ts):
        verdict = f"firmly {'clock' if ts[0] >= 1 else 'pizza'}-like: both measures are at or beyond the {'clock' if ts[0] >= 1 else 'pizza'} runs' medians"
    elif all(x > 0.5 for x in ts) or all(x < 0.5 for x in ts):
        side = "clock" if ts[0] > 0.5 else "pizza"
        verdict = f"closer to the {side}: both measures are on its side of halfway, not both beyond its median"
    else:
        says = lambda x: "clock" if x > 0.5 else "pizza"  # noqa: E731
        verdict = (f"between the two: gradient symmetricity says {says(ts[0])}, distance irrelevance says "
                   f"{says(ts[1])}")
    circ_text = (f"circularity {circ:.3f} (top 4 embedding components are circles)" if circ >= 0.99 else
                 f"circularity {circ:.3f}, below the 0.99 the authors required before comparing, so the comparison is loose")
    return (f"At step {fmt_step(final['step'])}, gradient symmetricity {gs:.3f} and distance irrelevance {di:.3f} lie "
            f"{t['grad_symmetricity']:.0%} and {t['distance_irrelevance']:.0%} of the way from the medians of Zhong et al.'s "
            f"pizza-like runs ({pz['grad_symmetricity']}, {pz['distance_irrelevance']}) to their clock-like runs' "
            f"({ck['grad_symmetricity']}, {ck['distance_irrelevance']}; 1-layer, p = 59): {verdict}; {circ_text}.")


def stability_sentence(rows: list[dict], summary: dict) -> str:
    """The float32 softmax collapse before and after grokking, in words, from ``softmax_collapse_frac``,
    ``zero_loss_frac``, ``min_train_margin`` and ``loss_f32_minus_f64`` at the phase steps."""
    ph = summary.get("phases", {})
    points = [("memorisation", ph.get("memorised")), ("grokking", ph.get("grokked")), ("the last checkpoint", rows[-1]["step"])]
    parts = []
    for name, step in points:
        r = _at(rows, step)
        if r is None:
            parts.append(f"{name} not reached")
            continue
        parts.append(f"at {name} (step {fmt_step(step)}) {r['softmax_collapse_frac']:.1%} of the training examples have "
                     f"collapsed (zero loss: {r['zero_loss_frac']:.1%}), minimum margin {fmt_num(r['min_train_margin'])}, "
                     f"float32 minus float64 train loss {r['loss_f32_minus_f64']:.2g}")
    top = max(rows, key=lambda r: r["softmax_collapse_frac"])
    return (f"Float32 softmax collapse: {'; '.join(parts)}. The largest collapsed fraction is "
            f"{top['softmax_collapse_frac']:.1%} at step {fmt_step(top['step'])}.")


def results_block(rows: list[dict], summary: dict, irrep_rows: list[dict] | None = None) -> str:
    """What a run's analysis shows, as the README's Markdown list (``python -m interp.analyze RUN --readme``).

    Every number comes from ``rows`` (``checkpoints.csv``) and ``summary`` (``summary.json``), and
    every verb (falls, rises) is chosen by the numbers, so the text stays true for any run.
    """
    ph = summary["phases"]
    final = rows[-1]
    lines = []
    if summary.get("fourier_applies"):
        emb = summary.get("key_frequencies_embedding", [])
        same = "the same set" if emb == summary.get("key_frequencies") else fmt_set(emb)
        lines.append(f"- **Key frequencies** {key_frequency_sentence(summary)}; the embedding check (norm > max/4) gives "
                     f"{same}. The paper's model had {{14, 35, 41, 42, 52}}; other seeds find other sets.")
        late = [r for r in rows if ph["memorised"] is not None and r["step"] >= ph["memorised"]]
        x = loss_crossings(rows, ph)
        r1, r01 = x["restricted_1"], x["restricted_0.1"]
        t1, t01 = (None if x[k] is None else x[k]["step"] for k in ("test_1", "test_0.1"))
        if r1 is not None:
            earlier = t1 is None or r1["step"] < t1
            there = f"test loss {fmt_num(r1['test_loss'])}"
            lines.append(
                f"- **Restricted loss {'falls before' if earlier else 'does not fall before'} test loss**: it is first below 1 "
                f"at step {fmt_step(r1['step'])} ({there})"
                + (f" and below 0.1 at {fmt_step(r01['step'])} (test loss {fmt_num(r01['test_loss'])})" if r01 else "")
                + f"; test loss is first below 1 at {fmt_step(t1)} and below 0.1 at {fmt_step(t01)}.")
        if ph["circuit_formation_start"] is not None:
            start, peak = _at(rows, ph["circuit_formation_start"]), max(late, key=lambda r: r["excluded_loss"])
            low = min(late, key=lambda r: r["excluded_loss"])
            verb = "rises" if peak["excluded_loss"] > start["excluded_loss"] else "does not rise"
            lines.append(
                f"- **Excluded loss {verb} during circuit formation**: {fmt_num(low['excluded_loss'])} at its lowest "
                f"after memorisation (step {fmt_step(low['step'])}), {fmt_num(start['excluded_loss'])} where circuit formation "
                f"starts (step {fmt_step(start['step'])}), peak {fmt_num(peak['excluded_loss'])} at step {fmt_step(peak['step'])}, "
                f"then {fmt_num(final['excluded_loss'])} at step {fmt_step(final['step'])}.")
        if ph["cleanup_start"] is not None:
            c = _at(rows, ph["cleanup_start"])
            top = max(rows, key=lambda r: r["sum_sq_weights"])

            def change(a, b):
                return "falls" if b < a else "rises"

            lines.append(
                f"- **Cleanup**: from the cleanup start (step {fmt_step(c['step'])}) to step {fmt_step(final['step'])} the sum of "
                f"squared weights {change(c['sum_sq_weights'], final['sum_sq_weights'])} from {fmt_num(c['sum_sq_weights'])} to "
                f"{fmt_num(final['sum_sq_weights'])} (peak {fmt_num(top['sum_sq_weights'])} at step {fmt_step(top['step'])}); "
                f"the Gini coefficient of the Fourier norms of W_E {change(c['gini_W_E'], final['gini_W_E'])} from "
                f"{c['gini_W_E']:.2f} to {final['gini_W_E']:.2f}, that of W_L {change(c['gini_W_L'], final['gini_W_L'])} from "
                f"{c['gini_W_L']:.2f} to {final['gini_W_L']:.2f}.")
    elif summary.get("basis") in ("log", "irreps"):
        from interp import group_analysis

        lines += group_analysis.results_lines(rows, irrep_rows or [], summary)
    elif summary.get("note"):
        lines.append(f"- {summary['note']}.")
    lines.append(
        f"- **Phases** (`summary.json`): memorised {fmt_step(ph['memorised'])}, circuit formation starts "
        f"{fmt_step(ph['circuit_formation_start'])} (paper: 1.4k), C_gen overtakes C_mem {fmt_step(ph['cgen_overtakes_cmem'])}, "
        f"cleanup starts {fmt_step(ph['cleanup_start'])} (excluded-loss peak; paper: 9.4k), test accuracy ≥ 90% at "
        f"{fmt_step(ph['test_acc_0.9'])}, grokked (test accuracy ≥ 99%) {fmt_step(ph['grokked'])}."
        + (f" {summary['phases_note'][0].upper()}{summary['phases_note'][1:]}." if summary.get("phases_note") else ""))
    return "\n".join(_wrap(line) for line in lines) + "\n"


def _wrap(bullet: str, width: int = 100) -> str:
    """A Markdown bullet wrapped at ``width`` with its continuation lines indented."""
    import re
    import textwrap

    glued = re.sub(r"(?<=\d) (?=\d{3}\b)", "\0", bullet)  # never break inside "10 500"
    lines = textwrap.wrap(glued, width=width, subsequent_indent="  ", break_on_hyphens=False, break_long_words=False)
    return "\n".join(lines).replace("\0", " ")


