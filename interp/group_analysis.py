"""The analysis of tasks that are composition in a group: ``mod_mul``/``mod_div`` in log coordinates, ``s4``/``s5``/``a5``.

``interp.analyze`` calls this module for every task the Fourier-over-Z_p analysers do not cover but
that is a group (``view_for``):

- ``mod_mul`` and ``mod_div`` with a prime p: the *log* basis. Every non-zero residue is ``g^i`` for
  the primitive root g (``analyses.groups.primitive_root``), so ``a * b`` is ``i + j mod p - 1`` and
  ``a / b`` is ``i - j``: the analysis runs over Z_{p-1}, whose irreps are the frequencies ``k =
  1..(p-1)/2`` of Z_{p-1} (``k = (p-1)/2`` is the sign ``(-1)^i``, i.e. the Legendre symbol).
  Zero has no logarithm: only the ``(p - 1)^2`` pairs of non-zero residues enter the restricted,
  excluded and circuit measures (the train/test split restricted to them); token 0 and class 0 are
  shared weights; class 0's logit stays in the softmax.
- the group tasks: the *irreps* basis of ``analyses.groups`` over the group's real irreps.

Every column of ``checkpoints.csv`` then has the meaning it has for ``mod_add`` with "key frequency"
read as "key irrep" (for the log basis: key frequency of Z_{p-1}); ``gini_W_E``/``gini_W_L`` are
over the norms of the element rows/columns of W_E and W_L in the isotypic basis. In the log basis
``correct_logit`` (like ``cgen_logit`` and ``cmem_logit``, which add up to it) is the mean over the
train pairs of non-zero residues only. Per checkpoint and
irrep, ``irreps.csv`` (``IRREP_TABLE``) holds:

    step, irrep       the checkpoint; the irrep's index (names in summary.json ``irreps``; 0 is trivial)
    dim               its real dimension
    W_E_frac          fraction of |W_E|^2 over the element tokens' rows in the irrep (sums to 1 with trivial;
                      an MLP: its operands' embeddings side by side)
    x_embed_frac      an MLP only: the same for the first operand's "total embedding", what each token adds
                      to the first hidden pre-activation (W_x @ W_left): Chughtai et al.'s percent_x_embed
    W_U_frac          the same for W_U's element-class columns
    W_L_frac          the same for W_L (the last hidden layer's neuron-to-logit map) element-class columns
    mlp_frac          fraction of the last hidden layer's centred activation variance (all neurons, n^2 inputs) in
                      the block {trivial, irrep}^2 (empty for the trivial irrep)
    excluded_loss     train loss with only this irrep's directions removed (key irreps only)

The summary gains ``basis`` (``log`` / ``irreps``), ``basis_note``, ``group``, ``irreps`` (names),
``irrep_dims``, ``primitive_root`` (log basis), ``key_irreps`` (neuron clustering on the final
checkpoint, the rule of key frequencies), ``key_irrep_names``, ``key_irreps_embedding`` (irreps whose
W_E fraction exceeds a quarter of the largest non-trivial one), ``neurons_per_irrep``, the
clustering counts and stability fields of the Fourier summary under ``key_irreps_*`` names, and
``cmem_neurons``, and ``cosets``: the cuts of the clustered class directions (all of W_U's element columns,
then their part in each key irrep) that are the cosets of a subgroup (``analyses.cosets``).
"""

from __future__ import annotations

import math

import torch

from analyses import cosets, efficiency, fourier, groups, progress_measures
from interp.config import TrainConfig, is_prime
from interp.families import build_model, family_of, hidden_activations, operand_embedding
from interp.runs import Run, RunError

IRREP_TABLE = "irreps.csv"
IRREP_COLUMNS = ["step", "irrep", "dim", "W_E_frac", "x_embed_frac", "W_U_frac", "W_L_frac", "mlp_frac", "excluded_loss"]
INT_COLUMNS = {"irrep", "dim"}
STABILITY_THRESHOLDS = (0.8, 0.85, 0.9)
STABILITY_CHECKPOINTS = 3
KEY_FIELDS = ("key_irreps", "key_irreps_step", "key_irrep_names", "key_irreps_embedding", "neurons_per_irrep",
              "unclustered_neurons", "dead_neurons", "small_clusters", "min_cluster_neurons", "cluster_threshold",
              "key_irreps_by_threshold", "key_irreps_by_step", "key_irreps_stable", "cmem_neurons", "cosets")


