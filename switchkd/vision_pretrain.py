"""Pretrain a VLM's vision encoder on dense per-token labels (the stand-in for SigLIP pretraining).

In the paper, teacher and student share a pretrained SigLIP. Ours are built from config, and a
from-scratch encoder trained only through the language model's CE learned global image
statistics but not objects or text (issue #5). ``pretrain_vision`` trains ``V`` with one linear
head per label kind (``switchkd.data.grid_labels``): each visual token predicts the shape, colour
and scene-text character centred in its grid cell. The heads are discarded afterwards; only the
encoder's weights carry over into the teacher (and, through ``student_vision_init=teacher``,
into every student).

Shapes: B images, N = G * G visual tokens, D_vis vision width, C classes of one label kind.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from switchkd.config import VisionPretrainConfig
from switchkd.data.assets import Assets, load_assets
from switchkd.data.collate import normalize_pixels
from switchkd.data.grid_labels import LABEL_CLASSES, GridBatch, grid_batch
from switchkd.models.vlm import VLM
from switchkd.pretrain_loop import run_pretraining

PROBE_IMAGES = 1000  # held-out generated scenes (their own seed stream) for the accuracies


def _tensors(batch: GridBatch, device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Images normalised like the collator's (mean 0.5, std 0.5): (B, 3, S, S); labels (B, N)."""
    images = torch.from_numpy(batch.images).to(device).permute(0, 3, 1, 2).float()  # (B, 3, S, S)
    labels = {name: torch.from_numpy(value).to(device) for name, value in batch.labels.items()}
    return normalize_pixels(images), labels


def _grid_side(vlm: VLM) -> int:
    side = math.isqrt(vlm.num_image_tokens)
    if side * side != vlm.num_image_tokens:
        raise ValueError(f"vision pretraining needs a square token grid, got {vlm.num_image_tokens}")
    return side


@torch.no_grad()
def probe_accuracy(vlm: VLM, heads: nn.ModuleDict, batch: GridBatch,
                   device: torch.device) -> dict[str, float]:
    """Per label kind: accuracy (%) on cells holding something, and on empty cells."""
    images, labels = _tensors(batch, device)
    features = vlm.encode_image(images)  # (B, N, D_vis)
    out = {}
    for name, head in heads.items():
        pred = head(features.float()).argmax(-1)  # (B, N)
        target = labels[name]
        filled = target > 0
        out[f"vision_pretrain/{name}_acc"] = 100.0 * float(
            (pred == target)[filled].float().mean()) if filled.any() else float("nan")
        out[f"vision_pretrain/{name}_empty_acc"] = 100.0 * float(
            (pred == 0)[~filled].float().mean()) if (~filled).any() else float("nan")
    return out


def pretrain_vision(vlm: VLM, cfg: VisionPretrainConfig, *, seed: int, device: torch.device,
                    assets: Assets | None = None, log_every: int = 0) -> dict[str, Any]:
    """Train ``vlm``'s vision encoder in place for ``cfg.steps`` steps; return probe accuracies.

    Every step draws a fresh batch of labelled scenes (deterministic in ``seed`` and the step),
    so the encoder never sees an image twice. AdamW with warmup and cosine decay; the loss is
    the sum over label kinds of the mean per-token cross-entropy.
    """
    assets = assets or load_assets()
    side, size = _grid_side(vlm), vlm.image_size
    width = vlm.vision_width
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        heads = nn.ModuleDict({name: nn.Linear(width, classes)
                               for name, classes in LABEL_CLASSES.items()}).to(device)
    params = [p for p in vlm.vision_parameters() if p.requires_grad] + list(heads.parameters())
    tower = vlm.vision_tower
    was_training = tower.training
    tower.train()

    def loss_at(step: int) -> torch.Tensor:
        batch = grid_batch(assets, size=size, grid=side, n=cfg.batch_size, seed=seed, index=step,
                           sign_fraction=cfg.sign_fraction)
        images, labels = _tensors(batch, device)
        features = vlm.encode_image(images)  # (B, N, D_vis)
        return sum(F.cross_entropy(head(features).flatten(0, 1), labels[name].flatten())
                   for name, head in heads.items())

    final_loss, seconds = run_pretraining("vision pretraining", params, loss_at, steps=cfg.steps,
                                          lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                                          weight_decay=0.01, log_every=log_every)
    tower.train(was_training)
    probe = grid_batch(assets, size=size, grid=side, n=PROBE_IMAGES, seed=seed + 1_000_003,
                       index=0, sign_fraction=cfg.sign_fraction)
    return {"vision_pretrain/steps": cfg.steps, "vision_pretrain/final_loss": final_loss,
            "vision_pretrain/seconds": seconds,
            **probe_accuracy(vlm, heads, probe, device)}
