"""The sequence tasks' examples: 5-digit addition, repeated subsequences and the maximum of a sequence.

Each ``sample_*`` draws ``n`` fresh examples from a ``torch.Generator`` and returns ``(tokens, labels)``:
``tokens`` ``[n, n_ctx]`` are the whole TransformerLens token sequence (answers included: the model is
trained by next-token prediction with teacher forcing), ``labels`` the answer tokens, one per answer
position (``ANSWER_POSITIONS``: the positions whose output predicts the next answer token).
``interp.tasks`` registers them as tasks; ``interp.tasks.make_dataset`` draws a finite training set and a
held-out test set from them, and ``interp.tasks.infinite_batch`` a fresh batch at every step.

    add5            1|3|4|5|2|+|5|8|3|2|1|=|0|7|1|7|7|3   a + b for two 5-digit numbers, the six answer
                    digits most significant first (the first is the final carry); tokens 0-9, '+' 10, '=' 11.
                    The outputs at positions 11..16 ('=' and the first five answer digits) predict the answer.
    repeat_subseq   24 distinct random tokens out of 64, then the 8 tokens starting at a random position
                    0..8 among them again (the copy ends at least 8 tokens before the repeat starts):
                    each repeated token after the first is predictable only by finding the earlier copy
                    of the current token and reading what followed it (an induction head). The outputs at positions 24..30 predict tokens 25..31.
    max_elem        START x1 .. x10 END -> max(x), values 0..15, START 16, END 17; the output at END answers.

These layouts follow Nanda et al.'s non-modular grokking tasks (the progress-measures paper's notebook and
the grokking slides): the 5-digit layout is theirs; the repeated-subsequence and max layouts are this
suite's (the notebook's own are not published with the paper), chosen so that the answer positions are
fixed and that no positional shortcut solves the repeat.
"""

from __future__ import annotations

import torch
from torch import Tensor

# ---- 5-digit addition ------------------------------------------------------------------------------
ADD_DIGITS = 5
PLUS, EQUALS = 10, 11
ADD_CTX = 3 * ADD_DIGITS + 3  # a, '+', b, '=', and n + 1 answer digits
ADD_ANSWERS = tuple(range(2 * ADD_DIGITS + 1, ADD_CTX - 1))  # '=' .. the second-to-last answer digit


def add_answer(a: Tensor, b: Tensor) -> Tensor:
    """``[n, 6]``: the digits of ``a + b`` (``a``, ``b``: ``[n, 5]`` digits, most significant first),
    most significant first, the first being the final carry."""
    out = torch.zeros(a.shape[0], ADD_DIGITS + 1, dtype=torch.long)
    carry = torch.zeros(a.shape[0], dtype=torch.long)
    for i in range(ADD_DIGITS - 1, -1, -1):
        s = a[:, i] + b[:, i] + carry
        out[:, i + 1], carry = s % 10, s // 10
    out[:, 0] = carry
    return out


def sample_add5(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` random 5-digit additions (every digit uniform in 0..9): tokens ``[n, 18]``, labels ``[n, 6]``."""
    a = torch.randint(10, (n, ADD_DIGITS), generator=gen)
    b = torch.randint(10, (n, ADD_DIGITS), generator=gen)
    ans = add_answer(a, b)
    col = lambda t: torch.full((n, 1), t, dtype=torch.long)  # noqa: E731
    return torch.cat([a, col(PLUS), b, col(EQUALS), ans], dim=1), ans


def add5_operands(tokens: Tensor) -> tuple[Tensor, Tensor]:
    """The digits ``(a, b)``, ``[n, 5]`` each, of 5-digit addition token sequences."""
    return tokens[:, :ADD_DIGITS], tokens[:, ADD_DIGITS + 1 : 2 * ADD_DIGITS + 1]


# ---- repeated subsequences ---------------------------------------------------------------------------
REPEAT_VOCAB, REPEAT_PREFIX, REPEAT_LEN = 64, 24, 8
REPEAT_CTX = REPEAT_PREFIX + REPEAT_LEN
REPEAT_ANSWERS = tuple(range(REPEAT_PREFIX, REPEAT_CTX - 1))


def sample_repeat_subseq(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` sequences of 24 distinct tokens (out of 64) followed by the 8 tokens from a random start
    0..8 among them: tokens ``[n, 32]``, labels ``[n, 7]`` (the repeat's tokens after its first)."""
    prefix = torch.rand(n, REPEAT_VOCAB, generator=gen).argsort(dim=1)[:, :REPEAT_PREFIX]
    start = torch.randint(REPEAT_PREFIX - 2 * REPEAT_LEN + 1, (n, 1), generator=gen)
    repeat = prefix.gather(1, start + torch.arange(REPEAT_LEN))
    tokens = torch.cat([prefix, repeat], dim=1)
    return tokens, tokens[:, REPEAT_PREFIX + 1 :]


def repeat_source(tokens: Tensor) -> Tensor:
    """``[n]``: the position at which the repeated subsequence first occurs."""
    first = tokens[:, REPEAT_PREFIX : REPEAT_PREFIX + 1]
    return (tokens[:, :REPEAT_PREFIX] == first).long().argmax(dim=1)


# ---- maximum of a sequence ------------------------------------------------------------------------------
MAX_VALUES, MAX_LEN = 16, 10
MAX_START, MAX_END = MAX_VALUES, MAX_VALUES + 1
MAX_CTX = MAX_LEN + 2


def sample_max_elem(n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` sequences START x1..x10 END (values uniform in 0..15): tokens ``[n, 12]``, labels ``[n]`` (the maximum)."""
    x = torch.randint(MAX_VALUES, (n, MAX_LEN), generator=gen)
    col = lambda t: torch.full((n, 1), t, dtype=torch.long)  # noqa: E731
    return torch.cat([col(MAX_START), x, col(MAX_END)], dim=1), x.amax(dim=1)