def view_for(cfg: TrainConfig) -> groups.GroupView | None:
    """The group view of ``cfg``'s task: the log view of mod_mul/mod_div (prime p >= 3), a group task's
    irreps view, else ``None`` (mod_add/mod_sub have the Fourier analysis; the polynomials are no group)."""
    structure = cfg.task_spec.structure
    if structure is None:
        return None
    if structure.kind == "group":
        from interp.tasks import task_group

        return groups.group_view(task_group(structure.group))
    if structure.kind == "discrete_log" and is_prime(cfg.p) and cfg.p >= 3:
        return groups.log_view(cfg.p, structure.sign)
    return None


def grid_activations(model, cfg: TrainConfig, view: groups.GroupView) -> dict[str, torch.Tensor]:
    """Each hidden layer's activations (``interp.families.hidden_activations``) for every element pair
    ``(g, h)`` of the view, ``{name: [n, n, width]}``."""
    a, b = view.inputs()
    n = view.group.order
    x = torch.stack([a, b, torch.full_like(a, cfg.eq_token)], dim=1)
    return {name: acts.reshape(n, n, -1) for name, acts in hidden_activations(model, cfg, x).items()}


def base_summary(view: groups.GroupView) -> dict:
    """The summary fields that describe the basis (no model needed)."""
    g = view.group
    if view.basis == "log":
        note = (f"log basis: a {'*' if view.sign > 0 else '/'} b mod p is i {'+' if view.sign > 0 else '-'} j mod {g.order} for "
                f"a = {view.generator}^i, b = {view.generator}^j, so the Fourier analysers run over Z_{g.order} in log "
                f"coordinates; {view.note}")
    else:
        note = (f"irreps basis: composition in {g.name} ({g.order} elements), analysed over its {len(view.irreps)} real "
                f"irreducible representations ({', '.join(f'{r.name} (dim {r.dim})' for r in view.irreps)})")
    return {"basis": view.basis, "basis_note": note, "group": g.name, "irreps": view.names,
            "irrep_dims": [r.dim for r in view.irreps], "primitive_root": view.generator}


