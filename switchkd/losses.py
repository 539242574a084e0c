"""Distillation losses as pure functions on logits (METHOD.md sections 3 to 5).

Every loss takes ``(student_logits, teacher_logits, mask, *, hyper-parameters)`` and returns a
float32 scalar: the per-token loss averaged over the positions where ``mask`` is True. Only the
valid rows are ever computed on. The teacher side is always detached. No loss multiplies by
``temperature**2``; callers weight the terms (``switchkd.step``).

Dimension letters in shape comments: N tokens (valid rows), V vocabulary, W Kneedle window,
K = k_max (or fixed_k) leading-set width, P = K * (K - 1) / 2 pairs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

# A window whose top and bottom logits differ by at most this much is flat: k = k_max.
_FLAT_SPAN = 1e-6
# Pairs outside the leading set are filled this far below the row's smallest pair difference:
# exp(-200) is exactly 0 in float32, so they carry no probability, yet every value stays finite.
_PAIR_FILL_MARGIN = 200.0


def masked_mean(values: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean of ``values`` over the positions where ``mask`` is True; 0 when there are none.

    The count is clamped to at least 1, so an empty selection gives exactly 0 (never NaN) and a
    zero gradient. Masked-out values are selected away, not multiplied by 0, so a NaN there cannot
    leak into the result.

    Shapes:
        values: (...), any floating dtype.
        mask: (...) bool, same shape as ``values``; None means every position counts.

    Returns:
        Scalar tensor with the dtype of ``values``.

    Raises:
        ValueError: if ``mask`` is not bool or its shape differs from ``values``.

    Reference: METHOD.md section 3 ("KD terms are averaged over answer-token positions").
    """
    if mask is None:
        return values.sum() / max(values.numel(), 1)
    _check_mask(mask, values.shape)
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / mask.sum().clamp_min(1)


