"""The MLP model family: the papers' MLPs on token pairs, and Omnigrok's MLP on real-valued inputs.

One module, ``MLP``, with the switches the papers' own code uses (``TrainConfig`` fields ``d_model``, ``d_mlp``
and the ``mlp_*`` ones):

- **On real-valued inputs** (the digits task): ``n_features -> d_mlp -> ... -> classes``, ``mlp_depth`` hidden
  layers (default 2: Omnigrok's 64-200-200-10 on the digits; Fan et al.'s "depth 12" counts linear
  layers, i.e. 11 hidden ones).
- **On ``[a, b, =]`` tokens** (every pair task and the group tasks; ``=`` is not read): each operand
  ``x_i`` is embedded (``mlp_embed``: ``tied``, one ``[d_vocab, d_model]`` table for both operands;
  ``untied``, one per operand, each ``[p, d_model]`` (the operand tokens); ``onehot``, no table: the one-hot vector itself), then the first hidden
  layer adds one linear map per operand (``mlp_combine``: ``concat``, one matrix over the concatenated
  embeddings, i.e. two halves with the fan-in of both and one bias; ``sum``, a separate ``nn.Linear``
  per operand, each with its own bias, outputs summed; ``shared``, the same ``nn.Linear`` applied to each
  operand, summed). ``mlp_depth`` hidden layers of width ``d_mlp`` follow (default 1), then the output
  layer (``mlp_unembed``: ``direct``, hidden -> classes; ``project``, hidden -> ``d_model`` -> classes,
  two linear maps in a row).

Which paper uses what (their code, read for this module; the presets in ``interp.config`` set these):

============================  ========  ========  =======  =========  ===========  ==========
model                         embed     combine   unembed  d_model    d_mlp        init
============================  ========  ========  =======  =========  ===========  ==========
Chughtai et al. S5            untied    concat    direct   256        128          chughtai
devinterp grokking example    tied      sum       direct   12         48 (GELU)    torch
Minegishi et al. tickets      tied      shared    project  500        48           minegishi
Prieto et al. StableMax       onehot    concat    direct   --         200, 200     torch
============================  ========  ========  =======  =========  ===========  ==========

Initialisation (``mlp_init``): ``torch``, PyTorch's own (``nn.Embedding``: N(0, 1); ``nn.Linear``: weights
and bias uniform in +-1/sqrt(fan-in), the fan-in of ``concat`` being both operands'); ``chughtai``, every
matrix N(0, 1/fan-in) and each embedding N(0, 1/d_model); ``minegishi``, the same with the embedding
N(0, 1/p), p operand tokens. Then every parameter is multiplied by ``init_scale`` (Omnigrok's alpha). Biases:
with ``freeze_biases`` (the default) they are zero and stay zero, i.e. there are none, as in Chughtai,
Minegishi and Prieto; without it every layer has a trained bias, except the output layer when
``mlp_out_bias`` is off (devinterp's ``linear2``).

It is the ``mlp`` model family (``interp.families``), the digits task's own and ``--family mlp`` for the
token tasks: training, checkpoints, resume, sweeps and every analyser read it through the family
(``activations``: each hidden layer's post-activation ``layers.{i}.post``; ``views``: see ``views``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

OPERANDS = 2  # the MLP reads the first two tokens of [a, b, =]
MLP_DEFAULTS = dict(mlp_depth=None, mlp_embed="untied", mlp_combine="concat", mlp_unembed="direct", mlp_init="torch",
                    mlp_out_bias=True)  # TrainConfig's defaults of the mlp-only fields (the transformer refuses others)


class MLP(nn.Module):
    """Inputs -> logits through ``depth`` hidden layers (see the module docstring).

    Parameters (names as in checkpoints): ``embed.{i}`` (token tables), ``first.{i}`` (the per-operand first
    layer), ``layers.{i}`` (the remaining linear layers, the output layer(s) last). On real-valued inputs
    there is no ``embed`` or ``first``: ``layers.0`` reads the features.
    """

    def __init__(self, d_in: int, d_vocab: int, d_out: int, d_model: int, d_hidden: int, depth: int,
                 embed: str = "untied", combine: str = "concat", unembed: str = "direct", act_fn: str = "relu",
                 out_bias: bool = True):
        super().__init__()
        self.tokens, self.embed_kind, self.combine, self.unembed = d_vocab > 0, embed, combine, unembed
        self.act = {"relu": torch.relu, "gelu": F.gelu, "tanh": torch.tanh}[act_fn]
        self.embed = nn.ParameterList()
        self.first = nn.ModuleList()
        layers: list[nn.Linear] = []
        if self.tokens:
            n_tok = d_vocab - 1  # the operand tokens: every token but '=' (the last), which the MLP does not read
            d_e = n_tok if embed == "onehot" else d_model
            if embed != "onehot":
                self.embed.extend(nn.Parameter(torch.empty(n_tok, d_model)) for _ in range(1 if embed == "tied" else OPERANDS))
            n_first = 1 if combine == "shared" else OPERANDS
            self.first.extend(nn.Linear(d_e, d_hidden, bias=(i == 0 or combine == "sum")) for i in range(n_first))
        else:
            layers.append(nn.Linear(d_in, d_hidden))
        layers += [nn.Linear(d_hidden, d_hidden) for _ in range(depth - 1)]
        if unembed == "project":
            layers += [nn.Linear(d_hidden, d_model), nn.Linear(d_model, d_out, bias=out_bias)]
        else:
            layers.append(nn.Linear(d_hidden, d_out, bias=out_bias))
        self.layers = nn.ModuleList(layers)
        self.n_out = 2 if unembed == "project" else 1

    # ---- the operands' way in ----
    def operand_table(self, i: int) -> Tensor:
        """``[d_vocab - 1, d]``: operand ``i``'s vector for each operand token, as the first layer reads it (``onehot``: the
        first layer's weight columns of that operand, i.e. its contribution to the first pre-activation)."""
        if self.embed_kind == "onehot":
            return self.first[min(i, len(self.first) - 1)].weight.T
        return self.embed[0 if self.embed_kind == "tied" else i]

    def operand_hidden(self, i: int) -> Tensor:
        """``[d_vocab - 1, d_hidden]``: what each token of operand ``i`` adds to the first hidden pre-activation
        (Chughtai et al.'s "total embedding" ``W_x @ W_left``; biases left out)."""
        lin = self.first[0 if self.combine == "shared" else i]
        return lin.weight.T if self.embed_kind == "onehot" else self.operand_table(i) @ lin.weight.T

    def first_pre(self, x: Tensor) -> Tensor:
        """The first hidden layer's pre-activation from the operand tokens ``x[:, 0]``, ``x[:, 1]``."""
        pre = 0
        for i in range(OPERANDS):
            lin = self.first[0 if self.combine == "shared" else i]
            if self.embed_kind == "onehot":
                out = lin.weight.T[x[:, i]]
                pre = pre + (out if lin.bias is None else out + lin.bias)
            else:
                pre = pre + lin(self.operand_table(i)[x[:, i]])
        return pre

    def hidden(self, x: Tensor) -> list[Tensor]:
        """Each hidden layer's post-activation, ``[batch, d_hidden]``, first to last."""
        if self.tokens:
            h = self.act(self.first_pre(x[:, :OPERANDS]))
            rest = self.layers[: -self.n_out]
        else:
            h = self.act(self.layers[0](x))
            rest = self.layers[1: -self.n_out]
        out = [h]
        for layer in rest:
            h = self.act(layer(h))
            out.append(h)
        return out

    def input_space(self, x: Tensor) -> Tensor:
        """The inputs as points of the continuous space the first layer reads: the features themselves, or on
        tokens the operand vectors side by side (``operand_table`` rows; ``onehot``: the one-hot vectors),
        ``[batch, 2 * d]``. ``preactivations`` of these points is the network's own computation."""
        if not self.tokens:
            return x
        n_tok = self.first[0].weight.shape[1] if self.embed_kind == "onehot" else None
        parts = [F.one_hot(x[:, i], n_tok).to(self.first[0].weight.dtype) if n_tok else self.operand_table(i)[x[:, i]]
                 for i in range(OPERANDS)]
        return torch.cat(parts, dim=1)

    def preactivations(self, z: Tensor) -> list[Tensor]:
        """Each hidden layer's pre-activation, ``[batch, d_hidden]``, at points ``z`` of ``input_space`` (any point
        of that space, not only the inputs': what ``analyses.local_complexity`` probes)."""
        if self.tokens:
            zs = z.chunk(OPERANDS, dim=1)
            pre = sum(self.first[0 if self.combine == "shared" else i](zs[i]) for i in range(OPERANDS))
            rest = self.layers[: -self.n_out]
        else:
            pre = self.layers[0](z)
            rest = self.layers[1: -self.n_out]
        out = [pre]
        for layer in rest:
            pre = layer(self.act(pre))
            out.append(pre)
        return out

    def forward(self, x: Tensor) -> Tensor:
        h = self.hidden(x)[-1]
        for layer in self.layers[-self.n_out:]:
            h = layer(h)
        return h

    def neuron_logits(self) -> Tensor:
        """``[d_hidden, d_out]``: what each last-hidden-layer neuron adds to the logits (the output layer(s))."""
        w = self.layers[-1].weight
        if self.n_out == 2:
            w = w @ self.layers[-2].weight
        return w.T


