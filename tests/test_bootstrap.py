"""Paired bootstrap: cases with known answers, determinism, input checks."""

from __future__ import annotations

import numpy as np
import pytest

from switchkd.evaluation.bootstrap import paired_bootstrap, paired_bootstrap_seeds


def _scores(n=500, p=0.6, seed=0):
    return (np.random.default_rng(seed).random(n) < p).astype(float)


def test_identical_models_have_zero_difference():
    a = _scores()
    out = paired_bootstrap(a, a.copy(), num_samples=2000)
    assert out == {"mean_diff": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0}


def test_constant_shift_is_recovered_exactly():
    a = _scores()
    out = paired_bootstrap(a, a + 1, num_samples=2000)
    assert out["mean_diff"] == 1.0 and out["low"] == 1.0 and out["high"] == 1.0
    assert out["p_value"] == pytest.approx(2 / 2001)


def test_noisy_equal_models_ci_contains_zero():
    a, b = _scores(seed=1), _scores(seed=2)  # same accuracy, independent errors
    out = paired_bootstrap(a, b, num_samples=2000)
    assert out["low"] < 0 < out["high"] and out["p_value"] > 0.05


def test_clear_difference_excludes_zero():
    a, b = _scores(p=0.3, seed=1), _scores(p=0.8, seed=2)
    out = paired_bootstrap(a, b, num_samples=2000)
    assert 0 < out["low"] < out["mean_diff"] < out["high"]
    assert out["mean_diff"] == pytest.approx(b.mean() - a.mean())
    assert out["p_value"] < 0.01
    flipped = paired_bootstrap(b, a, num_samples=2000)
    assert flipped["high"] < 0


def test_seed_determinism():
    a, b = _scores(seed=3), _scores(seed=4)
    first = paired_bootstrap(a, b, num_samples=3000, seed=7)
    assert paired_bootstrap(a, b, num_samples=3000, seed=7) == first
    assert paired_bootstrap(a, b, num_samples=3000, seed=8) != first


def test_ci_width_shrinks_with_level():
    a, b = _scores(seed=5), _scores(p=0.65, seed=6)
    wide = paired_bootstrap(a, b, num_samples=2000, ci=0.99)
    narrow = paired_bootstrap(a, b, num_samples=2000, ci=0.5)
    assert wide["low"] < narrow["low"] <= narrow["high"] < wide["high"]


def test_large_inputs_run_in_chunks():
    a, b = _scores(n=10_000, seed=1), _scores(n=10_000, p=0.62, seed=2)
    out = paired_bootstrap(a, b, num_samples=1000)
    assert out["low"] < out["mean_diff"] < out["high"]


def test_seeds_variant_known_answers():
    a = np.stack([_scores(seed=s) for s in range(3)])  # (3 seeds, 500 items)
    same = paired_bootstrap_seeds(a, a.copy(), num_samples=1000)
    assert same == {"mean_diff": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0}
    shifted = paired_bootstrap_seeds(a, a + 1, num_samples=1000)
    assert shifted["mean_diff"] == 1.0 and shifted["low"] == 1.0 and shifted["high"] == 1.0
    b = np.stack([_scores(p=0.9, seed=10 + s) for s in range(3)])
    clear = paired_bootstrap_seeds(a, b, num_samples=1000)
    assert 0 < clear["low"] < clear["high"] and clear["p_value"] < 0.01
    assert paired_bootstrap_seeds(a, b, num_samples=1000) == clear


def test_seeds_variant_is_wider_when_seeds_disagree():
    """Seed-level noise (one seed much better) widens the interval beyond the item-level one."""
    a = np.stack([_scores(seed=s) for s in range(4)])
    b = a.copy()
    b[0] = np.minimum(a[0] + (np.random.default_rng(9).random(500) < 0.8), 1.0)  # seed 0 gains
    hier = paired_bootstrap_seeds(a, b, num_samples=2000)
    flat = paired_bootstrap(a.ravel(), b.ravel(), num_samples=2000)
    assert hier["mean_diff"] == pytest.approx(flat["mean_diff"])
    assert hier["high"] - hier["low"] > flat["high"] - flat["low"]


@pytest.mark.parametrize("a, b, kwargs, message", [
    (np.zeros(3), np.zeros(4), {}, "same shape"),
    (np.zeros((2, 3)), np.zeros((2, 3)), {}, "1-D"),
    (np.zeros(0), np.zeros(0), {}, "no scores"),
    (np.array([0.0, np.nan]), np.zeros(2), {}, "finite"),
    (np.zeros(3), np.zeros(3), {"ci": 1.0}, "ci"),
    (np.zeros(3), np.zeros(3), {"num_samples": 0}, "num_samples"),
])
def test_bad_inputs_raise(a, b, kwargs, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(a, b, **kwargs)


def test_seeds_variant_needs_2d():
    with pytest.raises(ValueError, match="2-D"):
        paired_bootstrap_seeds(np.zeros(3), np.zeros(3))
