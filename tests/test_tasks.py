import pytest
import torch

from interp.config import ConfigError, TrainConfig
from interp.tasks import make_dataset
from tests.conftest import tiny_config


def test_default_split_is_the_transformerlens_demo_split():
    data = make_dataset(TrainConfig())
    torch.manual_seed(598)
    perm = torch.randperm(113 * 113)
    assert (len(data.train_idx), len(data.test_idx)) == (3830, 8939)
    assert torch.equal(data.train_idx, perm[:3830]) and torch.equal(data.test_idx, perm[3830:])
    a, b = data.a, data.b
    assert torch.equal(data.inputs[:, 2], torch.full_like(a, 113))
    assert torch.equal(a * 113 + b, torch.arange(113 * 113))  # row-major enumeration


@pytest.mark.parametrize(
    "task, a, b, c",
    [("mod_add", 5, 9, 1), ("mod_sub", 2, 5, 10), ("mod_mul", 5, 9, 6), ("mod_div", 6, 3, 2), ("mod_div", 1, 2, 7),
     ("x2_y2", 3, 4, 12), ("x2_xy_y2", 3, 4, 11), ("x3_xy", 2, 5, 5)],
)
def test_labels(task, a, b, c):
    data = make_dataset(tiny_config(task=task, p=13))
    row = ((data.a == a) & (data.b == b)).nonzero().item()
    assert data.labels[row].item() == c


def test_mod_div_leaves_out_zero_divisor():
    data = make_dataset(tiny_config(task="mod_div", p=13))
    assert len(data.labels) == 13 * 12 and (data.b != 0).all()
    assert torch.equal((data.labels * data.b) % 13, data.a)


def test_mod_mul_nz_is_grokfasts_data_and_mod_mul_keeps_its_pairs():
    # Grokfast (ironjr/grokfast main.py): x * y mod 97 for 0 <= x < 97 and 0 < y < 97, half for training: 9312 pairs, 4656.
    cfg = TrainConfig(task="mod_mul_nz", p=97, frac=0.5)
    data = make_dataset(cfg)
    assert (cfg.n_examples, cfg.n_train, len(data.train_idx)) == (97 * 96, 4656, 4656)
    assert (data.b != 0).all() and set(data.a.tolist()) == set(range(97))
    assert torch.equal(data.labels, (data.a * data.b) % 97)
    # mod_mul still has every pair, b = 0 included, in the same order and split as before
    mul = make_dataset(tiny_config(task="mod_mul", p=13))
    assert len(mul.labels) == 13 * 13 and torch.equal(mul.a * 13 + mul.b, torch.arange(169))
    assert torch.equal(mul.train_idx, make_dataset(tiny_config(task="mod_add", p=13)).train_idx)
    # and mod_mul_nz is mod_mul with the b = 0 rows taken out
    nz = make_dataset(tiny_config(task="mod_mul_nz", p=13))
    assert torch.equal(nz.inputs, mul.inputs[mul.b != 0]) and torch.equal(nz.labels, mul.labels[mul.b != 0])


@pytest.mark.parametrize(
    "changes, field",
    [({"p": 1}, "--p"), ({"task": "mod_div", "p": 12}, "--p"), ({"frac": 1.0}, "--frac"), ({"frac": 0.0}, "--frac"),
     ({"task": "nope"}, "--task"), ({"steps": -1}, "--steps"), ({"n_heads": 3}, "--n-heads"), ({"l2": -0.1}, "--l2"), ({"l2": float("inf")}, "--l2")],
)
def test_config_validation_names_the_field(changes, field):
    with pytest.raises(ConfigError, match=f"^{field} "):
        tiny_config(**changes)


def test_derived_sizes_follow_p():
    cfg = TrainConfig(p=31)
    assert (cfg.d_vocab, cfg.d_vocab_out, cfg.eq_token, cfg.d_head) == (32, 31, 31, 32)
