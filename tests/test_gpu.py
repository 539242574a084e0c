"""CUDA checks (run on a GPU machine; skipped elsewhere)."""

import dataclasses

import pytest
import torch

from switchkd.config import LossConfig
from switchkd.step import distill_step
from switchkd.train import autocast
from switchkd.presets import tiny

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_tiny_switchkd_step_on_cuda_bf16_matches_cpu(tiny_models, tiny_batch):
    """The same step on CUDA under bf16 autocast is finite and close to the fp32 CPU loss."""
    teacher, student = tiny_models
    cfg = LossConfig(window=16, k_min=2, k_max=8)
    cpu = distill_step(student, teacher, tiny_batch, cfg).parts
    device = torch.device("cuda")
    teacher, student, batch = teacher.to(device), student.to(device), tiny_batch.to(device)
    with autocast(dataclasses.replace(tiny(), run=dataclasses.replace(tiny().run, device="cuda",
                                                                       precision="auto")), device):
        out = distill_step(student, teacher, batch, cfg)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert out.parts["ce_loss"].item() == pytest.approx(cpu["ce_loss"].item(), rel=0.05)
    assert all(p.grad is None for p in teacher.parameters())
