"""Tests for switchkd.losses: one property suite over every loss, plus exact checks.

The DBiLD checks compare against ``reference_dbild``, a slow per-token loop written from METHOD.md
section 4 with no vectorisation or masking tricks.
"""

import json
import math
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from switchkd.losses import (
    bild_loss,
    ce_loss,
    dbild_loss,
    jsd_loss,
    kl_loss,
    kneedle_k,
    masked_mean,
)

V = 128

LOSSES = {
    "dbild": dbild_loss,
    "dbild_forward": partial(dbild_loss, divergence="forward"),
    "dbild_fixed_k": partial(dbild_loss, fixed_k=5),
    "dbild_teacher": partial(dbild_loss, directions="teacher"),
    "dbild_student": partial(dbild_loss, directions="student"),
    "bild": bild_loss,
    "kl_forward": partial(kl_loss, temperature=2.0),
    "kl_reverse": partial(kl_loss, temperature=2.0, direction="reverse"),
    "jsd": partial(jsd_loss, temperature=2.0, beta=0.3),
}
loss_params = pytest.mark.parametrize("loss", LOSSES.values(), ids=LOSSES.keys())


def make_inputs(seed=0, shape=(2, 6), vocab=V, dtype=torch.float32):
    """Student, teacher logits (..., vocab) and a mask with both True and False entries."""
    g = torch.Generator().manual_seed(seed)
    teacher = 3.0 * torch.randn(*shape, vocab, generator=g)
    student = teacher + 2.0 * torch.randn(*shape, vocab, generator=g)
    mask = torch.rand(*shape, generator=g) > 0.4
    mask.view(-1)[:2] = torch.tensor([True, False])
    return student.to(dtype), teacher.to(dtype), mask


# --- property suite over every loss ---------------------------------------------------------


@loss_params
def test_zero_when_student_equals_teacher(loss):
    _, teacher, mask = make_inputs()
    assert loss(teacher.clone(), teacher, mask).item() == pytest.approx(0.0, abs=1e-6)


@loss_params
def test_positive_when_student_differs(loss):
    student, teacher, mask = make_inputs()
    assert loss(student, teacher, mask).item() > 1e-3


@loss_params
def test_masked_positions_ignored(loss):
    student, teacher, mask = make_inputs()
    g = torch.Generator().manual_seed(1)
    junk = 50.0 * torch.randn(student.shape, generator=g)
    masked_out = ~mask[..., None]
    student2 = torch.where(masked_out, junk, student)
    teacher2 = torch.where(masked_out, junk.flip(-1), teacher)
    torch.testing.assert_close(loss(student2, teacher2, mask), loss(student, teacher, mask))


@loss_params
def test_non_finite_at_masked_positions_is_ignored(loss):
    student, teacher, mask = make_inputs()
    student[~mask] = float("nan")
    teacher[~mask] = float("inf")
    assert torch.isfinite(loss(student, teacher, mask))


@loss_params
def test_mask_none_equals_all_true(loss):
    student, teacher, _ = make_inputs()
    all_true = torch.ones(student.shape[:-1], dtype=torch.bool)
    torch.testing.assert_close(loss(student, teacher), loss(student, teacher, all_true))


@loss_params
def test_all_masked_is_exactly_zero_with_zero_grad(loss):
    student, teacher, mask = make_inputs()
    student.requires_grad_(True)
    value = loss(student, teacher, torch.zeros_like(mask))
    value.backward()
    assert value.item() == 0.0
    assert student.grad is not None and torch.count_nonzero(student.grad) == 0


@loss_params
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_returns_float32_scalar(loss, dtype):
    student, teacher, mask = make_inputs(dtype=dtype)
    value = loss(student, teacher, mask)
    assert value.dtype == torch.float32 and value.shape == ()


@loss_params
def test_bf16_gradients_are_finite(loss):
    student, teacher, mask = make_inputs(dtype=torch.bfloat16)
    student.requires_grad_(True)
    loss(student, teacher, mask).backward()
    assert student.grad.dtype == torch.bfloat16
    assert torch.isfinite(student.grad).all() and torch.count_nonzero(student.grad) > 0


@loss_params
def test_teacher_gets_no_grad(loss):
    student, teacher, mask = make_inputs()
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    loss(student, teacher, mask).backward()
    assert teacher.grad is None