def grid_rows(run: Run, view: groups.GroupView) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(row_of_grid [n^2], train positions, test positions)``: the dataset row of each grid input and
    the grid positions of the train/test examples whose tokens are all elements (non-zero, in the log view)."""
    data = run.dataset
    pos = view.grid_positions(data.inputs[:, 0], data.inputs[:, 1])
    n2 = view.group.order ** 2
    row_of_grid = torch.full((n2,), -1, dtype=torch.long)
    inside = pos >= 0
    row_of_grid[pos[inside]] = torch.nonzero(inside).flatten()
    if (row_of_grid < 0).any():
        raise RunError(f"{run.path}: the inputs do not cover the {n2} pairs of the {view.group.name} view")
    if not torch.equal(data.labels[row_of_grid], view.labels()):
        raise RunError(f"{run.path}: the labels are not {view.group.name} composition in the documented element order")
    tr, te = pos[data.train_idx], pos[data.test_idx]
    return row_of_grid, tr[tr >= 0], te[te >= 0]


def key_irrep_summary(run: Run, step: int, view: groups.GroupView) -> dict:
    """Key irreps of checkpoint ``step`` (neuron clustering, as ``interp.analysers.key_frequency_summary``)."""
    from interp import runs

    cfg = run.config
    B, owner = groups.isotypic_basis(view.irreps)
    m = len(view.irreps)
    model = runs.load_checkpoint(run.path, step, cfg)
    layers = grid_activations(model, cfg, view)
    acts = list(layers.values())[-1]
    fracs, variance = groups.neuron_spectrum(acts, B, owner, m)
    clusters = fourier.assign_clusters(fracs, variance)
    keys = clusters.key_frequencies
    gen = groups.key_irrep_fraction(fracs, keys) >= efficiency.GEN_NEURON_THRESHOLD
    we = groups.fractions_1d(operand_embedding(model, cfg)[view.tokens], B, owner, m)
    nontriv = we[1:]
    emb = [r + 1 for r in torch.nonzero(nontriv > 0.25 * nontriv.max()).flatten().tolist()]
    by_threshold = {f"{t:g}": fourier.assign_clusters(fracs, variance, t).key_frequencies for t in STABILITY_THRESHOLDS}
    by_step = {}
    for s in [s for s in run.steps if s <= step][-STABILITY_CHECKPOINTS:]:
        mdl = model if s == step else runs.load_checkpoint(run.path, s, cfg)
        f, v = groups.neuron_spectrum(list(grid_activations(mdl, cfg, view).values())[-1], B, owner, m)
        by_step[str(s)] = fourier.assign_clusters(f, v).key_frequencies
    sets = [*by_threshold.values(), *by_step.values()]
    return {
        "key_irreps": keys,
        "key_irreps_step": step,
        "key_irrep_names": [view.irreps[k].name for k in keys],
        "key_irreps_embedding": emb,
        "key_irreps_by_layer": {name: fourier.assign_clusters(*groups.neuron_spectrum(a, B, owner, m)).key_frequencies
                                for name, a in layers.items()},
        "neurons_per_irrep": {str(k): n for k, n in clusters.neurons_per_frequency().items()},
        "unclustered_neurons": clusters.unclustered,
        "dead_neurons": clusters.dead,
        "small_clusters": {str(k): len(v) for k, v in clusters.small_clusters.items()},
        "min_cluster_neurons": clusters.min_neurons,
        "cluster_threshold": clusters.threshold,
        "key_irreps_by_threshold": by_threshold,
        "key_irreps_by_step": by_step,
        "key_irreps_stable": all(x == keys for x in sets),
        "cmem_neurons": torch.nonzero(~gen).flatten().tolist(),
        "cosets": coset_summary(family_of(cfg).views(model).unembed, view, B, owner, keys),
    }


def coset_summary(W_U: torch.Tensor, view: groups.GroupView, B: torch.Tensor, owner: torch.Tensor, keys: list[int]) -> list[dict]:
    """Coset cuts (``analyses.cosets``) of the class directions: all of the unembedding ``W_U``'s element columns
    (``WeightViews.unembed``), then their component in each key irrep; one entry per direction set with its cuts."""
    W = W_U.detach()[:, view.classes]
    sets = [("all", None)] + [(view.irreps[k].name, torch.nonzero(owner == k).flatten()) for k in keys]
    out = []
    for name, rows in sets:
        dirs = cosets.class_directions(W, B if rows is not None else None, rows)
        cuts = cosets.coset_structure(view.group, dirs)
        out.append({"directions": name, "cuts": [
            {"k": c.k, "side": c.side, "subgroup_order": len(c.subgroup), "generators": [view.group.labels[g] for g in c.generators],
             "normal": c.normal, "n_conjugates": len(c.conjugates), "within": c.within, "between": c.between,
             "text": cosets.describe(view.group, c)} for c in cuts]})
    return out


def coset_sentence(summary: dict) -> str:
    """The coset cuts of a run in words (from ``summary["cosets"]``)."""
    parts = []
    for entry in summary.get("cosets", []):
        where = "W_U" if entry["directions"] == "all" else f"W_U's {entry['directions']} part"
        if entry["cuts"]:
            parts.append(f"{where}: " + "; ".join(c["text"] for c in entry["cuts"]))
        else:
            parts.append(f"{where}: no cut of the clustering tree is a coset partition")
    return ". ".join(parts)


class GroupAnalyser:
    """Fills the Fourier columns of a checkpoint's row from the group view, and returns its ``irreps.csv`` rows."""

    def __init__(self, run: Run, view: groups.GroupView, key: list[int], cmem_neurons: list[int]):
        self.run, self.view, self.key = run, view, [int(k) for k in key]
        self.cfg = run.config
        self.B, self.owner = groups.isotypic_basis(view.irreps)
        self.m = len(view.irreps)
        self.row_of_grid, self.train_pos, self.test_pos = grid_rows(run, view)
        self.labels = view.labels()
        self.dirs = groups.directions(view.group, self.B, self.owner, self.key, view.sign)
        self.irrep_dirs = [groups.directions(view.group, self.B, self.owner, [r], view.sign) for r in self.key]
        views = family_of(self.cfg).views(build_model(self.cfg))
        self.roles = views.roles
        self.gen_neurons = efficiency.gen_neuron_mask(views.neuron_logits.shape[0], cmem_neurons)

    @torch.no_grad()
    def __call__(self, model, row: dict, logits: torch.Tensor) -> list[dict]:
        """Fill ``row`` (restricted/excluded loss, Gini, logit similarity, C_gen/C_mem columns) from the
        logits of the dataset's inputs; return the checkpoint's irrep rows."""
        v, B, owner, m = self.view, self.B, self.owner, self.m
        lg = logits[self.row_of_grid].to(torch.float64)  # [n^2, classes], grid order
        y, tr, te = self.labels, self.train_pos, self.test_pos
        row["restricted_loss"] = progress_measures.restricted_loss(lg, y, self.dirs, te)
        row["excluded_loss"] = progress_measures.excluded_loss(lg, y, self.dirs, tr)
        views = family_of(self.cfg).views(model)
        W_E = operand_embedding(model, self.cfg)[v.tokens].to(torch.float64)
        W_U = views.unembed.detach()[:, v.classes].to(torch.float64)
        W_L = views.neuron_logits.detach()[:, v.classes].to(torch.float64)
        row["gini_W_E"] = progress_measures.gini((B @ W_E).norm(dim=-1))
        row["gini_W_L"] = progress_measures.gini((B @ W_L.T).norm(dim=-1))
        row["logit_cos_sim"] = groups.ideal_logit_cosine(lg[:, v.classes], v.group, v.irreps, self.key, v.sign)
        split = efficiency.circuit_logits(lg, y, self.dirs, tr)
        row.update(split)  # correct_logit too: over the view's train pairs, so that cgen + cmem = correct_logit
        row.update(groups.split_parameters(model, v, B, owner, self.key, self.gen_neurons, self.roles).norms())
        row["cgen_efficiency"] = efficiency.efficiency(row["cgen_logit"], row["cgen_param_norm"])
        row["cmem_efficiency"] = efficiency.efficiency(row["cmem_logit"], row["cmem_param_norm"])

        we = groups.fractions_1d(W_E, B, owner, m)
        xe = (groups.fractions_1d(views.operand_hidden[0].detach()[v.tokens], B, owner, m) if views.operand_hidden is not None
              else torch.full((m,), math.nan))
        wu = groups.fractions_1d(W_U.T, B, owner, m)
        wl = groups.fractions_1d(W_L.T, B, owner, m)
        acts = list(grid_activations(model, self.cfg, v).values())[-1]
        mlp = groups.activation_fractions(acts, B, owner, m)
        excl = {}
        for r, d in zip(self.key, self.irrep_dirs):
            excl[r] = progress_measures.excluded_loss(lg, y, d, tr)
        return [{"step": row["step"], "irrep": r, "dim": v.irreps[r].dim, "W_E_frac": we[r].item(), "x_embed_frac": xe[r].item(), "W_U_frac": wu[r].item(),
                 "W_L_frac": wl[r].item(), "mlp_frac": mlp[r - 1].item() if r else math.nan, "excluded_loss": excl.get(r, math.nan)}
                for r in range(m)]