def ce_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Next-token cross-entropy of the student, ignoring label -100.

    The caller passes logits and labels that are already aligned (position ``i`` of ``logits``
    predicts ``labels[i]``); no shift happens here. Computed in float32 on the non-ignored rows
    only.

    Shapes:
        logits: (..., V), any floating dtype.
        labels: (...) integer, values in [0, V) or -100.

    Returns:
        Float32 scalar: mean negative log-likelihood over non-ignored positions; exactly 0 (with a
        zero gradient) when every label is -100.

    Raises:
        ValueError: if ``labels`` does not have shape ``logits.shape[:-1]``, or ``logits`` is
            non-finite at a non-ignored position.

    Reference: METHOD.md section 3, the ``CE(z_S, y)`` term.
    """
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels must have shape logits.shape[:-1]={tuple(logits.shape[:-1])}, "
            f"got {tuple(labels.shape)}"
        )
    valid = labels.reshape(-1) != -100  # (N_all,)
    rows = logits.reshape(-1, logits.shape[-1])[valid].float()  # (N, V)
    _check_finite(("logits", rows.detach()))
    nll = F.cross_entropy(rows, labels.reshape(-1)[valid], reduction="none")  # (N,)
    return masked_mean(nll)


def kl_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor | None = None,
    *,
    temperature: float = 1.0,
    direction: str = "forward",
) -> Tensor:
    """Full-vocabulary KL divergence between the softened teacher and student distributions.

    ``p_t = softmax(t / tau)``, ``p_s = softmax(s / tau)``. ``direction="forward"`` is vanilla KD,
    ``KL(p_t || p_s)``; ``direction="reverse"`` is ``KL(p_s || p_t)``. Summed over the vocabulary,
    averaged over valid tokens. There is no ``tau**2`` factor: callers weight the term.

    Shapes:
        student_logits: (..., V), any floating dtype.
        teacher_logits: (..., V), same shape; detached inside.
        mask: (...) bool, True where the position counts; None means all.

    Returns:
        Float32 scalar; 0 when no position is valid.

    Raises:
        ValueError: on a shape mismatch, a non-bool mask, ``temperature <= 0``, an unknown
            ``direction``, or non-finite logits at a valid position (naming the input).

    Reference: METHOD.md section 5 (baselines "vanilla KD" and "reverse KL").
    """
    _check_positive("temperature", temperature)
    _check_choice("direction", direction, ("forward", "reverse"))
    s, t = _valid_rows_float(student_logits, teacher_logits, mask)  # (N, V), (N, V)
    log_ps = (s / temperature).log_softmax(-1)  # (N, V)
    log_pt = (t / temperature).log_softmax(-1)  # (N, V)
    if direction == "forward":
        kl = F.kl_div(log_ps, log_pt, reduction="none", log_target=True)  # (N, V)
    else:
        kl = F.kl_div(log_pt, log_ps, reduction="none", log_target=True)  # (N, V)
    return masked_mean(kl.sum(-1))


def jsd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor | None = None,
    *,
    temperature: float = 1.0,
    beta: float = 0.5,
) -> Tensor:
    """Generalized Jensen-Shannon divergence, as TRL's ``generalized_jsd_loss``.

    ``m = beta * p_t + (1 - beta) * p_s`` and the loss is
    ``beta * KL(p_t || m) + (1 - beta) * KL(p_s || m)``, with ``p = softmax(logits / tau)``,
    summed over the vocabulary and averaged over valid tokens. No ``tau**2`` factor.

    Shapes:
        student_logits: (..., V), any floating dtype.
        teacher_logits: (..., V), same shape; detached inside.
        mask: (...) bool, True where the position counts; None means all.

    Returns:
        Float32 scalar; 0 when no position is valid.

    Raises:
        ValueError: on a shape mismatch, a non-bool mask, ``temperature <= 0``, ``beta`` outside
            (0, 1), or non-finite logits at a valid position (naming the input).

    Reference: METHOD.md section 5 (baseline "JSD").
    """
    _check_positive("temperature", temperature)
    if not 0.0 < beta < 1.0:
        raise ValueError(f"beta must be in (0, 1), got {beta}")
    s, t = _valid_rows_float(student_logits, teacher_logits, mask)  # (N, V), (N, V)
    log_ps = (s / temperature).log_softmax(-1)  # (N, V)
    log_pt = (t / temperature).log_softmax(-1)  # (N, V)
    log_m = torch.logaddexp(log_pt + math.log(beta), log_ps + math.log1p(-beta))  # (N, V)
    kl_t = F.kl_div(log_m, log_pt, reduction="none", log_target=True).sum(-1)  # (N,)
    kl_s = F.kl_div(log_m, log_ps, reduction="none", log_target=True).sum(-1)  # (N,)
    return masked_mean(beta * kl_t + (1.0 - beta) * kl_s)


def kneedle_k(logits: Tensor, *, window: int, k_min: int, k_max: int) -> Tensor:
    """Size of the leading set of each row, found by Kneedle on its top-``window`` logits.

    With the row's top logits sorted descending ``s_1 >= ... >= s_W`` (1-based ranks),
    ``x_i = (i - 1) / (W - 1)`` and ``y_i = (s_i - s_W) / (s_1 - s_W)``, the knee is
    ``i* = argmax_i ((1 - x_i) - y_i)`` (the first maximum on ties) and ``k = clamp(i*, k_min,
    k_max)``: the leading set includes the knee. A flat window (``s_1 - s_W <= 1e-6``) gives
    ``k_max``. Steep curves give small k, flat ones large k. The result is invariant to shifting
    and positively scaling the logits, hence to the temperature.

    This is the *global* maximum of the Kneedle difference curve. ``kneed.KneeLocator(x, y,
    curve="convex", direction="decreasing")`` (offline, S=1) instead returns the *first* local
    maximum that is followed by a drop of more than ``S / (W - 1)``. Both agree when the
    difference curve has one peak. They differ on two-knee curves: for W=11 and normalised
    ``y = [1, .5, .45, .42, .4, .05, .04, .03, .02, .01, 0]`` the difference curve is
    ``[0, .4, .35, .28, .2, .45, .36, ...]``; kneed returns rank 2, this function rank 6.
    On a plateau of equal maxima kneed takes the last point, this function the first.

    Shapes:
        logits: (..., V), any floating dtype; the top-``window`` values are upcast to float32.

    Returns:
        Long tensor of shape (...), values in [k_min, k_max].

    Raises:
        ValueError: unless ``2 <= k_min <= k_max <= window <= V`` (naming the argument).

    Reference: METHOD.md section 4, step 1 (Dynamic k).
    """
    _check_kneedle_args(window=window, k_min=k_min, k_max=k_max, vocab=logits.shape[-1])
    top = logits.detach().topk(window, dim=-1).values.float()  # (..., W)
    return _k_from_top(top, k_min, k_max)


def dbild_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor | None = None,
    *,
    temperature: float = 3.0,
    window: int = 64,
    k_min: int = 2,
    k_max: int = 32,
    fixed_k: int | None = None,
    divergence: str = "reverse",
    directions: str = "both",
) -> Tensor:
    """DBiLD: pairwise logit-difference KL over dynamic leading sets, in both directions.

    Per valid token, each branch has a *leader* (teacher or student side) whose leading set is its
    top-k logits, k found by ``kneedle_k`` on the leader's top-``window`` logits (or ``fixed_k``
    for every token, without a knee search). In the leader's rank order:

    * teacher-led: ``I`` = teacher's top-``k_t``; ``a = t[I] / tau``, ``b = s[I] / tau``;
    * student-led: ``J`` = student-side top-``k_s``; ``c = s[J] / tau``, ``e = t[J] / tau``.

    For every pair ``i < j`` (``torch.triu_indices`` order) the differences ``a_i - a_j`` (and
    likewise for b, c, e) go through a softmax over the ``k (k - 1) / 2`` pairs. With
    ``divergence="reverse"`` (default) ``L_t = KL(softmax(db) || softmax(da))`` and
    ``L_s = KL(softmax(dc) || softmax(de))``, i.e. KL(student || teacher) in both branches;
    ``"forward"`` swaps the arguments. The loss is ``L_t + L_s`` (``directions="teacher"`` or
    ``"student"`` keeps one), summed over pairs and averaged over valid tokens. No ``tau**2``.

    The teacher is detached; the student gets gradient through the gathered values only (index
    selection). Ragged per-token k is computed at width K = k_max with the pairs whose lower rank
    ``j >= k`` (0-based) masked by a finite fill, so the result equals the exact per-token sum and
    the gradient is never NaN. The only (N, V) work is ``topk`` and ``gather``; arithmetic is in
    float32 on the gathered (N, K) values.

    Shapes:
        student_logits: (..., V), any floating dtype (student or switch logits).
        teacher_logits: (..., V), same shape.
        mask: (...) bool, True where the position counts; None means all.

    Args:
        temperature: tau, divides the gathered logits (the knee is invariant to it).
        window: W, the number of top logits Kneedle looks at; ignored with ``fixed_k``.
        k_min: smallest leading set; ignored with ``fixed_k``.
        k_max: largest leading set, the width K of the computation; ignored with ``fixed_k``.
        fixed_k: if set, every token of both branches uses this k (BiLD-style).
        divergence: "reverse" (KL(student || teacher), default) or "forward".
        directions: "both", "teacher" (teacher-led only) or "student" (student-led only).

    Returns:
        Float32 scalar; exactly 0 with a zero gradient when no position is valid.

    Raises:
        ValueError: on a shape mismatch, a non-bool mask, ``temperature <= 0``, an unknown
            ``divergence``/``directions``, ``2 <= k_min <= k_max <= window <= V`` violated (without
            ``fixed_k``), ``2 <= fixed_k <= V`` violated, or non-finite logits at a valid position.

    Reference: METHOD.md section 4, steps 1 to 5 (and section 3, ``L_Align`` and ``L_VSD``).
    """
    _check_positive("temperature", temperature)
    _check_choice("divergence", divergence, ("reverse", "forward"))
    _check_choice("directions", directions, ("both", "teacher", "student"))
    s2d, t2d, rows = _flatten(student_logits, teacher_logits, mask)  # (N_all, V), (N_all, V), (N,)
    vocab = s2d.shape[-1]
    if fixed_k is None:
        _check_kneedle_args(window=window, k_min=k_min, k_max=k_max, vocab=vocab)
    elif not 2 <= fixed_k <= vocab:
        raise ValueError(f"fixed_k must satisfy 2 <= fixed_k <= V={vocab}, got {fixed_k}")

    s_sel = _select_rows(s2d.detach(), rows)  # (N, V)
    t_sel = _select_rows(t2d, rows)  # (N, V)
    _check_finite(("student_logits", s_sel), ("teacher_logits", t_sel))
    leaders = []
    if directions in ("both", "teacher"):
        leaders.append(_leading_set(t_sel, window, k_min, k_max, fixed_k))
    if directions in ("both", "student"):
        leaders.append(_leading_set(s_sel, window, k_min, k_max, fixed_k))

    # One gather per side for all branches: the student's (N_all, V) gradient is one scatter.
    idx = torch.cat([i for i, _ in leaders], dim=-1)  # (N, B*K), B branches
    s_vals = _take(s2d, rows, idx).float() / temperature  # (N, B*K)
    t_vals = _take(t2d, rows, idx).float() / temperature  # (N, B*K)
    width = idx.shape[-1] // len(leaders)
    token_loss = sum(
        _pairwise_kl(t_v, s_v, k, divergence)  # (N,)
        for t_v, s_v, (_, k) in zip(t_vals.split(width, -1), s_vals.split(width, -1), leaders)
    )
    return masked_mean(token_loss)


def bild_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor | None = None,
    *,
    top_k: int = 8,
    temperature: float = 3.0,
) -> Tensor:
    """BiLD (Li et al., COLING 2025): DBiLD with a fixed top-k and forward KL.

    Equivalent to ``dbild_loss(..., fixed_k=top_k, divergence="forward", directions="both")``:
    pairwise logit differences of the teacher's and the student's top-``top_k`` logits,
    ``KL(p_teacher || p_student)`` in both branches, averaged over valid tokens. No ``tau**2``.

    Shapes:
        student_logits: (..., V), any floating dtype.
        teacher_logits: (..., V), same shape.
        mask: (...) bool, True where the position counts; None means all.

    Returns:
        Float32 scalar; 0 when no position is valid.

    Raises:
        ValueError: as ``dbild_loss``; ``top_k`` is checked as ``fixed_k``.

    Reference: METHOD.md section 4, last paragraph (BiLD, the parent loss).
    """
    return dbild_loss(
        student_logits,
        teacher_logits,
        mask,
        temperature=temperature,
        fixed_k=top_k,
        divergence="forward",
    )


# --- helpers -------------------------------------------------------------------------------


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_kneedle_args(*, window: int, k_min: int, k_max: int, vocab: int) -> None:
    if k_min < 2:
        raise ValueError(f"k_min must be >= 2, got {k_min}")
    if k_max < k_min:
        raise ValueError(f"k_max must be >= k_min={k_min}, got {k_max}")
    if k_max > window:
        raise ValueError(f"k_max must be <= window={window}, got {k_max}")
    if window > vocab:
        raise ValueError(f"window must be <= V={vocab}, got {window}")


def _check_mask(mask: Tensor, shape: torch.Size) -> None:
    if mask.dtype != torch.bool or mask.shape != shape:
        raise ValueError(
            f"mask must be a bool tensor of shape {tuple(shape)}, "
            f"got {mask.dtype} of shape {tuple(mask.shape)}"
        )


def _check_finite(*named: tuple[str, Tensor]) -> None:
    """Raise if any named tensor has a NaN or inf.

    A sum is non-finite whenever one term is, so one cheap reduction per tensor (and a single
    host sync) clears the common case; the exact ``isfinite`` pass, several times slower than
    ``topk`` on CPU, runs only when a sum is non-finite (a bad value, or a float32 overflow).
    """
    sums = torch.stack([x.sum(dtype=torch.float32) for _, x in named])  # (num_inputs,)
    if bool(torch.isfinite(sums).all()):
        return
    for name, x in named:
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} contains non-finite values (NaN or inf) at valid positions")


def _flatten(
    student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Validated 2-D views, teacher detached, and the valid row numbers (None = all rows)."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "student_logits and teacher_logits must have the same shape, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if student_logits.dim() < 1:
        raise ValueError("student_logits must have a vocabulary dimension, got a scalar")
    vocab = student_logits.shape[-1]
    s2d = student_logits.reshape(-1, vocab)  # (N_all, V)
    t2d = teacher_logits.detach().reshape(-1, vocab)  # (N_all, V)
    if mask is None:
        return s2d, t2d, None
    _check_mask(mask, student_logits.shape[:-1])
    return s2d, t2d, mask.reshape(-1).nonzero().squeeze(-1)  # (N,)


def _select_rows(x2d: Tensor, rows: Tensor | None) -> Tensor:
    return x2d if rows is None else x2d[rows]  # (N, V)


def _take(x2d: Tensor, rows: Tensor | None, idx: Tensor) -> Tensor:
    """``x2d[rows][n, idx[n]]`` without materialising ``x2d[rows]`` in the autograd graph."""
    if rows is None:
        return x2d.gather(-1, idx)  # (N, C)
    return x2d[rows[:, None], idx]  # (N, C)


def _valid_rows_float(
    student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Float32 valid rows of both inputs (teacher detached), checked finite."""
    s2d, t2d, rows = _flatten(student_logits, teacher_logits, mask)
    s = _select_rows(s2d, rows).float()  # (N, V)
    t = _select_rows(t2d, rows).float()  # (N, V)
    _check_finite(("student_logits", s.detach()), ("teacher_logits", t))
    return s, t


