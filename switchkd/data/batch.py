"""The model-ready batch every data source collates into."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class Batch:
    """One padded batch.

    Shapes: B samples, T text positions (the N ``<image>`` placeholders included).

    * ``pixel_values`` (B, 3, H, W) float32, SigLIP-normalised to [-1, 1]
    * ``input_ids`` (B, T) int64, right-padded with the pad id
    * ``attention_mask`` (B, T) int64, 1 = real token
    * ``labels`` (B, T) int64, aligned with ``input_ids`` (NOT shifted); -100 = not supervised.
      The answer tokens and their ``<eos>`` carry their own id. The loss code shifts:
      logits at position t predict ``labels[t + 1]``.
    """

    pixel_values: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(**{f.name: getattr(self, f.name).to(device, non_blocking=True)
                        for f in fields(self)})

    def select(self, index: torch.Tensor | slice) -> "Batch":
        """The sub-batch of the samples at ``index`` (rows)."""
        return Batch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})
