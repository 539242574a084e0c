"""The numbers behind report tables and figures, in numpy/pandas only.

* ``seed_bootstrap_ci``: percentile CI of a mean over seeds (resampling the seeds).
* ``paired_bootstrap``: the difference of two variants trained with the same seeds and scored
  on the same test items, resampling seeds and items (items within their task). This is the
  twin of ``switchkd.evaluation.bootstrap.paired_bootstrap_seeds`` (analysis never imports
  switchkd), extended with strata so every task weighs the same, as in Avg10.
* ``param_importance``: how strongly each varied ``cfg.*`` setting of a sweep goes with the
  metric (a simple, documented stand-in for fANOVA that needs no extra dependency).
* ``pareto_front``: the trials no other trial beats on both metric and cost.

Resampling is vectorised and done in chunks; the draws are documented so that a test can
repeat them with plain loops.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

_CHUNK_ELEMENTS = 1 << 22  # resampled indices held at once


def seed_bootstrap_ci(values: Sequence[float], *, num_samples: int = 10_000, seed: int = 0,
                      ci: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (one per training seed).

    Draws: ``rng = np.random.default_rng(seed)``; ``rng.integers(0, S, size=(num_samples, S))``
    (one call); each row's mean of the drawn values; the ``(1-ci)/2`` and ``(1+ci)/2``
    quantiles (numpy's default linear interpolation).

    Returns:
        ``(low, high)``; ``(nan, nan)`` for fewer than 2 values (no spread to resample).
    """
    x = np.asarray(values, dtype=np.float64)
    _check_options(num_samples, ci)
    if x.ndim != 1 or x.shape[0] < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.shape[0], size=(num_samples, x.shape[0]))].mean(axis=1)
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def paired_bootstrap(a_scores: Any, b_scores: Any, *, strata: Optional[Sequence[Any]] = None,
                     num_samples: int = 10_000, seed: int = 0,
                     ci: float = 0.95) -> dict[str, float]:
    """Two-level paired bootstrap of ``b - a`` over seeds and items.

    Statistic: ``T = mean_s mean_g mean_{i in g} (b[s, i] - a[s, i])``: the mean over seeds of
    the stratum-balanced mean difference (strata = tasks: every task weighs the same, as in
    Avg10; one stratum when ``strata`` is None). Each bootstrap sample draws S seeds with
    replacement, and within every stratum as many items as it has, with replacement
    (stratified), and recomputes T. Row s of ``a`` and ``b`` must be the same training seed;
    column i the same test item.

    Draws, per chunk of k samples (``k = num_samples`` unless that exceeds about 4M indices):
    ``rng.integers(0, S, size=(k, S))``, then for each stratum in ``np.unique`` order
    ``rng.integers(0, n_g, size=(k, n_g))`` indexing that stratum's items in column order;
    ``rng = np.random.default_rng(seed)``.

    The interval is the percentile interval of the resampled T; the p-value is two-sided: twice
    the smaller share of resampled T on either side of 0, add-one smoothed, capped at 1 (as in
    ``switchkd.evaluation.bootstrap``). With 0/1 item scores T is often exactly 0; values within
    ``1e-9 * max|b - a|`` of 0 count as 0 (on both sides), so rounding in the vectorised sums
    cannot move them to one side.

    Shapes:
        a_scores, b_scores: (S, I) per-item scores; strata: (I,) labels or None.

    Returns:
        ``{"mean_diff", "low", "high", "p_value", "num_seeds", "num_items"}``.

    Raises:
        ValueError: shapes differ or are not 2-D, an empty axis, non-finite scores, bad strata
            or options.
    """
    a = np.asarray(a_scores, dtype=np.float64)
    b = np.asarray(b_scores, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"expected two 2-D (seeds, items) score arrays of the same shape, got "
                         f"{a.shape} and {b.shape}")
    if a.size == 0:
        raise ValueError(f"no scores to compare (shape {a.shape})")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("scores must be finite")
    _check_options(num_samples, ci)
    diff = b - a  # (S, I)
    num_seeds, num_items = diff.shape
    labels = np.zeros(num_items, dtype=np.int64) if strata is None else np.asarray(strata)
    if labels.shape != (num_items,):
        raise ValueError(f"strata must have one label per item ({num_items}), got "
                         f"{labels.shape}")
    groups = [np.flatnonzero(labels == g) for g in np.unique(labels)]
    weights = np.empty(num_items)  # 1 / (G * n_g): the stratum-balanced mean
    for members in groups:
        weights[members] = 1.0 / (len(groups) * len(members))
    point = float((diff.mean(axis=0) * weights).sum())

    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // (num_seeds + num_items))
    stats = []
    for start in range(0, num_samples, chunk):
        size = min(chunk, num_samples - start)
        seed_counts = _counts(rng.integers(0, num_seeds, size=(size, num_seeds)), num_seeds)
        item_counts = np.zeros((size, num_items))  # (k, I)
        for members in groups:
            drawn = rng.integers(0, len(members), size=(size, len(members)))
            item_counts[:, members] = _counts(drawn, len(members))
        per_item = seed_counts @ diff / num_seeds  # (k, I): mean over the drawn seeds
        stats.append((per_item * item_counts * weights).sum(axis=1))  # (k,)
    means = np.concatenate(stats)
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    eps = 1e-9 * max(1.0, float(np.abs(diff).max()))
    tail = min(int((means <= eps).sum()), int((means >= -eps).sum()))
    p_value = min(1.0, 2.0 * (tail + 1) / (means.shape[0] + 1))
    return {"mean_diff": point, "low": float(low), "high": float(high),
            "p_value": float(p_value), "num_seeds": num_seeds, "num_items": num_items}


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


