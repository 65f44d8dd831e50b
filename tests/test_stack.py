"""Stacked training: a member computes what the same config computes alone."""

import pytest
import torch

from interp import load_run
from interp.families import build_model
from interp.model import hooked_logits
from interp.losses import loss_fn
from interp.runs import ckpt_path, state_path
from interp.kernel import Layout, stacked_logits
from interp.stack import Member, Pack, adamw_step, pack_key, stackable, train_pack
from interp.tasks import make_dataset
from interp.train import train
from tests.conftest import tiny_config

# members that differ in everything a pack may vary: seeds, training-set size, labels, optimiser
MEMBERS = [
    tiny_config(train_size=60, seed=1, steps=50),
    tiny_config(train_size=100, seed=2, data_seed=5, wd=0.5, beta2=0.95, steps=50),
    tiny_config(frac=0.3, seed=3, lr=5e-3, warmup=5, label_noise=0.3, steps=50, init_scale=1.5),
]


def test_stacked_logits_equal_hooked_forward():
    cfgs = [tiny_config(seed=s, freeze_biases=False) for s in (1, 2)]
    models = [build_model(c) for c in cfgs]
    with torch.no_grad():  # biases off zero, so that every term of the forward is exercised
        for m in models:
            for n, p in m.named_parameters():
                if "b_" in n:
                    p.normal_()
    data = make_dataset(cfgs[0])
    pack = Pack([Member(c, None) for c in cfgs])
    for i, m in enumerate(models):
        for n, p in m.named_parameters():
            pack.P[n].data[i] = p.detach()
    a = data.inputs[:, 0].expand(2, -1)
    b = data.inputs[:, 1].expand(2, -1)
    got = stacked_logits(pack.params(), a, b, cfgs[0].eq_token, pack.attn_scale)
    for i, m in enumerate(models):
        torch.testing.assert_close(got[i], hooked_logits(m, data.inputs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk_rows, coef", [(2048, (1.0, 1.0, 1.0)), (16, (0.5, 2.0, -1.0))])
def test_stack_loss_and_gradients_equal_each_lone_model(chunk_rows, coef):
    """Also in several chunks per member, and for a weighted sum of the members' losses (the fused
    loss scales each member's precomputed gradient by its own coefficient)."""
    pack = Pack([Member(c, None) for c in MEMBERS])
    pack.layout = Layout(pack.a, pack.b, [len(m.data.train_idx) for m in pack.members], MEMBERS[0].n_heads, MEMBERS[0].d_vocab, chunk_rows)
    assert chunk_rows == 2048 or all(len(ch) > 1 for ch in pack.layout.chunks)
    losses = pack.losses()
    (losses * torch.tensor(coef, dtype=torch.float64)).sum().backward()
    for i, cfg in enumerate(MEMBERS):
        model, data = build_model(cfg), make_dataset(cfg)
        loss = loss_fn(hooked_logits(model, data.inputs[data.train_idx]), data.train_labels)
        (loss * coef[i]).backward()
        assert losses[i].item() == pytest.approx(loss.item(), rel=1e-6)
        for name, p in model.named_parameters():
            if p.requires_grad:
                torch.testing.assert_close(pack.P[name].grad[i], p.grad, rtol=1e-4, atol=1e-6, msg=f"member {i}: {name}")
            else:  # frozen biases are not trainable in the stack either
                assert not pack.P[name].requires_grad


def test_stacked_loss_refuses_a_second_derivative():
    pack = Pack([Member(c, None) for c in MEMBERS[:2]])
    with pytest.raises(RuntimeError, match="differentiable once only"):
        torch.autograd.grad(pack.losses().sum(), [pack.P["embed.W_E"]], create_graph=True)


def test_members_after_50_steps_match_interp_train(tmp_path):
    members = train_pack([Member(c, tmp_path / f"s{i}") for i, c in enumerate(MEMBERS)])
    assert all(m.failed is None for m in members)
    for i, cfg in enumerate(MEMBERS):
        lone, stacked = load_run(train(cfg, tmp_path / f"l{i}", progress=False)), load_run(tmp_path / f"s{i}")
        assert stacked.steps == lone.steps and [r["step"] for r in stacked.metrics] == [r["step"] for r in lone.metrics]
        a, b = lone.load_model(), stacked.load_model()
        for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
            if pa.norm() > 0:
                assert ((pa - pb).norm() / pa.norm()).item() < 1e-4, (i, name)
        for ra, rb in zip(lone.metrics, stacked.metrics):  # the losses along the way, evaluated alike
            assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-4, abs=1e-6)
            assert rb["lr"] == ra["lr"]
        assert torch.equal(stacked.dataset.train_labels, lone.dataset.train_labels)


def test_adamw_step_equals_torch_adamw():
    torch.manual_seed(0)
    ref = [torch.randn(3, 4, requires_grad=True) for _ in range(2)]
    hp = [dict(lr=1e-2, weight_decay=1.0, betas=(0.9, 0.98)), dict(lr=3e-3, weight_decay=0.1, betas=(0.8, 0.9))]
    opts = [torch.optim.AdamW([p], **h) for p, h in zip(ref, hp)]
    stacked = torch.stack([p.detach() for p in ref]).clone()
    m, v = torch.zeros_like(stacked), torch.zeros_like(stacked)
    f64 = lambda xs: torch.tensor(xs, dtype=torch.float64)  # noqa: E731
    for step in range(1, 6):
        grads = torch.randn(2, 3, 4)
        for i, (p, o) in enumerate(zip(ref, opts)):
            p.grad = grads[i].clone()
            o.step()
        adamw_step([stacked], [grads], [m], [v], f64([step, step]), f64([1e-2, 3e-3]), f64([1.0, 0.1]), f64([0.9, 0.8]), f64([0.98, 0.9]))
        torch.testing.assert_close(stacked, torch.stack([p.detach() for p in ref]), rtol=1e-6, atol=1e-7)


def test_pack_resumes_from_lone_state_and_vice_versa(tmp_path):
    """Members write interp.train's resume state: a stack continues a lone run exactly where it stopped."""
    cfg = tiny_config(steps=40, seed=4)
    ref = train(cfg, tmp_path / "ref", progress=False)
    half = train(cfg.replace(steps=20), tmp_path / "half", progress=False)
    train_pack([Member(cfg, half)])  # continue steps 20..40 in a stack
    a, b = load_run(ref).load_model(), load_run(half).load_model()
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.allclose(pa, pb, rtol=1e-4, atol=1e-6), name
    train(cfg.replace(steps=60), half, resume=True, progress=False)  # and interp.train continues the stack's state
    assert load_run(half).steps[-1] == 60 and state_path(half).is_file()


def test_nan_member_fails_alone(tmp_path):
    good, bad = tiny_config(steps=30, seed=1), tiny_config(steps=30, seed=2, lr=1e30)
    members = train_pack([Member(good, tmp_path / "good"), Member(bad, tmp_path / "bad")])
    assert members[0].failed is None and load_run(tmp_path / "good").steps[-1] == 30
    assert "not finite" in members[1].failed
    assert not ckpt_path(tmp_path / "bad", 30).exists()  # nothing saved after the failure


def test_pack_keys_and_stackability():
    assert pack_key(tiny_config(seed=1, lr=1e-2, train_size=50)) == pack_key(tiny_config(seed=2, wd=0.1, label_noise=1.0))
    assert pack_key(tiny_config(d_mlp=32)) != pack_key(tiny_config(d_mlp=64))
    assert pack_key(tiny_config(), 0) != pack_key(tiny_config(), 10)
    assert stackable(tiny_config(init_scale=2.0)) and not stackable(tiny_config(grad_filter="ema"))
    assert not stackable(tiny_config(engine="hooked"))
    with pytest.raises(ValueError, match="does not fit the pack"):
        Pack([Member(tiny_config(), None), Member(tiny_config(d_mlp=32), None)])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_stack_on_cuda_matches_cpu(tmp_path):
    cpu = train_pack([Member(c, tmp_path / f"c{i}") for i, c in enumerate(MEMBERS)], "cpu")
    gpu = train_pack([Member(c, tmp_path / f"g{i}") for i, c in enumerate(MEMBERS)], "cuda")
    for i in range(len(MEMBERS)):
        a, b = load_run(tmp_path / f"c{i}").load_model(), load_run(tmp_path / f"g{i}").load_model()
        for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
            if pa.norm() > 0:
                assert ((pa - pb).norm() / pa.norm()).item() < 1e-3, (i, name)
    assert all(m.failed is None for m in cpu + gpu)
