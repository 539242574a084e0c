"""Paired bootstrap confidence intervals for the difference between two models.

Both functions resample the per-item score differences ``d = b - a`` of two models scored on
the same items (BENCHMARK_DESIGN.md section 5.1: "report a paired bootstrap CI between CE and
KD students on the same test items"). The interval is the percentile interval of the resampled
mean difference. The p-value is two-sided: twice the smaller share of resampled means on either
side of 0 (add-one smoothed, capped at 1), i.e. how often the sign of the difference flips under
resampling.

Resampling is vectorised with numpy and done in chunks, so memory stays bounded (about 32 MB)
for any number of items and samples. Results depend only on the inputs, ``num_samples`` and
``seed``.
"""

from __future__ import annotations

import numpy as np

_CHUNK_ELEMENTS = 1 << 22  # resampled indices held at once


def paired_bootstrap(a_scores, b_scores, *, num_samples: int = 10_000, seed: int = 0,
                     ci: float = 0.95) -> dict[str, float]:
    """Bootstrap over items of the mean of ``b - a``.

    Shapes:
        a_scores, b_scores: (I,) per-item scores of models a and b on the same I items.

    Returns:
        ``{"mean_diff": mean(b - a), "low": ..., "high": ..., "p_value": ...}`` with
        ``[low, high]`` the ``ci`` percentile interval.

    Raises:
        ValueError: shapes differ or are not 1-D, no items, non-finite scores, or bad options.
    """
    diff = _differences(a_scores, b_scores, ndim=1)  # (I,)
    _check_options(num_samples, ci)
    rng = np.random.default_rng(seed)
    num_items = diff.shape[0]
    chunk = max(1, _CHUNK_ELEMENTS // num_items)
    means = []
    for start in range(0, num_samples, chunk):
        size = min(chunk, num_samples - start)
        index = rng.integers(0, num_items, size=(size, num_items))  # (k, I)
        means.append(diff[index].mean(axis=1))  # (k,)
    return _summary(float(diff.mean()), np.concatenate(means), ci)


def paired_bootstrap_seeds(a_scores, b_scores, *, num_samples: int = 10_000, seed: int = 0,
                           ci: float = 0.95) -> dict[str, float]:
    """Two-level bootstrap over training seeds and items of the mean of ``b - a``.

    Each sample draws S seeds and I items with replacement, independently (the items are the
    same for every seed), and takes the mean difference over the drawn (seed, item) grid, so the
    interval covers both seed-to-seed training noise and the finite test set. Row s of ``a`` and
    ``b`` are paired (e.g. both trained with seed s).

    Shapes:
        a_scores, b_scores: (S, I) per-item scores, S seeds by I items.

    Returns:
        Same keys as ``paired_bootstrap``.

    Raises:
        ValueError: shapes differ or are not 2-D, empty axes, non-finite scores, or bad options.
    """
    diff = _differences(a_scores, b_scores, ndim=2)  # (S, I)
    _check_options(num_samples, ci)
    rng = np.random.default_rng(seed)
    num_seeds, num_items = diff.shape
    chunk = max(1, _CHUNK_ELEMENTS // (num_seeds + num_items))
    means = []
    for start in range(0, num_samples, chunk):
        size = min(chunk, num_samples - start)
        seed_counts = _counts(rng.integers(0, num_seeds, size=(size, num_seeds)), num_seeds)
        item_counts = _counts(rng.integers(0, num_items, size=(size, num_items)), num_items)
        # mean over the drawn grid = sum_s,i c_s d[s, i] c_i / (S * I)
        totals = ((seed_counts @ diff) * item_counts).sum(axis=1)  # (k,)
        means.append(totals / (num_seeds * num_items))
    return _summary(float(diff.mean()), np.concatenate(means), ci)


def _differences(a_scores, b_scores, *, ndim: int) -> np.ndarray:
    a = np.asarray(a_scores, dtype=np.float64)
    b = np.asarray(b_scores, dtype=np.float64)
    if a.shape != b.shape or a.ndim != ndim:
        raise ValueError(f"expected two {ndim}-D score arrays of the same shape, got "
                         f"{a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError(f"no scores to compare (shape {a.shape})")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("scores must be finite")
    return b - a


def _check_options(num_samples: int, ci: float) -> None:
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")


def _counts(index: np.ndarray, n: int) -> np.ndarray:
    """How often each of n values is drawn, per row. Shapes: (k, m) int -> (k, n) float64."""
    offsets = np.arange(index.shape[0])[:, None] * n  # (k, 1)
    flat = np.bincount((index + offsets).ravel(), minlength=index.shape[0] * n)
    return flat.reshape(index.shape[0], n).astype(np.float64)


def _summary(mean_diff: float, means: np.ndarray, ci: float) -> dict[str, float]:
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    tail = min(int((means <= 0).sum()), int((means >= 0).sum()))
    p_value = min(1.0, 2.0 * (tail + 1) / (means.shape[0] + 1))
    return {"mean_diff": mean_diff, "low": float(low), "high": float(high),
            "p_value": float(p_value)}