def _k_from_top(top: Tensor, k_min: int, k_max: int) -> Tensor:
    """Kneedle k from float32 logits sorted descending along the last dim (METHOD.md 4.1)."""
    width = top.shape[-1]
    last = top[..., -1:]  # (..., 1)
    span = top[..., :1] - last  # (..., 1)
    y = (top - last) / span.clamp_min(_FLAT_SPAN)  # (..., W)
    x = torch.arange(width, device=top.device, dtype=top.dtype) / (width - 1)  # (W,)
    knee = ((1.0 - x) - y).argmax(-1) + 1  # (...,) 1-based rank, first maximum
    k = knee.clamp(k_min, k_max)  # (...,)
    return torch.where(span.squeeze(-1) <= _FLAT_SPAN, torch.full_like(k, k_max), k)


def _leading_set(
    leader: Tensor, window: int, k_min: int, k_max: int, fixed_k: int | None
) -> tuple[Tensor, Tensor]:
    """Top-K vocabulary indices of each leader row, in rank order, and each row's k."""
    if fixed_k is not None:
        idx = leader.topk(fixed_k, dim=-1).indices  # (N, K)
        return idx, torch.full_like(idx[:, 0], fixed_k)
    top, idx = leader.topk(window, dim=-1)  # (N, W), (N, W)
    return idx[:, :k_max], _k_from_top(top.float(), k_min, k_max)  # (N, K), (N,)


