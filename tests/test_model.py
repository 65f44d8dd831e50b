"""The fast training forward must be the HookedTransformer, only faster."""

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from interp.config import TrainConfig
from interp.families import build_model
from interp.model import fast_applies, fast_logits, fast_loss, has_hooks, hooked_config, hooked_logits
from interp.losses import loss_fn
from interp.tasks import make_dataset
from interp.train import make_optimizer
from tests.conftest import tiny_config


def _randomise_biases(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "b_" in name:
                p.normal_(0, 0.1)


@pytest.mark.parametrize("task", ["mod_add", "mod_div"])
def test_fast_logits_equal_hooked_forward(task):
    cfg = tiny_config(task=task)
    model = build_model(cfg)
    _randomise_biases(model)  # frozen at zero by default; the equality must not rely on that
    data = make_dataset(cfg)
    with torch.no_grad():
        ref = hooked_logits(model, data.inputs)
        fast = fast_logits(model, data.a, data.b, cfg.eq_token)
    assert fast.shape == (len(data.labels), cfg.p)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("task", ["mod_add", "mod_div"])
@pytest.mark.parametrize("chunk_rows", [10, 10_000])  # several chunks (the last one short: 84 and 78 rows), and one
def test_fast_loss_equals_hooked_loss_and_gradients(task, chunk_rows):
    cfg = tiny_config(task=task)
    data = make_dataset(cfg)
    x, y = data.inputs[data.train_idx], data.labels[data.train_idx]
    hooked, fast = build_model(cfg), build_model(cfg)
    _randomise_biases(hooked)
    fast.load_state_dict(hooked.state_dict())
    for m in (hooked, fast):
        for p in m.parameters():
            p.requires_grad_(True)  # biases too: every parameter's gradient is compared
    ref = loss_fn(hooked_logits(hooked, x), y)
    ref.backward()
    loss = fast_loss(fast, x[:, 0], x[:, 1], y, cfg.eq_token, chunk_rows=chunk_rows)
    (3 * loss).backward()  # a non-unit upstream gradient must scale the precomputed one
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    want, got = _grads(hooked), _grads(fast)
    assert set(got) == set(want) == {n for n, _ in fast.named_parameters()}
    # b_K's true gradient is 0 (softmax is shift-invariant): both sides are rounding noise, hence an
    # absolute tolerance relative to the largest gradient.
    atol = 1e-5 * max(g.abs().max().item() for g in want.values())
    for name in want:
        torch.testing.assert_close(got[name] / 3, want[name], rtol=1e-4, atol=atol, msg=name)


def test_same_parameters_after_adamw_steps():
    # Biases frozen as in training. (Unfrozen, b_K has an exactly-zero gradient, softmax being
    # shift-invariant, and AdamW turns the two paths' different rounding noise into +-lr steps.)
    cfg = tiny_config()
    data = make_dataset(cfg)
    x, y = data.inputs[data.train_idx], data.labels[data.train_idx]
    models = [build_model(cfg), build_model(cfg)]
    for step in range(5):
        losses = (lambda m: loss_fn(hooked_logits(m, x), y), lambda m: fast_loss(m, x[:, 0], x[:, 1], y, cfg.eq_token, chunk_rows=16))
        for model, loss in zip(models, losses):
            opt = model._opt = getattr(model, "_opt", None) or make_optimizer(model, cfg)
            loss(model).backward()
            opt.step()
            opt.zero_grad()
    hooked, fast = ({n: p for n, p in m.named_parameters() if p.requires_grad} for m in models)
    moved = 0
    for name in hooked:
        torch.testing.assert_close(fast[name], hooked[name], rtol=1e-4, atol=1e-5, msg=name)
        moved += not torch.equal(hooked[name], dict(build_model(cfg).named_parameters())[name])
    assert moved == len(hooked)  # every parameter was actually trained


def test_model_matches_canonical_config():
    model = build_model(TrainConfig())
    c = model.cfg
    assert (c.n_layers, c.n_heads, c.d_model, c.d_head, c.d_mlp, c.d_vocab, c.d_vocab_out, c.n_ctx) == (1, 4, 128, 32, 512, 114, 113, 3)
    assert c.act_fn == "relu" and c.normalization_type is None and fast_applies(model)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters() if "b_" in n} and frozen


def test_build_model_is_seeded_and_has_no_rng_side_effect():
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    m1 = build_model(tiny_config(seed=5))
    assert torch.equal(torch.rand(1), before)
    m2 = build_model(tiny_config(seed=5))
    m3 = build_model(tiny_config(seed=6))
    assert torch.equal(m1.W_E, m2.W_E) and not torch.equal(m1.W_E, m3.W_E)


def test_loss_is_float64_cross_entropy():
    logits = torch.randn(7, 5)
    y = torch.randint(0, 5, (7,))
    loss = loss_fn(logits, y)
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits.double(), y))