@loss_params
@pytest.mark.parametrize("bad", ["student", "teacher"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_input_raises(loss, bad, value):
    student, teacher, mask = make_inputs()
    (student if bad == "student" else teacher)[0, 0, 3] = value
    with pytest.raises(ValueError, match=f"{bad}_logits.*non-finite"):
        loss(student, teacher, mask)


@loss_params
def test_shape_and_argument_errors(loss):
    student, teacher, mask = make_inputs()
    with pytest.raises(ValueError, match="teacher_logits"):
        loss(student, teacher[..., :-1], mask)
    with pytest.raises(ValueError, match="mask"):
        loss(student, teacher, mask[:, :-1])
    with pytest.raises(ValueError, match="mask"):
        loss(student, teacher, mask.float())
    with pytest.raises(ValueError, match="temperature"):
        loss(student, teacher, mask, temperature=0.0)


# --- kneedle_k ------------------------------------------------------------------------------


def decay_rows(scales, vocab=V, seed=0):
    """One row per scale: exp(-rank / scale) decays (steep for small scale), shuffled over V."""
    g = torch.Generator().manual_seed(seed)
    ranks = torch.arange(vocab, dtype=torch.float64)
    rows = [10.0 * torch.exp(-ranks / s) + 1e-3 * torch.rand(vocab, generator=g) for s in scales]
    return torch.stack([r[torch.randperm(vocab, generator=g)] for r in rows]).float()


def test_kneedle_invariant_to_shift_and_positive_scale():
    logits = decay_rows([0.5, 1, 2, 4, 8, 16, 32, 64]) + torch.randn(8, V)
    k = kneedle_k(logits, window=64, k_min=2, k_max=32)
    for transformed in (logits + 7.0, 4.0 * logits, 0.37 * logits - 3.0, logits / 3.0):
        assert torch.equal(kneedle_k(transformed, window=64, k_min=2, k_max=32), k)


def test_kneedle_flat_window_gives_k_max():
    logits = torch.zeros(3, V)
    logits[1] = 5.0
    logits[2, :] = 1e-9 * torch.arange(V)  # span 6.4e-8 <= 1e-6
    assert kneedle_k(logits, window=64, k_min=2, k_max=17).tolist() == [17, 17, 17]


def test_kneedle_steep_gives_small_k_flatter_gives_larger_k():
    k = kneedle_k(decay_rows([0.5, 2, 8, 32, 128]), window=64, k_min=2, k_max=64).tolist()
    assert k == sorted(k) and len(set(k)) == 5
    assert k[0] <= 3 and k[-1] >= 20


def test_kneedle_plateau_then_cliff_includes_the_knee():
    """Four tied candidates then a cliff: the knee is the first rank after the cliff."""
    logits = torch.tensor([[5.0, 5.0, 5.0, 5.0] + [0.0] * 12])
    assert kneedle_k(logits, window=16, k_min=2, k_max=16).item() == 5


def test_kneedle_clamps_to_k_min_and_k_max():
    logits = decay_rows([0.5, 128])
    assert kneedle_k(logits, window=64, k_min=4, k_max=10).tolist() == [4, 10]


def test_kneedle_is_vectorised_over_rows_and_leading_dims():
    logits = decay_rows([0.5, 1, 2, 4, 8, 16]) + torch.randn(6, V)
    k = kneedle_k(logits, window=32, k_min=2, k_max=16)
    rows = [kneedle_k(r[None], window=32, k_min=2, k_max=16).item() for r in logits]
    assert k.dtype == torch.long and k.tolist() == rows
    assert torch.equal(kneedle_k(logits.view(2, 3, V), window=32, k_min=2, k_max=16), k.view(2, 3))


def kneed_rank(curve):
    """kneed's knee of a descending curve, as a 1-based rank."""
    from kneed import KneeLocator

    ranks = np.arange(1, len(curve) + 1)
    return int(KneeLocator(ranks, curve, curve="convex", direction="decreasing").knee)


SINGLE_KNEE_CURVES = {
    **{f"exp{s}": np.exp(-np.arange(64) / s) for s in (0.7, 2.0, 5.0, 12.0, 30.0)},
    **{f"power{p}": (np.arange(64) + 1.0) ** -p for p in (0.3, 1.0, 2.5)},
    **{f"hyperbola{c}": 1.0 / (np.arange(64) + c) for c in (0.5, 4.0, 20.0)},
}


@pytest.mark.parametrize("curve", SINGLE_KNEE_CURVES.values(), ids=SINGLE_KNEE_CURVES.keys())
def test_kneedle_matches_kneed_on_single_knee_curves(curve):
    """On a curve whose difference curve has one peak, our knee is kneed's knee."""
    logits = torch.tensor(curve, dtype=torch.float32)[None]
    assert kneedle_k(logits, window=64, k_min=2, k_max=64).item() == kneed_rank(curve)


def test_kneedle_differs_from_kneed_on_two_knee_curve():
    """kneed takes the first peak of the difference curve, we take the highest.

    W=11, x = (rank - 1) / 10, y = the curve itself (already in [0, 1]). The difference curve
    (1 - x) - y is [0, .4, .35, .28, .2, .45, .36, .27, .18, .09, 0]. kneed (offline, S=1) sets
    the threshold .4 - 1/10 = .3 at the first peak (rank 2); rank 4 (.28) falls below it, so kneed
    answers rank 2. METHOD.md section 4 asks for the global argmax: rank 6 (.45).
    """
    curve = np.array([1.0, 0.5, 0.45, 0.42, 0.40, 0.05, 0.04, 0.03, 0.02, 0.01, 0.0])
    diff = (1 - np.arange(11) / 10) - curve
    np.testing.assert_allclose(diff[:7], [0, 0.4, 0.35, 0.28, 0.2, 0.45, 0.36], atol=1e-12)
    assert kneed_rank(curve) == 2
    logits = torch.tensor(curve, dtype=torch.float32)[None]
    assert kneedle_k(logits, window=11, k_min=2, k_max=11).item() == 6


def test_kneedle_argument_errors():
    logits = torch.randn(2, 20)
    with pytest.raises(ValueError, match="k_min"):
        kneedle_k(logits, window=8, k_min=1, k_max=4)
    with pytest.raises(ValueError, match="k_max"):
        kneedle_k(logits, window=8, k_min=5, k_max=4)
    with pytest.raises(ValueError, match="k_max"):
        kneedle_k(logits, window=8, k_min=2, k_max=9)
    with pytest.raises(ValueError, match="window"):
        kneedle_k(logits, window=21, k_min=2, k_max=4)


# --- DBiLD against a slow per-token reference ------------------------------------------------


def ref_knee(top):
    """Kneedle on a descending list of floats, written as a plain loop; None if flat."""
    width, span = len(top), top[0] - top[-1]
    if span <= 1e-6:
        return None
    best, best_rank = -math.inf, None
    for rank, value in enumerate(top, start=1):
        score = (1 - (rank - 1) / (width - 1)) - (value - top[-1]) / span
        if score > best:
            best, best_rank = score, rank
    return best_rank


def ref_pair_kl(p_values, q_values):
    """KL(softmax(pairwise diffs of p) || softmax(pairwise diffs of q)), exact pairs only."""
    k = len(p_values)
    dp = torch.stack([p_values[i] - p_values[j] for i in range(k) for j in range(i + 1, k)])
    dq = torch.stack([q_values[i] - q_values[j] for i in range(k) for j in range(i + 1, k)])
    log_p, log_q = torch.log_softmax(dp, 0), torch.log_softmax(dq, 0)
    return (log_p.exp() * (log_p - log_q)).sum()


def reference_dbild(student, teacher, mask, *, temperature, window, k_min, k_max, fixed_k,
                    divergence, directions):
    """METHOD.md section 4, one token at a time, in float64."""
    leaders = {"both": ["teacher", "student"], "teacher": ["teacher"], "student": ["student"]}
    vocab = student.shape[-1]
    rows = zip(student.reshape(-1, vocab).double(), teacher.detach().reshape(-1, vocab).double(),
               mask.reshape(-1).tolist())
    per_token = []
    for s, t, valid in rows:
        if not valid:
            continue
        total = 0.0
        for leader in leaders[directions]:
            order = torch.argsort(t if leader == "teacher" else s, descending=True)
            if fixed_k is None:
                lead = (t if leader == "teacher" else s)[order].tolist()
                knee = ref_knee(lead[:window])
                k = k_max if knee is None else min(max(knee, k_min), k_max)
            else:
                k = fixed_k
            s_top, t_top = s[order[:k]] / temperature, t[order[:k]] / temperature
            if divergence == "reverse":
                total = total + ref_pair_kl(s_top, t_top)
            else:
                total = total + ref_pair_kl(t_top, s_top)
        per_token.append(total)
    return sum(per_token) / len(per_token)


def varied_k_inputs(seed=0, tokens=24, vocab=96):
    """Rows with different decay profiles so the Kneedle k varies from token to token."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(-0.5, 2.0, tokens).tolist()
    teacher = decay_rows(scales, vocab=vocab, seed=seed)
    teacher = teacher + 0.05 * torch.randn(tokens, vocab, generator=g)
    student = teacher + 0.4 * torch.randn(tokens, vocab, generator=g)
    mask = torch.rand(tokens, generator=g) > 0.2
    shape = (2, tokens // 2, vocab)
    return student.view(shape), teacher.view(shape), mask.view(shape[:-1])


KNOBS = dict(temperature=3.0, window=32, k_min=3, k_max=12)


def test_varied_k_inputs_really_vary_k():
    student, teacher, mask = varied_k_inputs()
    for logits in (student, teacher):
        k = kneedle_k(logits[mask], window=32, k_min=3, k_max=12)
        assert len(set(k.tolist())) >= 5 and {3, 12} <= set(k.tolist())


@pytest.mark.parametrize("directions", ["both", "teacher", "student"])
@pytest.mark.parametrize("divergence", ["reverse", "forward"])
@pytest.mark.parametrize("fixed_k", [None, 6])
def test_dbild_matches_per_token_reference(divergence, directions, fixed_k):
    student, teacher, mask = varied_k_inputs()
    kwargs = dict(KNOBS, fixed_k=fixed_k, divergence=divergence, directions=directions)
    expected = reference_dbild(student, teacher, mask, **kwargs)
    actual = dbild_loss(student, teacher, mask, **kwargs)
    torch.testing.assert_close(actual.double(), expected, rtol=1e-5, atol=0.0)


def test_dbild_gradient_matches_reference():
    student, teacher, mask = varied_k_inputs(seed=3)
    kwargs = dict(KNOBS, fixed_k=None, divergence="reverse", directions="both")
    ours = student.clone().requires_grad_(True)
    dbild_loss(ours, teacher, mask, **kwargs).backward()
    ref = student.double().requires_grad_(True)
    reference_dbild(ref, teacher, mask, **kwargs).backward()
    torch.testing.assert_close(ours.grad.double(), ref.grad, rtol=1e-4, atol=1e-7)


def test_dbild_reads_only_the_top_window():
    """Lowering logits outside both sides' top-40 (window=32) leaves the loss unchanged."""
    student, teacher, _ = varied_k_inputs()
    read = (teacher >= teacher.topk(40, -1).values[..., -1:]) | (
        student >= student.topk(40, -1).values[..., -1:])
    student2 = torch.where(read, student, student - 5.0)
    teacher2 = torch.where(read, teacher, teacher - 5.0)
    torch.testing.assert_close(dbild_loss(student2, teacher2, **KNOBS),
                               dbild_loss(student, teacher, **KNOBS))


def test_dbild_argument_errors():
    student, teacher, mask = make_inputs(vocab=20)
    for kwargs, name in [
        (dict(k_min=1, k_max=8, window=16), "k_min"),
        (dict(k_max=17, window=16), "k_max"),
        (dict(window=21), "window"),
        (dict(fixed_k=1), "fixed_k"),
        (dict(fixed_k=21), "fixed_k"),
        (dict(divergence="sideways", window=16), "divergence"),
        (dict(directions="up", window=16), "directions"),
    ]:
        with pytest.raises(ValueError, match=name):
            dbild_loss(student, teacher, mask, **kwargs)


def test_dbild_fixed_k_ignores_window_settings():
    student, teacher, mask = make_inputs(vocab=6)
    assert torch.isfinite(dbild_loss(student, teacher, mask, fixed_k=6))


# --- BiLD, KL, JSD, CE exact values ---------------------------------------------------------


def _softmax(xs):
    top = max(xs)
    exps = [math.exp(x - top) for x in xs]
    return [e / sum(exps) for e in exps]


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def test_bild_hand_computed_value():
    """V=4, top_k=3, tau=3, one valid token (the second row is masked junk).

    Teacher [4, 1, 2, 0] ranks indices 0, 2, 1: a = [4, 2, 1], b = s[[0, 2, 1]] = [3, 2.5, .5].
    Student [3, .5, 2.5, 1] ranks indices 0, 2, 3: c = [3, 2.5, 1], e = t[[0, 2, 3]] = [4, 2, 0].
    Pairs (0,1), (0,2), (1,2); BiLD is forward KL: KL(da || db) + KL(de || dc).
    """
    tau = 3.0
    da = [(4 - 2) / tau, (4 - 1) / tau, (2 - 1) / tau]
    db = [(3 - 2.5) / tau, (3 - 0.5) / tau, (2.5 - 0.5) / tau]
    dc = [(3 - 2.5) / tau, (3 - 1) / tau, (2.5 - 1) / tau]
    de = [(4 - 2) / tau, (4 - 0) / tau, (2 - 0) / tau]
    expected = _kl(_softmax(da), _softmax(db)) + _kl(_softmax(de), _softmax(dc))
    student = torch.tensor([[3.0, 0.5, 2.5, 1.0], [9.0, -9.0, 0.0, 1.0]])
    teacher = torch.tensor([[4.0, 1.0, 2.0, 0.0], [0.0, 3.0, -2.0, 7.0]])
    mask = torch.tensor([True, False])
    assert bild_loss(student, teacher, mask, top_k=3, temperature=tau).item() == pytest.approx(
        expected, rel=1e-6)


def test_kl_and_jsd_hand_computed_values():
    student, teacher = [0.0, 1.0, 2.0], [2.0, 0.0, 1.0]
    p_s, p_t = _softmax([x / 2 for x in student]), _softmax([x / 2 for x in teacher])
    m = [0.3 * t + 0.7 * s for s, t in zip(p_s, p_t)]
    s, t = torch.tensor([student]), torch.tensor([teacher])
    assert kl_loss(s, t, temperature=2.0).item() == pytest.approx(_kl(p_t, p_s), rel=1e-6)
    assert kl_loss(s, t, temperature=2.0, direction="reverse").item() == pytest.approx(
        _kl(p_s, p_t), rel=1e-6)
    assert jsd_loss(s, t, temperature=2.0, beta=0.3).item() == pytest.approx(
        0.3 * _kl(p_t, m) + 0.7 * _kl(p_s, m), rel=1e-5)


def test_kl_and_jsd_argument_errors():
    student, teacher, mask = make_inputs()
    with pytest.raises(ValueError, match="direction"):
        kl_loss(student, teacher, mask, direction="both")
    for beta in (0.0, 1.0):
        with pytest.raises(ValueError, match="beta"):
            jsd_loss(student, teacher, mask, beta=beta)


def test_ce_loss_matches_torch_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 11, generator=g)
    labels = torch.randint(0, 11, (2, 5), generator=g)
    labels[0, :2] = -100
    expected = F.cross_entropy(logits.view(-1, 11), labels.view(-1), ignore_index=-100)
    torch.testing.assert_close(ce_loss(logits, labels), expected)
    assert ce_loss(logits.bfloat16(), labels).dtype == torch.float32


def test_ce_loss_all_ignored_is_zero_with_zero_grad():
    logits = torch.randn(2, 3, 7, requires_grad=True)
    value = ce_loss(logits, torch.full((2, 3), -100))
    value.backward()
    assert value.item() == 0.0 and torch.count_nonzero(logits.grad) == 0


def test_ce_loss_errors():
    with pytest.raises(ValueError, match="labels"):
        ce_loss(torch.randn(2, 3, 7), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="logits.*non-finite"):
        ce_loss(torch.full((1, 3), float("nan")), torch.zeros(1, dtype=torch.long))


def test_masked_mean():
    values = torch.tensor([1.0, float("nan"), 3.0])
    assert masked_mean(values, torch.tensor([True, False, True])).item() == 2.0
    assert masked_mean(values, torch.zeros(3, dtype=torch.bool)).item() == 0.0
    assert masked_mean(torch.ones(0)).item() == 0.0
    with pytest.raises(ValueError, match="mask"):
        masked_mean(values, torch.ones(2, dtype=torch.bool))


# --- benchmark script -----------------------------------------------------------------------


def test_losses_benchmark_quick_runs(tmp_path):
    from benchmarks.losses import main

    out = tmp_path / "x.json"
    main(["--quick", "--json", str(out)])
    cases = json.loads(out.read_text())["cases"]
    assert len(cases) == 4
    for case in cases:
        assert case["dbild_ms"] > 0 and case["kl_ms"] > 0
        assert case["dbild_peak_mb"] >= 0 and case["kl_peak_mb"] >= 0