def irrep_set(summary: dict, irreps: list[int]) -> str:
    """``{standard [4,1], sign [1,1,1,1,1]}``-style names of irrep indices."""
    names = summary.get("irreps", [])
    return "{" + ", ".join(names[i] if i < len(names) else str(i) for i in irreps) + "}"


def key_irrep_sentence(summary: dict) -> str:
    """The key irreps of a run and how stable they are, in words, from its summary."""
    keys, thr = summary.get("key_irreps", []), summary.get("cluster_threshold", 0.85)
    if not keys:
        head = f"no key irrep (none explains ≥ {thr:.0%} of the variance of ≥ {summary.get('min_cluster_neurons')} neurons)"
    else:
        per = ", ".join(str(x) for x in summary["neurons_per_irrep"].values())
        head = (f"{irrep_set(summary, keys)} ({per} neurons; an irrep needs ≥ {summary.get('min_cluster_neurons')} neurons with "
                f"≥ {thr:.0%} of their variance in its block)")
    n_unc, n_dead = len(summary.get("unclustered_neurons", [])), len(summary.get("dead_neurons", []))
    stable = "stable across thresholds and the last checkpoints" if summary.get("key_irreps_stable") else "not stable across thresholds and the last checkpoints"
    return f"{head}; {n_unc} neurons unclustered, {n_dead} dead; {stable}"


