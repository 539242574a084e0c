"""Build the teacher and student VLMs from config (random init) or from local HF folders.

Also the pair preflight (METHOD.md section 1 requirements) and ``freeze`` (the one place the
teacher is frozen).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (LlavaConfig, LlavaForConditionalGeneration, Qwen2Config,
                          SiglipVisionConfig)

from switchkd.config import VLMConfig
from switchkd.models.vlm import VLM


class PairMismatchError(ValueError):
    """The teacher and student cannot be paired for Switch-KD; the message says which numbers differ."""


def hf_config(cfg: VLMConfig, *, vocab_size: int, image_token_id: int, pad_token_id: int,
              bos_token_id: int, eos_token_id: int) -> LlavaConfig:
    """The ``LlavaConfig`` (SigLIP vision tower + Qwen2 text model) for a ``VLMConfig``."""
    vision = SiglipVisionConfig(
        hidden_size=cfg.vision.hidden_size,
        intermediate_size=cfg.vision.intermediate_size,
        num_hidden_layers=cfg.vision.num_layers,
        num_attention_heads=cfg.vision.num_heads,
        image_size=cfg.vision.image_size,
        patch_size=cfg.vision.patch_size,
        num_channels=3,
        vision_use_head=False,  # LLaVA reads hidden states; the pooling head would be dead weight
    )
    text = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=cfg.text.hidden_size,
        intermediate_size=cfg.text.intermediate_size,
        num_hidden_layers=cfg.text.num_layers,
        num_attention_heads=cfg.text.num_heads,
        num_key_value_heads=cfg.text.num_kv_heads,
        max_position_embeddings=cfg.text.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        vision_feature_select_strategy="full",
        vision_feature_layer=cfg.vision_feature_layer,
        projector_hidden_act="gelu",
        image_seq_length=cfg.vision.num_image_tokens,
        tie_word_embeddings=True,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
    )


def build_vlm(cfg: VLMConfig, *, vocab_size: int, image_token_id: int, pad_token_id: int = 0,
              bos_token_id: int = 2, eos_token_id: int = 3, seed: int = 0) -> VLM:
    """A VLM from ``cfg``: loaded from ``cfg.path`` if set, else built with seeded random init."""
    if cfg.path is not None:
        return load_vlm(cfg.path)
    config = hf_config(cfg, vocab_size=vocab_size, image_token_id=image_token_id,
                       pad_token_id=pad_token_id, bos_token_id=bos_token_id,
                       eos_token_id=eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hf = LlavaForConditionalGeneration(config)
    hf.generation_config.pad_token_id = pad_token_id
    hf.generation_config.eos_token_id = eos_token_id
    hf.generation_config.bos_token_id = bos_token_id
    return VLM(hf)


def load_vlm(path: str) -> VLM:
    """Load a local ``LlavaForConditionalGeneration`` folder (safetensors; never a hub id)."""
    hf = LlavaForConditionalGeneration.from_pretrained(path, local_files_only=True,
                                                       use_safetensors=True)
    return VLM(hf)


def freeze(module: nn.Module) -> nn.Module:
    """Freeze ``module`` in place: no parameter requires grad, and it stays in eval mode.

    ``.train()`` on the module (or on a parent holding it) is turned into a no-op that keeps
    eval mode, so dropout/norm statistics of the teacher can never change.
    """
    module.requires_grad_(False)
    module.eval()
    for sub in module.modules():
        sub.train = _eval_only(sub)
    return module


def _eval_only(module: nn.Module):
    def train(mode: bool = True) -> nn.Module:
        return nn.Module.train(module, False)
    return train


def copy_vision_encoder(src: VLM, dst: VLM) -> None:
    """Initialise ``dst``'s vision encoder with ``src``'s weights (the paper's shared SigLIP).

    Raises:
        PairMismatchError: the two vision towers have different architectures.
    """
    src_state = src.vision_tower.state_dict()
    dst_state = dst.vision_tower.state_dict()
    mismatched = [k for k in dst_state if k not in src_state or src_state[k].shape != dst_state[k].shape]
    if mismatched or set(src_state) != set(dst_state):
        raise PairMismatchError(
            "student_vision_init='teacher' needs identical vision towers; differing tensors: "
            f"{mismatched[:5] or sorted(set(src_state) ^ set(dst_state))[:5]}")
    dst.vision_tower.load_state_dict(src_state)


def check_pair(teacher: VLM, student: VLM, *, teacher_vocab: str | None = None,
               student_vocab: str | None = None) -> None:
    """Preflight the METHOD.md section 1 requirements before any training.

    * the student's vision output width equals the teacher projector's input width
      (the switch pass feeds ``V_S(x)`` into ``P_T``);
    * both vision encoders yield the same number of visual tokens;
    * teacher and student share the vocabulary (size, special ids, and, when given, the
      tokenizer-content fingerprints ``teacher_vocab`` / ``student_vocab``).

    Raises:
        PairMismatchError: naming the numbers that differ.
    """
    problems = []
    if student.vision_width != teacher.projector_in_width:
        problems.append(f"student vision output width {student.vision_width} != teacher projector "
                        f"input width {teacher.projector_in_width}")
    if student.num_image_tokens != teacher.num_image_tokens:
        problems.append(f"student yields {student.num_image_tokens} visual tokens, teacher "
                        f"{teacher.num_image_tokens}")
    if student.vocab_size != teacher.vocab_size:
        problems.append(f"vocabulary sizes differ: student {student.vocab_size}, "
                        f"teacher {teacher.vocab_size}")
    if student.image_token_id != teacher.image_token_id:
        problems.append(f"<image> token ids differ: student {student.image_token_id}, "
                        f"teacher {teacher.image_token_id}")
    if teacher_vocab is not None and student_vocab is not None and teacher_vocab != student_vocab:
        problems.append(f"tokenizer contents differ (fingerprint student {student_vocab}, "
                        f"teacher {teacher_vocab})")
    if problems:
        raise PairMismatchError("teacher/student pair is not compatible for Switch-KD: "
                                + "; ".join(problems))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
