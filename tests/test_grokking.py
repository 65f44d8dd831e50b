"""A real grokking run (the 'small' preset, ~30 s): memorise first, generalise much later."""

from interp import load_run


def first_step(metrics, key, threshold):
    return next((r["step"] for r in metrics if r[key] >= threshold), None)


def test_small_preset_groks_after_memorising(small_run):
    m = load_run(small_run).metrics
    memorised = first_step(m, "train_acc", 0.99)
    grokked = first_step(m, "test_acc", 0.95)
    assert memorised is not None and grokked is not None, "must both memorise and generalise"
    assert memorised < grokked
    # a plateau: when train accuracy reaches 99%, test accuracy is still near chance ...
    at_memorised = next(r for r in m if r["step"] == memorised)
    assert at_memorised["test_acc"] < 0.3
    # ... and test accuracy stays below 60% for a long stretch afterwards: delayed generalisation
    plateau = [r for r in m if memorised <= r["step"] < memorised + 1000]
    assert max(r["test_acc"] for r in plateau) < 0.6
    assert grokked >= 5 * memorised
    assert m[-1]["test_acc"] >= 0.99 and m[-1]["train_acc"] == 1.0
    # weight decay shrinks the weights once the general solution takes over
    peak = max(r["param_norm"] for r in m)
    assert m[-1]["param_norm"] < 0.9 * peak