def _pair_log_softmax(diffs: Tensor, valid: Tensor) -> Tensor:
    """Log-softmax over the valid pairs; invalid pairs get a finite fill with zero probability."""
    fill = diffs.detach().amin(-1, keepdim=True) - _PAIR_FILL_MARGIN  # (N, 1)
    return torch.where(valid, diffs, fill).log_softmax(-1)  # (N, P)


def _pairwise_kl(t_vals: Tensor, s_vals: Tensor, k: Tensor, divergence: str) -> Tensor:
    """Per-token pairwise-difference KL of one branch (METHOD.md 4.3 and 4.4).

    ``t_vals`` and ``s_vals`` are the tempered teacher and student logits at the leader's top-K
    indices, in the leader's rank order; only pairs within each row's top-``k`` count.
    """
    width = t_vals.shape[-1]
    i, j = torch.triu_indices(width, width, offset=1, device=t_vals.device)  # (P,), (P,)
    valid = j < k[:, None]  # (N, P)
    t_diffs = t_vals.index_select(1, i) - t_vals.index_select(1, j)  # (N, P)
    s_diffs = s_vals.index_select(1, i) - s_vals.index_select(1, j)  # (N, P)
    log_pt = _pair_log_softmax(t_diffs, valid)  # (N, P)
    log_ps = _pair_log_softmax(s_diffs, valid)  # (N, P)
    log_p, log_q = (log_ps, log_pt) if divergence == "reverse" else (log_pt, log_ps)
    # Pairs outside the leading set have p exactly 0 and a finite log-ratio: they add exactly 0.
    return (log_p.exp() * (log_p - log_q)).sum(-1)  # (N,)
