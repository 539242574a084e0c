"""The VLM adapter: the small surface Switch-KD needs over a Hugging Face LLaVA model.

All poking at ``transformers`` internals lives in this module. A VLM is ``(V, P, L)``
(METHOD.md section 1): vision encoder, projector, language model with head. The adapter
exposes each part separately so the visual-switch pass ``L_T(P_T(V_S(x)))`` can be composed
from two models.

Shapes: B batch, T text positions (image placeholders included), N visual tokens,
D_vis vision width, D text width, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from transformers import LlavaForConditionalGeneration


@dataclass
class VLMOutput:
    logits: torch.Tensor  # (B, T, V)
    vision_features: torch.Tensor  # (B, N, D_vis), V(x) before the projector


class VLM(nn.Module):
    """A ``LlavaForConditionalGeneration`` seen as three composable parts.

    ``forward`` runs the whole model and also returns the vision features, so the student's
    ``V_S(x)`` is computed once and reused by the switch pass.
    """

    def __init__(self, hf: LlavaForConditionalGeneration):
        super().__init__()
        self.hf = hf
        # Vision layers after the selected one (and SigLIP's post-layernorm/head) never reach
        # the output; freezing them keeps DDP from waiting for gradients that never come.
        for param in self._unused_vision_parameters():
            param.requires_grad_(False)

    def _unused_vision_parameters(self) -> Iterator[nn.Parameter]:
        tower = self.vision_tower
        layers = tower.encoder.layers
        selected = self.hf.config.vision_feature_layer % (len(layers) + 1)  # hidden_states index
        for layer in layers[selected:]:
            yield from layer.parameters()
        for name in ("post_layernorm", "head"):
            module = getattr(tower, name, None)
            if module is not None:
                yield from module.parameters()

    # --- facts about the model -------------------------------------------------------------

    @property
    def config(self):
        return self.hf.config

    @property
    def image_token_id(self) -> int:
        return self.hf.config.image_token_id

    @property
    def vocab_size(self) -> int:
        return self.hf.get_output_embeddings().weight.shape[0]

    @property
    def vision_width(self) -> int:
        """Output width of V (``D_vis``)."""
        return self.hf.config.vision_config.hidden_size

    @property
    def projector_in_width(self) -> int:
        """Input width of P: what V must produce for this model's projector to accept it."""
        return self.hf.model.multi_modal_projector.linear_1.in_features

    @property
    def image_size(self) -> int:
        return self.hf.config.vision_config.image_size

    @property
    def num_image_tokens(self) -> int:
        vision = self.hf.config.vision_config
        return (vision.image_size // vision.patch_size) ** 2

    @property
    def vision_tower(self) -> nn.Module:
        return self.hf.model.vision_tower

    @property
    def projector(self) -> nn.Module:
        return self.hf.model.multi_modal_projector

    @property
    def language_model(self) -> nn.Module:
        return self.hf.model.language_model

    def vision_parameters(self) -> Iterator[nn.Parameter]:
        return self.vision_tower.parameters()

    def projector_parameters(self) -> Iterator[nn.Parameter]:
        return self.projector.parameters()

    def language_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.language_model.parameters()
        head = self.hf.get_output_embeddings()
        shared = {id(p) for p in self.language_model.parameters()}
        yield from (p for p in head.parameters() if id(p) not in shared)

    # --- the three parts ------------------------------------------------------------------

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """V(x): hidden states of the configured vision layer (before any post-layernorm).

        Shapes: pixel_values (B, 3, H, W) -> (B, N, D_vis).
        """
        layer = self.hf.config.vision_feature_layer
        outputs = self.vision_tower(pixel_values, output_hidden_states=True, return_dict=True)
        features = outputs.hidden_states[layer]  # (B, N', D_vis)
        if self.hf.config.vision_feature_select_strategy == "default":
            features = features[:, 1:]  # CLIP-style towers: drop CLS
        return features  # (B, N, D_vis)

    def project(self, vision_features: torch.Tensor) -> torch.Tensor:
        """P(v): the 2-layer GELU MLP. Shapes: (B, N, D_vis) -> (B, N, D)."""
        return self.projector(vision_features)

    def lm_logits(self, input_ids: torch.Tensor, image_embeds: torch.Tensor,
                  attention_mask: torch.Tensor | None = None, *,
                  last_position_only: bool = False) -> torch.Tensor:
        """L(P(v), x_txt): splice ``image_embeds`` at the ``<image>`` positions, run LM + head.

        Shapes: input_ids (B, T) with exactly N image-token positions per row,
        image_embeds (B, N, D), attention_mask (B, T) -> logits (B, T, V), or (B, 1, V) with
        ``last_position_only`` (decoding: the head is most of the cost at small widths).

        Raises:
            ValueError: the number of ``<image>`` positions differs from the number of features.
        """
        text_embeds = self.hf.get_input_embeddings()(input_ids)  # (B, T, D)
        image_positions = input_ids == self.image_token_id  # (B, T)
        if int(image_positions.sum()) != image_embeds.shape[0] * image_embeds.shape[1]:
            raise ValueError(
                f"{int(image_positions.sum())} <image> positions in input_ids but "
                f"{image_embeds.shape[0] * image_embeds.shape[1]} image features "
                f"({image_embeds.shape[0]} images x {image_embeds.shape[1]} tokens)")
        spliced = text_embeds.masked_scatter(
            image_positions.unsqueeze(-1).expand_as(text_embeds),
            image_embeds.to(text_embeds.dtype))  # (B, T, D)
        # Positions count real tokens only, so left- and right-padded rows get the same
        # positions as their unpadded selves (HF would otherwise number pads too).
        position_ids = None
        if attention_mask is not None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)  # (B, T)
        hidden = self.language_model(inputs_embeds=spliced, attention_mask=attention_mask,
                                     position_ids=position_ids,
                                     use_cache=False).last_hidden_state  # (B, T, D)
        if last_position_only:
            hidden = hidden[:, -1:]  # (B, 1, D)
        return self.hf.get_output_embeddings()(hidden)  # (B, T, V)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> VLMOutput:
        """The model's own pass ``L(P(V(x)), x_txt)``, also returning ``V(x)``."""
        vision_features = self.encode_image(pixel_values)  # (B, N, D_vis)
        logits = self.lm_logits(input_ids, self.project(vision_features), attention_mask)
        return VLMOutput(logits=logits, vision_features=vision_features)