# ---- other shapes, hooks, double backward -------------------------------------------------------------
def _model_of_shape(p, d_model, n_heads, d_mlp, d_head=None):
    """A model with random (trainable) biases; ``d_head`` other than ``d_model / n_heads`` if given."""
    cfg = TrainConfig(p=p, d_model=d_model, n_heads=n_heads, d_mlp=d_mlp)
    hcfg = hooked_config(cfg)
    if d_head is not None:
        hcfg = HookedTransformerConfig(**{**{f: getattr(hcfg, f) for f in ("n_layers", "n_heads", "d_model", "d_mlp", "act_fn",
                                                                           "normalization_type", "d_vocab", "d_vocab_out",
                                                                           "n_ctx", "seed")}, "d_head": d_head})
    with torch.random.fork_rng(devices=[]):
        model = HookedTransformer(hcfg)
    _randomise_biases(model)
    return cfg, model


SHAPES = {  # (p, d_model, n_heads, d_mlp, d_head)
    "canonical": (113, 128, 4, 512, None),
    "1 head": (23, 32, 1, 64, None),
    "2 heads": (23, 32, 2, 64, None),
    "8 heads": (23, 64, 8, 64, None),
    "d_head 12": (23, 32, 4, 64, 12),
}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_fast_path_equals_hooked_forward_at_other_shapes(shape):
    cfg, model = _model_of_shape(*shape)
    assert fast_applies(model) and (shape[4] is None or model.cfg.d_head == shape[4] != model.cfg.d_model // model.cfg.n_heads)
    data = make_dataset(cfg)
    with torch.no_grad():
        torch.testing.assert_close(fast_logits(model, data.a, data.b, cfg.eq_token), hooked_logits(model, data.inputs),
                                   rtol=1e-5, atol=1e-5)
    x, y = data.inputs[data.train_idx], data.labels[data.train_idx]
    for p in model.parameters():
        p.requires_grad_(True)
    ref_loss = loss_fn(hooked_logits(model, x), y)
    want = torch.autograd.grad(ref_loss, list(model.parameters()))
    loss = fast_loss(model, x[:, 0], x[:, 1], y, cfg.eq_token, chunk_rows=1000)
    got = torch.autograd.grad(loss, list(model.parameters()))
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-6)
    atol = 1e-5 * max(g.abs().max().item() for g in want)
    for (name, _), g, w in zip(model.named_parameters(), got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=atol, msg=name)


def test_a_hook_makes_the_fast_path_use_the_hooked_forward():
    cfg = tiny_config()
    model, data = build_model(cfg), make_dataset(cfg)
    x, y = data.inputs[data.train_idx], data.labels[data.train_idx]
    with torch.no_grad():
        plain = fast_logits(model, data.a, data.b, cfg.eq_token)
    assert not has_hooks(model)

    def ablate(act, hook):  # zero-ablate half of the MLP neurons
        act[..., : cfg.d_mlp // 2] = 0.0
        return act

    with model.hooks(fwd_hooks=[("blocks.0.mlp.hook_post", ablate)]):
        assert has_hooks(model)
        with torch.no_grad():
            ablated = fast_logits(model, data.a, data.b, cfg.eq_token)
            reference = hooked_logits(model, data.inputs)
        assert torch.equal(ablated, reference) and not torch.allclose(ablated, plain, atol=1e-3)
        loss = fast_loss(model, x[:, 0], x[:, 1], y, cfg.eq_token)
        torch.testing.assert_close(loss, loss_fn(reference[data.train_idx], y))
    assert not has_hooks(model)  # the context manager removed it: the fast path again
    with torch.no_grad():
        assert torch.equal(fast_logits(model, data.a, data.b, cfg.eq_token), plain)


def test_fast_loss_refuses_a_second_derivative():
    cfg = tiny_config()
    model, data = build_model(cfg), make_dataset(cfg)
    x, y = data.inputs[data.train_idx], data.labels[data.train_idx]
    params = [p for p in model.parameters() if p.requires_grad]
    loss = fast_loss(model, x[:, 0], x[:, 1], y, cfg.eq_token)
    with pytest.raises(RuntimeError, match="differentiable once only"):  # the first half of a Hessian-vector product
        torch.autograd.grad(loss, params, create_graph=True)
    # through the hooked forward the same product works (and a plain gradient through fast_loss still does)
    grads = torch.autograd.grad(loss_fn(hooked_logits(model, x), y), params, create_graph=True)
    hvp = torch.autograd.grad(sum((g * g.detach()).sum() for g in grads), params)
    assert all(torch.isfinite(h).all() for h in hvp)
    assert all(g is not None for g in torch.autograd.grad(fast_loss(model, x[:, 0], x[:, 1], y, cfg.eq_token), params))
