"""The optimisation loop shared by the teacher's pretraining stages (vision and language)."""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch

from switchkd.schedule import make_scheduler


def run_pretraining(name: str, params: Sequence[torch.nn.Parameter],
                    loss_at: Callable[[int], torch.Tensor],
                    *, steps: int, lr: float, warmup_steps: int, weight_decay: float,
                    log_every: int = 0) -> tuple[float, float]:
    """Minimise ``loss_at(step)`` over ``params`` for ``steps`` steps; return (final loss, seconds).

    AdamW, linear warmup then cosine decay to 0, gradient-norm clipping at 1.0. A non-finite loss
    stops with an error naming ``name`` and the step.
    """
    params = list(params)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    scheduler = make_scheduler(optimizer, warmup_steps, steps, min_lr_ratio=0.0)
    start = time.perf_counter()
    loss = torch.tensor(float("nan"))
    for step in range(steps):
        loss = loss_at(step)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{name}: non-finite loss {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"[{name}] step {step + 1}/{steps} loss {loss.item():.4f} "
                  f"({time.perf_counter() - start:.0f}s)", flush=True)
    return float(loss.detach()), time.perf_counter() - start
