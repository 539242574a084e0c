"""The learning-rate schedule shared by every training loop (teacher, student, pretraining stages)."""

from __future__ import annotations

import math

import torch


def make_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, max_steps: int,
                   min_lr_ratio: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to the base LR, then cosine decay to ``min_lr_ratio`` of it."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
