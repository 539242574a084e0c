"""One Switch-KD training step: three forward passes, one weighted objective.

``distill_step`` is the ONLY place the losses are weighted and summed (METHOD.md section 3)::

    L = CE(z_S, y) + align_weight * D(z_T, z_S) + vsd_weight * D(z_T, z_Switch)

    z_T      = L_T(P_T(V_T(x)))   teacher reference pass, torch.no_grad()
    z_S      = L_S(P_S(V_S(x)))   student pass
    z_Switch = L_T(P_T(V_S(x)))   visual-switch pass: frozen teacher, autograd ON, so the
                                  gradient reaches V_S (and only V_S) through P_T and L_T

``z_T`` does not depend on the student, so it may instead come from ``switchkd.teacher_cache``
(``teacher_answer_logits``); the switch pass always runs live.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from switchkd.config import LossConfig
from switchkd.data.batch import Batch
from switchkd.losses import bild_loss, ce_loss, dbild_loss, jsd_loss, kl_loss, kneedle_k
from switchkd.models.vlm import VLM


@dataclass
class StepOutput:
    """``loss`` carries the graph; ``parts`` are detached scalars named ``*_loss`` (+ diagnostics)."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor]
    teacher_forward_passes: int = 0
    teacher_backward_passes: int = 0


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      mask: torch.Tensor, cfg: LossConfig) -> torch.Tensor:
    """The divergence ``D`` chosen by ``cfg.kind``, used for both the Align and the VSD term.

    Shapes: student_logits, teacher_logits (B, T, V); mask (B, T) bool -> scalar float32.
    """
    if cfg.kind == "dbild":
        return dbild_loss(student_logits, teacher_logits, mask, temperature=cfg.temperature,
                          window=cfg.window, k_min=cfg.k_min, k_max=cfg.k_max,
                          fixed_k=cfg.fixed_k, divergence=cfg.divergence,
                          directions=cfg.directions)
    if cfg.kind == "bild":
        return bild_loss(student_logits, teacher_logits, mask, top_k=cfg.bild_top_k,
                         temperature=cfg.temperature)
    if cfg.kind == "kl":
        return kl_loss(student_logits, teacher_logits, mask, temperature=cfg.temperature,
                       direction="forward")
    if cfg.kind == "reverse_kl":
        return kl_loss(student_logits, teacher_logits, mask, temperature=cfg.temperature,
                       direction="reverse")
    if cfg.kind == "jsd":
        return jsd_loss(student_logits, teacher_logits, mask, temperature=cfg.temperature,
                        beta=cfg.jsd_beta)
    raise ValueError(f"loss.kind: unknown distillation loss {cfg.kind!r}")


def switch_rows(batch_size: int, ratio: float, generator: torch.Generator | None) -> torch.Tensor:
    """Indices of the samples that take the switch pass: ``round(ratio * B)`` of them, at least
    one when ``ratio > 0``, chosen uniformly without replacement (all rows when ``ratio == 1``)."""
    if ratio >= 1.0:
        return torch.arange(batch_size)
    count = max(1, round(ratio * batch_size))
    return torch.randperm(batch_size, generator=generator)[:count].sort().values


def kd_positions(batch: Batch, cfg: LossConfig) -> torch.Tensor:
    """Which next-token positions the KD terms average over: answer tokens (labels != -100
    after the causal shift) or, with ``kd_positions="all"``, every non-pad position (prompt
    and image positions included; METHOD.md section 3, a choice).

    Shapes: -> (B, T-1) bool.
    """
    if cfg.kd_positions == "answer":
        return batch.labels[:, 1:] != -100
    return batch.attention_mask[:, 1:].bool()


