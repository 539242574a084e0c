"""Save and resume a training run: student weights, optimizer, scheduler, step, config.

A checkpoint folder holds

* ``model.safetensors``: the student's weights (safetensors, never pickle);
* ``optimizer.pt``: optimizer + LR-scheduler state, loaded with ``weights_only=True``;
* ``state.json``: the step, the samples seen, the cost counters and the resolved config.

Data order and switch-row sampling are pure functions of ``(run.seed, step)``, so the step is
all the RNG state a resume needs. Folders are written to a temporary sibling and renamed, so a
killed run never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from switchkd.config import Config, from_flat_dict, to_flat_dict

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.json"


class CheckpointError(RuntimeError):
    """A checkpoint folder is missing, incomplete, corrupt, or belongs to another config."""


@dataclass
class TrainState:
    step: int
    samples: int
    counters: dict[str, float]


def save_checkpoint(directory: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, state: TrainState, cfg: Config) -> str:
    """Write a checkpoint atomically into ``directory`` (replacing an older one there)."""
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".ckpt-", dir=parent)
    try:
        save_model(model, os.path.join(tmp, MODEL_FILE))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                   os.path.join(tmp, OPTIMIZER_FILE))
        with open(os.path.join(tmp, STATE_FILE), "w") as f:
            json.dump({"step": state.step, "samples": state.samples, "counters": state.counters,
                       "config": to_flat_dict(cfg)}, f, indent=2)
        if os.path.exists(directory):
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_checkpoint(directory: str, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any = None) -> tuple[TrainState, Config]:
    """Restore ``model`` (and optimizer/scheduler when given) from ``directory``.

    Raises:
        CheckpointError: naming the file that is missing or cannot be read.
    """
    for name in (MODEL_FILE, STATE_FILE) + ((OPTIMIZER_FILE,) if optimizer is not None else ()):
        if not os.path.isfile(os.path.join(directory, name)):
            raise CheckpointError(f"checkpoint {directory!r} is incomplete: {name} is missing")
    state_path = os.path.join(directory, STATE_FILE)
    try:
        with open(state_path) as f:
            raw = json.load(f)
        cfg = from_flat_dict(raw["config"])
        state = TrainState(step=int(raw["step"]), samples=int(raw["samples"]),
                           counters=dict(raw["counters"]))
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"cannot read {state_path}: {err}") from err
    model_path = os.path.join(directory, MODEL_FILE)
    try:
        missing, unexpected = load_model(model, model_path, strict=False)
    except (SafetensorError, OSError, RuntimeError) as err:
        raise CheckpointError(f"cannot load weights from {model_path}: {err}") from err
    if unexpected or [k for k in missing if not _is_tied(model, k)]:
        raise CheckpointError(f"{model_path} does not match the model: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    if optimizer is not None:
        opt_path = os.path.join(directory, OPTIMIZER_FILE)
        try:
            blob = torch.load(opt_path, map_location="cpu", weights_only=True)
            optimizer.load_state_dict(blob["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(blob["scheduler"])
        except Exception as err:  # torch raises several unrelated types for a bad pickle
            raise CheckpointError(f"cannot load optimizer state from {opt_path}: {err}") from err
    return state, cfg


def _is_tied(model: torch.nn.Module, key: str) -> bool:
    """Tied weights (LM head = embeddings) are stored once; the copy is reported missing."""
    return key.endswith("lm_head.weight")
