"""Known answers for ``analyses.phase``: where a synthetic loss curve falls, the previous-token and induction
scores of hand-built attention patterns, the carries of hand-written additions and a loss split by them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from analyses import phase

LOGIT_10 = math.log(9)  # a logistic covers 10 % .. 90 % of its rise between -ln 9 and +ln 9


def sigmoid_curve(steps, centre: float, width: float, top: float = 2.0, bottom: float = 1e-3) -> np.ndarray:
    """A phase-change loss curve: a plateau at ``top`` falling to ``bottom``, logistic in log space around ``centre``."""
    s = np.asarray(steps, dtype=float)
    return np.exp(math.log(top) + (math.log(bottom) - math.log(top)) / (1 + np.exp(-(s - centre) / width)))


EVEN = np.arange(0, 10_001, 100)


# ---- fall_step / fall_window ---------------------------------------------------------------------------
def test_fall_step_finds_the_centre_of_a_clean_fall():
    loss = sigmoid_curve(EVEN, 4030, 300)
    at = phase.fall_step(EVEN, loss, min_drop=10.0)
    assert at in EVEN and abs(at - 4030) <= 100
    assert phase.fall_step(EVEN.tolist(), loss.tolist()) == at  # plain lists work the same


@pytest.mark.parametrize("seed", range(5))
def test_fall_step_finds_the_centre_through_multiplicative_noise(seed):
    noise = np.exp(0.1 * np.random.default_rng(seed).standard_normal(len(EVEN)))
    at = phase.fall_step(EVEN, sigmoid_curve(EVEN, 4030, 150) * noise, min_drop=10.0)
    assert abs(at - 4030) <= 100


def test_one_noisy_evaluation_does_not_beat_the_fall():
    loss = sigmoid_curve(EVEN, 4030, 300)
    loss[15] /= 5  # one evaluation (step 1500) five times too low, long before the fall
    assert abs(phase.fall_step(EVEN, loss) - 4030) <= 100
    assert phase.fall_step(EVEN, loss, smooth=1) == 1400  # unsmoothed, the dip's centred difference is steeper


def test_fall_step_uses_the_slope_per_step_on_uneven_steps():
    # coarse (400) around a dense stretch (50) across the fall, with a tight cluster at 4390..4410: a slope per
    # evaluation index would pick the coarse stretch (4800), and smoothing log loss without smoothing the steps
    # divides a difference spanning 800 steps by 20 at the cluster (4400)
    steps = np.unique(np.concatenate([np.arange(0, 4401, 400), [4390, 4410], np.arange(4800, 5601, 50),
                                      np.arange(6000, 10_001, 400)]))
    at = phase.fall_step(steps, sigmoid_curve(steps, 5010, 300))
    assert at in steps and abs(at - 5010) <= 50
    assert abs(phase.fall_step(steps, sigmoid_curve(steps, 5010, 300), smooth=1) - 5010) <= 50


def test_no_fall_is_none():
    flat = 2.0 * np.exp(0.1 * np.random.default_rng(0).standard_normal(len(EVEN)))
    assert phase.fall_step(EVEN, flat) is None and phase.fall_step(EVEN, flat, min_drop=10.0) is None
    assert phase.fall_window(EVEN, flat) is None
    assert phase.fall_step([0, 100], [2.0, 1e-3]) is None  # too few evaluations for a centred difference


def test_a_fall_smaller_than_min_drop_is_none():
    small = sigmoid_curve(EVEN, 4030, 300, top=3.0, bottom=1.0)  # falls by a factor 3
    assert phase.fall_step(EVEN, small, min_drop=10.0) is None
    assert phase.fall_window(EVEN, small, min_drop=10.0) is None
    assert abs(phase.fall_step(EVEN, small, min_drop=2.0) - 4030) <= 100  # the same curve, a lower bar


def test_fall_window_brackets_ten_to_ninety_percent_of_the_fall():
    centre, width = 4030, 300
    lo, hi = phase.fall_window(EVEN, sigmoid_curve(EVEN, centre, width), min_drop=10.0)
    # the first evaluations at or after the logistic's 10 % and 90 % points (3370.8 and 4689.2)
    assert (lo, hi) == (3400, 4700)
    assert centre - width * LOGIT_10 <= lo < centre - width * LOGIT_10 + 100
    assert centre + width * LOGIT_10 <= hi < centre + width * LOGIT_10 + 100
    narrow = phase.fall_window(EVEN, sigmoid_curve(EVEN, centre, 100), min_drop=10.0)
    assert narrow[1] - narrow[0] < hi - lo  # a sharper change has a shorter window


def test_positions_falls_orders_positions_by_when_they_fall():
    by_pos = np.stack([sigmoid_curve(EVEN, 6000, 200), sigmoid_curve(EVEN, 3000, 200), np.full(len(EVEN), 2.0)], axis=1)
    late, early, never = phase.positions_falls(EVEN, by_pos, min_drop=10.0)
    assert abs(early - 3000) <= 100 and abs(late - 6000) <= 100 and early < late and never is None
    assert phase.positions_falls(EVEN.tolist(), by_pos.tolist(), min_drop=10.0) == [late, early, never]


# ---- attention heads -----------------------------------------------------------------------------------
def prev_token_head(n: int) -> torch.Tensor:
    """``[n, n]``: each query attends wholly to the position before it (position 0 to itself)."""
    p = torch.zeros(n, n, dtype=torch.float64)
    p[0, 0] = 1
    p[torch.arange(1, n), torch.arange(n - 1)] = 1
    return p


def uniform_head(n: int) -> torch.Tensor:
    """``[n, n]``: each query q attends 1 / (q + 1) to every key k <= q."""
    return torch.ones(n, n, dtype=torch.float64).tril() / torch.arange(1, n + 1, dtype=torch.float64)[:, None]


def heads(*patterns: torch.Tensor, batch: int = 2) -> torch.Tensor:
    """``[batch, n_heads, n, n]``: the same heads for every example."""
    return torch.stack(patterns)[None].expand(batch, -1, -1, -1).clone()


def test_prev_token_score_of_known_heads():
    n = 10
    self_head = torch.eye(n, dtype=torch.float64)
    scores = phase.prev_token_score(heads(prev_token_head(n), uniform_head(n), self_head))
    assert scores.shape == (3,)
    uniform = sum(1 / (q + 1) for q in range(1, n)) / (n - 1)  # pattern[q, q - 1] = 1 / (q + 1), q = 1 .. n - 1
    assert torch.allclose(scores, torch.tensor([1.0, uniform, 0.0], dtype=torch.float64))


def repeated_tokens(batch: int = 3, half: int = 8) -> torch.Tensor:
    """``[batch, 2 * half]``: ``half`` distinct tokens, then the same ``half`` again."""
    g = torch.Generator().manual_seed(0)
    first = torch.stack([torch.randperm(50, generator=g)[:half] for _ in range(batch)])
    return torch.cat([first, first], dim=1)


def test_induction_score_of_known_heads_on_a_repeated_sequence():
    half = 8
    n, tokens = 2 * half, repeated_tokens(half=half)
    induction = torch.zeros(n, n, dtype=torch.float64)
    induction[:half, 0] = 1  # no earlier occurrence in the first half: anywhere (here position 0)
    q = torch.arange(half, n)
    induction[q, q - half + 1] = 1  # the token after the earlier copy of the current token
    scores = phase.induction_score(heads(induction, prev_token_head(n), uniform_head(n), batch=3), tokens)
    assert scores.shape == (3,)
    # the uniform head gives 1 / (q + 1) to the one matching key of each query q in the second half
    uniform = sum(1 / (q + 1) for q in range(half, n)) / half
    assert torch.allclose(scores, torch.tensor([1.0, 0.0, uniform], dtype=torch.float64))
    # the first half has no earlier occurrences: were its queries counted, the induction head would score 1/2
    assert phase.prev_token_score(heads(induction, batch=3))[0] < 0.5


def test_induction_score_keys_stop_at_the_query_and_never_wrap_around():
    tokens = torch.tensor([[1, 2, 1, 4]])
    p = torch.zeros(1, 1, 4, 4, dtype=torch.float64)
    p[0, 0, 0, 0] = p[0, 0, 1, 1] = 1
    p[0, 0, 2, 1], p[0, 0, 2, 2] = 0.5, 0.5  # query 2 (token 1): key 1 follows the earlier 1
    p[0, 0, 3, 0] = 1  # query 3 (token 4) has no earlier 4; key 0 has no previous token (not tokens[-1] = 4)
    assert phase.induction_score(p, tokens).item() == pytest.approx(0.5)
    # a token repeated at once: the query itself is the key after the earlier occurrence (k = q, k - 1 < q)
    p2 = torch.tensor([[[[1.0, 0.0], [0.25, 0.75]]]], dtype=torch.float64)
    assert phase.induction_score(p2, torch.tensor([[5, 5]])).item() == pytest.approx(0.75)
    assert torch.isnan(phase.induction_score(p2, torch.tensor([[5, 6]]))).all()  # no query has an earlier occurrence


# ---- carries -------------------------------------------------------------------------------------------
def digits(*numbers: int, n: int = 5) -> torch.Tensor:
    return torch.tensor([[int(c) for c in f"{x:0{n}d}"] for x in numbers])


def test_carries_of_hand_examples():
    a = digits(99999, 12345, 5, 50000, 190)
    b = digits(1, 54321, 5, 50000, 10)
    T, F = True, False
    expected = torch.tensor([
        [T, T, T, T, T, F],  # 99999 + 00001 = 100000: a carry into every digit but the units
        [F, F, F, F, F, F],  # 12345 + 54321 = 066666: none
        [F, F, F, F, T, F],  # 00005 + 00005 = 000010: into the tens only
        [T, F, F, F, F, F],  # 50000 + 50000 = 100000: only out of the top digit (the leading answer digit)
        [F, F, F, T, F, F],  # 00190 + 00010 = 000200: into the hundreds, then 1 + 0 + 1 = 2 carries no further
    ])
    out = phase.carries(a, b)
    assert out.dtype == torch.bool and torch.equal(out, expected)


@pytest.mark.parametrize("n", [3, 5])
def test_carries_agree_with_integer_arithmetic(n):
    g = torch.Generator().manual_seed(n)
    a, b = torch.randint(10, (200, n), generator=g), torch.randint(10, (200, n), generator=g)
    num = lambda d: (d * 10 ** torch.arange(n - 1, -1, -1)).sum(1)  # noqa: E731
    out = phase.carries(a, b)
    assert out.shape == (200, n + 1)
    for j in range(n + 1):  # answer digit j (most significant first) sits at 10 ** (n - j)
        low = 10 ** (n - j)
        assert torch.equal(out[:, j], num(a) % low + num(b) % low >= low)
    assert torch.equal(out[:, 0], num(a) + num(b) >= 10**n) and not out[:, -1].any()


def test_loss_by_carry_splits_each_position():
    loss = torch.tensor([[1.0, 2.0, 7.0], [3.0, 4.0, 8.0], [5.0, 6.0, 9.0]])
    carry = torch.tensor([[True, False, False], [True, True, False], [False, False, False]])
    with_c, without_c = phase.loss_by_carry(loss, carry)
    assert with_c.shape == without_c.shape == (3,)
    assert torch.allclose(with_c[:2], torch.tensor([2.0, 4.0])) and torch.isnan(with_c[2])  # no carry at all there
    assert torch.allclose(without_c, torch.tensor([5.0, 4.0, 8.0]))


def test_spikes_of_a_small_loss_after_the_fall_do_not_win():
    """The repeated-subsequence preset's own curve: a phase change from ~4 to ~1e-3 near step 700, then, long after,
    spikes of the small loss (3e-4 jumping to 4e-2 and falling back within 150 steps, as its test loss did at step
    6050), whose falls are steeper in log than the phase change; the phase change is still the one found."""
    steps = np.arange(0, 10_001, 50)
    loss = sigmoid_curve(steps, 700, 200, top=4.2, bottom=3e-4)  # as slow as that fall: ~0.01 per step in log loss at most
    for at in (3000, 6050, 8000):
        i = int(np.searchsorted(steps, at))
        loss[i : i + 4] = [4e-2, 1.8e-2, 1.5e-3, 1e-3]
    assert abs(phase.fall_step(steps, loss) - 700) <= 100