def distill_step(student: torch.nn.Module, teacher: VLM | None, batch: Batch, cfg: LossConfig,
                 *, generator: torch.Generator | None = None,
                 teacher_checkpointing: bool = False,
                 diagnostics: bool = False,
                 teacher_answer_logits: torch.Tensor | None = None) -> StepOutput:
    """Compute the Switch-KD objective for one batch (METHOD.md sections 2-3).

    Args:
        student: the student ``VLM`` (possibly DDP-wrapped); its forward returns logits and
            ``V_S(x)``.
        teacher: the frozen teacher ``VLM``, or ``None`` for the SFT baseline (CE only).
        batch: a collated ``Batch``.
        cfg: the loss settings (weights, divergence, DBiLD knobs, switch ratio).
        generator: seeds the choice of switch rows when ``switch_ratio < 1``.
        teacher_checkpointing: recompute the teacher LM during backward instead of storing
            its activations in the switch pass (memory for compute).
        diagnostics: also return Kneedle-k statistics and teacher-student top-1 agreement.
        teacher_answer_logits: cached teacher logits at this batch's answer positions
            (``switchkd.teacher_cache``), shape (n, V), in the row-major order of
            ``batch.labels[:, 1:] != -100``. When given, the teacher reference pass is skipped
            and only the switch pass runs the teacher. Needs ``kd_positions="answer"``.

    Raises:
        ValueError: ``teacher_answer_logits`` with ``kd_positions="all"``, or with a row count
            other than the batch's answer positions.
    """
    out = student(batch.pixel_values, batch.input_ids, batch.attention_mask)
    s_logits = out.logits[:, :-1]  # (B, T-1, V): position t predicts token t+1
    targets = batch.labels[:, 1:]  # (B, T-1)
    ce = ce_loss(s_logits, targets)
    parts = {"ce_loss": ce.detach()}
    loss = ce
    use_align = teacher is not None and cfg.align_weight > 0
    use_vsd = teacher is not None and cfg.vsd_weight > 0 and cfg.switch_ratio > 0
    forwards = backwards = 0
    if use_align or use_vsd:
        mask = kd_positions(batch, cfg)  # (B, T-1)
        cached = teacher_answer_logits is not None
        if cached:
            # The reference pass was run once, offline: its logits at the masked positions.
            t_answer = _checked_cache_rows(teacher_answer_logits, mask, cfg)  # (n, V)
        else:
            with torch.no_grad():
                t_logits = teacher(batch.pixel_values, batch.input_ids,
                                   batch.attention_mask).logits[:, :-1]  # (B, T-1, V)
            forwards += 1
        if use_align:
            if cached:  # the same positions, pre-selected: the losses average over rows alike
                align = distillation_loss(s_logits[mask], t_answer, None, cfg)
            else:
                align = distillation_loss(s_logits, t_logits, mask, cfg)
            parts["align_loss"] = align.detach()
            loss = loss + cfg.align_weight * align
        if use_vsd:
            rows = switch_rows(len(batch), cfg.switch_ratio, generator).to(s_logits.device)
            sw_logits = switch_logits(teacher, out.vision_features[rows], batch.input_ids[rows],
                                      batch.attention_mask[rows], teacher_checkpointing)
            if cached:  # rows are sorted, so the kept positions stay in row-major order
                of_switch_row = torch.isin(mask.nonzero()[:, 0], rows)  # (n,)
                vsd = distillation_loss(sw_logits[:, :-1][mask[rows]], t_answer[of_switch_row],
                                        None, cfg)
            else:
                vsd = distillation_loss(sw_logits[:, :-1], t_logits[rows], mask[rows], cfg)
            parts["vsd_loss"] = vsd.detach()
            loss = loss + cfg.vsd_weight * vsd
            forwards += 1
            backwards += 1
        if diagnostics:
            if cached:
                parts.update(_diagnostics(s_logits.detach()[mask], t_answer,
                                          mask.new_ones(len(t_answer)), cfg))
            else:
                parts.update(_diagnostics(s_logits.detach(), t_logits, targets != -100, cfg))
    parts["loss"] = loss.detach()
    return StepOutput(loss=loss, parts=parts, teacher_forward_passes=forwards,
                      teacher_backward_passes=backwards)


def _checked_cache_rows(teacher_answer_logits: torch.Tensor, mask: torch.Tensor,
                        cfg: LossConfig) -> torch.Tensor:
    """Cached teacher rows, checked against the batch's KD mask.

    Shapes: teacher_answer_logits (n, V), mask (B, T-1) with n True entries -> (n, V).
    """
    if cfg.kd_positions != "answer":
        raise ValueError("teacher_answer_logits holds answer positions only; it needs "
                         f"loss.kd_positions='answer', got {cfg.kd_positions!r}")
    n = int(mask.sum())
    if teacher_answer_logits.dim() != 2 or teacher_answer_logits.shape[0] != n:
        raise ValueError(f"teacher_answer_logits has shape {tuple(teacher_answer_logits.shape)}"
                         f" but the batch has {n} answer positions; expected ({n}, V)")
    return teacher_answer_logits


def switch_logits(teacher: VLM, student_vision: torch.Tensor, input_ids: torch.Tensor,
                  attention_mask: torch.Tensor, use_checkpoint: bool = False) -> torch.Tensor:
    """The switch pass ``L_T(P_T(V_S(x)))`` (METHOD.md section 2) with autograd on: the
    teacher's weights are frozen, not the graph, so only ``V_S`` receives a gradient.

    Shapes: student_vision (b, N, D_vis), input_ids (b, T) -> (b, T, V).
    """
    def switch_pass(features: torch.Tensor) -> torch.Tensor:
        return teacher.lm_logits(input_ids, teacher.project(features), attention_mask)

    if use_checkpoint:
        return checkpoint(switch_pass, student_vision, use_reentrant=False)
    return switch_pass(student_vision)


def _diagnostics(s_logits: torch.Tensor, t_logits: torch.Tensor, answer_mask: torch.Tensor,
                 cfg: LossConfig) -> dict[str, torch.Tensor]:
    """Kneedle k on both DBiLD branches and top-1 agreement on answer tokens (detached)."""
    stats = {}
    s_rows, t_rows = s_logits[answer_mask], t_logits[answer_mask]  # (n, V)
    if s_rows.shape[0] == 0:
        return stats
    stats["top1_agreement"] = (s_rows.argmax(-1) == t_rows.argmax(-1)).float().mean()
    if cfg.kind == "dbild" and cfg.fixed_k is None:
        for name, rows in (("k_teacher", t_rows), ("k_student", s_rows)):
            k = kneedle_k(rows.float(), window=cfg.window, k_min=cfg.k_min,
                          k_max=cfg.k_max).float()
            stats[f"{name}_mean"] = k.mean()
            stats[f"{name}_std"] = k.std(unbiased=False)
    return stats