def _init(model: MLP, cfg: "TrainConfig") -> None:
    """``cfg.mlp_init``'s initialisation (the module docstring), in place, from the current RNG state."""
    with torch.no_grad():
        for e in model.embed:
            std = 1.0 if cfg.mlp_init == "torch" else 1 / math.sqrt(cfg.d_model if cfg.mlp_init == "chughtai" else e.shape[0])
            e.normal_(0.0, std)
        if model.combine == "concat":  # one matrix over both operands: the fan-in of both
            fan_in = OPERANDS * model.first[0].in_features
            for lin in model.first:
                _init_linear(lin, cfg.mlp_init, fan_in)
        elif cfg.mlp_init != "torch":
            for lin in model.first:
                _init_linear(lin, cfg.mlp_init, lin.in_features)
        if cfg.mlp_init != "torch":
            for lin in model.layers:
                _init_linear(lin, cfg.mlp_init, lin.in_features)


def _init_linear(lin: nn.Linear, init: str, fan_in: int) -> None:
    if init == "torch":
        bound = 1 / math.sqrt(fan_in)
        lin.weight.uniform_(-bound, bound)
        if lin.bias is not None:
            lin.bias.uniform_(-bound, bound)
    else:
        lin.weight.normal_(0.0, 1 / math.sqrt(fan_in))
        if lin.bias is not None:
            lin.bias.zero_()


