"""Invariants of the three-pass Switch-KD step (METHOD.md sections 2-3)."""

import dataclasses

import pytest
import torch

from switchkd.config import DISTILL_LOSSES, LossConfig
from switchkd.models.build import copy_vision_encoder
from switchkd.step import distill_step, switch_rows

LOSS = LossConfig(window=16, k_min=2, k_max=8)


def _no_grad(params):
    return all(p.grad is None or not p.grad.any() for p in params)


def test_teacher_reference_pass_builds_no_graph(tiny_models, tiny_batch):
    """The teacher's own pass runs under no_grad: its logits carry no autograd graph."""
    teacher, student = tiny_models
    seen = []
    handle = teacher.register_forward_hook(lambda m, i, out: seen.append(out.logits))
    distill_step(student, teacher, tiny_batch, LOSS)
    handle.remove()
    assert len(seen) == 1 and seen[0].grad_fn is None and not seen[0].requires_grad


def test_teacher_stays_bit_identical_and_gradient_free(tiny_models, tiny_batch):
    """Several optimizer steps change the student but not one bit of the teacher."""
    teacher, student = tiny_models
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student_before = [p.clone() for p in student.parameters()]
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-2)
    for _ in range(3):
        optimizer.zero_grad()
        distill_step(student, teacher, tiny_batch, LOSS).loss.backward()
        optimizer.step()
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in teacher.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(student_before, student.parameters()))


def test_vsd_gradient_reaches_only_the_student_vision_encoder(tiny_models, tiny_batch):
    """With CE and Align off, only V_S gets gradient (through the frozen P_T and L_T)."""
    teacher, student = tiny_models
    batch = dataclasses.replace(tiny_batch, labels=torch.full_like(tiny_batch.labels, -100))
    cfg = dataclasses.replace(LOSS, align_weight=0.0, vsd_weight=1.0, kd_positions="all")
    out = distill_step(student, teacher, batch, cfg)
    out.loss.backward()
    assert out.parts["vsd_loss"] > 0
    vision_grads = [p.grad for p in student.vision_parameters() if p.requires_grad]
    assert all(g is not None for g in vision_grads) and any(g.abs().sum() > 0 for g in vision_grads)
    assert _no_grad(student.projector_parameters())
    assert _no_grad(student.language_parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_align_gradient_reaches_the_whole_student(tiny_models, tiny_batch):
    teacher, student = tiny_models
    batch = dataclasses.replace(tiny_batch, labels=torch.full_like(tiny_batch.labels, -100))
    cfg = dataclasses.replace(LOSS, align_weight=1.0, vsd_weight=0.0, kd_positions="all")
    distill_step(student, teacher, batch, cfg).loss.backward()
    for params in (student.vision_parameters(), student.projector_parameters(),
                   student.language_parameters()):
        assert not _no_grad(params)


def test_vsd_is_exactly_zero_when_student_vision_is_the_teachers(tiny_models, tiny_batch):
    teacher, student = tiny_models
    copy_vision_encoder(teacher, student)
    out = distill_step(student, teacher, tiny_batch, LOSS)
    assert out.parts["vsd_loss"].item() == 0.0
    assert out.parts["align_loss"].item() > 0.0


def test_switch_ratio_zero_runs_no_switch_pass(tiny_models, tiny_batch, monkeypatch):
    teacher, student = tiny_models
    calls = []
    original = teacher.lm_logits
    monkeypatch.setattr(teacher, "lm_logits", lambda *a, **k: calls.append(1) or original(*a, **k))
    out = distill_step(student, teacher, tiny_batch, dataclasses.replace(LOSS, switch_ratio=0.0))
    assert len(calls) == 1  # the reference pass only
    assert "vsd_loss" not in out.parts
    assert (out.teacher_forward_passes, out.teacher_backward_passes) == (1, 0)
    calls.clear()
    out = distill_step(student, teacher, tiny_batch, LOSS)
    assert len(calls) == 2
    assert (out.teacher_forward_passes, out.teacher_backward_passes) == (2, 1)


def test_switch_rows_fraction():
    generator = torch.Generator().manual_seed(0)
    assert switch_rows(8, 1.0, generator).tolist() == list(range(8))
    rows = switch_rows(8, 0.25, generator)
    assert len(rows) == 2 and len(set(rows.tolist())) == 2
    assert len(switch_rows(8, 0.01, generator)) == 1


def test_sft_without_teacher_is_plain_cross_entropy(tiny_models, tiny_batch):
    _, student = tiny_models
    out = distill_step(student, None, tiny_batch, LOSS)
    assert set(out.parts) == {"ce_loss", "loss"}
    assert torch.equal(out.parts["ce_loss"], out.parts["loss"])
    assert out.teacher_forward_passes == 0


def test_loss_is_the_weighted_sum_of_its_parts(tiny_models, tiny_batch):
    teacher, student = tiny_models
    cfg = dataclasses.replace(LOSS, align_weight=0.3, vsd_weight=2.0)
    p = distill_step(student, teacher, tiny_batch, cfg).parts
    expected = p["ce_loss"] + 0.3 * p["align_loss"] + 2.0 * p["vsd_loss"]
    torch.testing.assert_close(p["loss"], expected)


@pytest.mark.parametrize("kind", DISTILL_LOSSES)
def test_every_distillation_loss_is_selectable(tiny_models, tiny_batch, kind):
    teacher, student = tiny_models
    out = distill_step(student, teacher, tiny_batch, dataclasses.replace(LOSS, kind=kind),
                       diagnostics=True)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.parts["align_loss"] > 0
    assert 0.0 <= out.parts["top1_agreement"] <= 1.0
    if kind == "dbild":
        assert 2 <= out.parts["k_teacher_mean"] <= 8 and 2 <= out.parts["k_student_mean"] <= 8


def test_teacher_activation_checkpointing_gives_the_same_gradients(tiny_models, tiny_batch):
    teacher, student = tiny_models
    grads = []
    for use_checkpoint in (False, True):
        student.zero_grad()
        distill_step(student, teacher, tiny_batch, LOSS,
                     teacher_checkpointing=use_checkpoint).loss.backward()
        grads.append([p.grad.clone() for p in student.vision_parameters() if p.requires_grad])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