# ------------------------------------------------------------------------------------------
# Sweeps: importance and cost
# ------------------------------------------------------------------------------------------


def param_importance(frame: pd.DataFrame, metric: str,
                     exclude: Sequence[str] = ("cfg.run.cache_dir", "cfg.run.name"),
                     ) -> pd.DataFrame:
    """How strongly each varied ``cfg.*`` column goes with ``metric`` over the trials.

    Numeric settings: ``|Spearman rank correlation|`` between the setting and the metric.
    Categorical ones (strings, booleans, null mixed with numbers): the correlation ratio eta
    of the metric's ranks over the categories, ``sqrt(between-group / total sum of squares)``.
    Both lie in [0, 1] and are 0 when the setting does not order or separate the metric. They
    are marginal (one setting at a time, like a main effect), not fANOVA: interactions and
    conditional parameters are not untangled. Rows without the metric are ignored.

    Returns:
        Columns ``param`` (dotted key), ``importance``, ``kind`` (spearman | eta), sorted by
        importance, descending; empty when nothing varies.
    """
    rows = frame[frame[metric].notna()] if metric in frame.columns else frame.iloc[:0]
    out = []
    for column in frame.columns:
        if not column.startswith("cfg.") or column in exclude:
            continue
        values = rows[column]
        # Null is a setting of its own (e.g. loss.fixed_k: null = adaptive k), not a gap.
        labels = values.map(lambda v: "null" if pd.isna(v) else str(v))
        if labels.nunique() < 2:
            continue
        ranks = rows[metric].rank()
        numeric = (pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
                   and values.notna().all())
        if numeric:
            rho = values.rank().corr(ranks)
            importance, kind = (0.0 if pd.isna(rho) else abs(float(rho))), "spearman"
        else:
            total = float(((ranks - ranks.mean()) ** 2).sum())
            group_means = ranks.groupby(labels).transform("mean")
            between = float(((group_means - ranks.mean()) ** 2).sum())
            importance, kind = (float(np.sqrt(between / total)) if total > 0 else 0.0), "eta"
        out.append({"param": column[4:], "importance": importance, "kind": kind})
    result = pd.DataFrame(out, columns=["param", "importance", "kind"])
    return result.sort_values("importance", ascending=False, kind="stable").reset_index(drop=True)


def pareto_front(cost: Sequence[float], value: Sequence[float], *, mode: str = "max") -> np.ndarray:
    """Which points no other point beats: no cheaper-or-equal point with a better-or-equal
    value (better in at least one). Points with a missing cost or value are never on it.

    Shapes: cost, value (n,) -> (n,) bool.
    """
    c = np.asarray(cost, dtype=np.float64)
    v = np.asarray(value, dtype=np.float64)
    if mode == "min":
        v = -v
    ok = np.isfinite(c) & np.isfinite(v)
    front = np.zeros(c.shape[0], dtype=bool)
    for i in np.flatnonzero(ok):
        others = ok & (c <= c[i]) & (v >= v[i]) & ((c < c[i]) | (v > v[i]))
        front[i] = not others.any()
    return front