def results_lines(rows: list[dict], irrep_rows: list[dict], summary: dict) -> list[str]:
    """Markdown bullets (for ``interp.analyze --readme``) on a group-basis analysis; every number from the tables."""
    final = rows[-1]
    last = [r for r in irrep_rows if r["step"] == final["step"]]
    lines = [f"- **Basis**: {summary['basis_note']}."]
    lines.append(f"- **Key {'log-frequencies (irreps of ' + summary['group'] + ')' if summary['basis'] == 'log' else 'irreps'}** "
                 f"{key_irrep_sentence(summary)}; the embedding check (W_E share > max/4) gives "
                 f"{irrep_set(summary, summary.get('key_irreps_embedding', []))}.")
    if last:
        top = sorted(last, key=lambda r: -r["W_E_frac"])[:3]
        lines.append("- **Shares at step " + f"{final['step']}**: W_E " + ", ".join(
            f"{summary['irreps'][r['irrep']]} {r['W_E_frac']:.0%}" for r in top) + "; W_U " + ", ".join(
            f"{summary['irreps'][r['irrep']]} {r['W_U_frac']:.0%}" for r in sorted(last, key=lambda r: -r["W_U_frac"])[:3]) + ".")
    if summary.get("cosets"):
        lines.append(f"- **Cosets** (class directions of W_U clustered, average linkage on cosine distance): {coset_sentence(summary)}.")
    if summary.get("key_irreps"):
        lines.append(f"- **Restricted vs excluded loss** at step {final['step']}: restricted {final['restricted_loss']:.3g} (test), "
                     f"excluded {final['excluded_loss']:.3g} (train), test loss {final['test_loss']:.3g}; "
                     f"C_gen efficiency {final['cgen_efficiency']:.3g}, C_mem {final['cmem_efficiency']:.3g}.")
    return lines


def irrep_from_flag(run_dir, name: str) -> int:
    """The irrep index ``--irrep NAME`` asks for, checked before anything is computed.

    Raises:
        RunError: the run is not analysed as a group, or the group has no such irrep (the message lists them).
    """
    from interp import runs

    cfg = runs.load_run(run_dir).config
    view = view_for(cfg)
    if view is None:
        raise RunError(f"--irrep {name!r}: {cfg.task} is not analysed as a group (only mod_mul, mod_div with a prime p, "
                       "and the group tasks are)")
    try:
        return view.irrep_index(name)
    except groups.GroupError as e:
        raise RunError(f"--irrep {name!r}: {e}") from None


def irrep_lines(irrep_rows: list[dict], summary: dict, irrep: int) -> str:
    """One irrep's rows of ``irreps.csv`` as a small text table."""
    name = summary["irreps"][irrep]
    key = "key" if irrep in summary.get("key_irreps", []) else "not key"
    out = [f"irrep {irrep}: {name} (dim {summary['irrep_dims'][irrep]}, {key})",
           f"{'step':>8} {'W_E_frac':>9} {'W_U_frac':>9} {'W_L_frac':>9} {'mlp_frac':>9} {'excluded_loss':>14}"]
    for r in irrep_rows:
        if r["irrep"] == irrep:
            out.append(f"{r['step']:>8} {r['W_E_frac']:>9.4f} {r['W_U_frac']:>9.4f} {r['W_L_frac']:>9.4f} {r['mlp_frac']:>9.4f} "
                       f"{r['excluded_loss']:>14.4g}")
    return "\n".join(out) + "\n"