def build_mlp(cfg: "TrainConfig") -> MLP:
    """A freshly initialised ``MLP`` for ``cfg`` (seeded; the global RNG state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = MLP(cfg.n_ctx, cfg.d_vocab, cfg.d_vocab_out, cfg.d_model, cfg.d_mlp, cfg.mlp_depth, cfg.mlp_embed,
                    cfg.mlp_combine, cfg.mlp_unembed, cfg.act_fn, cfg.mlp_out_bias)
        if model.tokens:
            _init(model, cfg)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if cfg.freeze_biases and name.endswith("bias"):
                param.zero_().requires_grad_(False)
            else:
                param.mul_(cfg.init_scale)
    return model


# ---- the MLP as a model family (interp.families) ------------------------------------------------
def activations(model: MLP, cfg: "TrainConfig", x: Tensor) -> dict[str, Tensor]:
    """Each hidden layer's post-activation, ``layers.{i}.post`` (``[batch, d_mlp]``), first to last."""
    return {f"layers.{i}.post": h for i, h in enumerate(model.hidden(x))}


def views(model: MLP) -> dict:
    """The fields of ``interp.families.WeightViews``: each operand's table (``MLP.operand_table``; on real-valued
    inputs the first layer's weights), the output layer(s) as the neuron-to-logit map and the unembedding,
    and the circuit roles: the embeddings by token (``onehot``: the first layer's columns), the last linear
    layer by class, and the last hidden layer's incoming weights and biases by neuron. A parameter takes
    one role: the output layer of a ``direct`` MLP maps neurons to classes and is split by class; the first
    layer of a one-hidden-layer ``onehot`` MLP is its embedding and is split by token."""
    if not model.tokens:
        return dict(embed=[model.layers[0].weight.T], neuron_logits=model.neuron_logits(), unembed=model.layers[-1].weight.T,
                    roles={}, attention=False)
    roles: dict[str, tuple[str, int]] = {}
    depth = len(model.layers) - model.n_out + 1
    if depth == 1:
        for i, lin in enumerate(model.first):
            roles[f"first.{i}.weight"] = ("neuron", 0)
            if lin.bias is not None:
                roles[f"first.{i}.bias"] = ("neuron", 0)
    else:
        last = depth - 2
        roles[f"layers.{last}.weight"], roles[f"layers.{last}.bias"] = ("neuron", 0), ("neuron", 0)
    if model.embed_kind == "onehot":
        roles.update({f"first.{i}.weight": ("token", 1) for i in range(len(model.first))})
    else:
        roles.update({f"embed.{i}": ("token", 0) for i in range(len(model.embed))})
    out = len(model.layers) - 1
    roles[f"layers.{out}.weight"], roles[f"layers.{out}.bias"] = ("class", 0), ("class", 0)
    if model.n_out == 2:  # the projection back to d_model: the neurons' outgoing weights
        roles[f"layers.{out - 1}.weight"] = ("neuron", 1)
    return dict(embed=[model.operand_table(i) for i in range(OPERANDS)], neuron_logits=model.neuron_logits(),
                unembed=model.layers[-1].weight.T, roles=roles, attention=False,
                operand_hidden=[model.operand_hidden(i) for i in range(OPERANDS)])


def check(cfg: "TrainConfig") -> tuple[str, str] | None:
    """``(field, why)`` for a config this MLP cannot take: transformer options, the fast engine, tokens it cannot read."""
    if (cfg.n_layers, cfg.normalization, cfg.attn_only) != (1, "none", False):
        name = "n_layers" if cfg.n_layers != 1 else "normalization" if cfg.normalization != "none" else "attn_only"
        return name, "is a transformer option; the MLP's depth is --mlp-depth"
    if cfg.engine == "fast":
        return "engine", f"the {cfg.family} family has no fast path; use auto or hooked (both train its plain forward)"
    task = cfg.task_spec
    if task.d_vocab(cfg) > 0 and not task.token_pair:
        return "family", f"the MLP reads the two operands of [a, b, =]; {cfg.task} has other token inputs (use --family transformer)"
    if task.d_vocab(cfg) == 0 and not task.regression and cfg.act_fn != "relu":
        return "act_fn", "the digits MLP is Omnigrok's ReLU MLP"
    if cfg.act_fn == "tanh" and not task.regression:
        return "act_fn", "tanh is the teacher-student MLP's (regression tasks); the classifiers use relu or gelu"
    return None
