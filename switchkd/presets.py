"""Named base configurations. Each returns a fresh ``Config``; override with dotted keys.

Every preset states how to run it, how long it takes on the target hardware, and what it is for.
"""

from __future__ import annotations

import os
from typing import Callable

from switchkd.config import (Config, DataConfig, LanguagePretrainConfig, LossConfig, ModelConfig,
                             OptimConfig, RunConfig, TeacherTrainConfig, TextConfig, TrainConfig,
                             VisionConfig, VisionPretrainConfig, VLMConfig)


# Teachers shipped with the package (``switchkd/teachers/<teacher key>``), installed into the
# cache by ``switchkd.train.prepare`` when the key matches.
SHIPPED_TEACHERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "teachers")
# The default teacher's first stage (letter-answered CE; docs/RESULTS.md section 7).
LETTER_TEACHER = "44195a6a43d48d88"


def tiny() -> Config:
    """Tests and smoke runs: under 1M parameters in total, 16 visual tokens, `ci` data.

    Run:   switchkd train --preset tiny --out runs/tiny
    Time:  about a minute on 2 CPU cores (vision encoder 10 steps, teacher LM lookup 10 steps,
           teacher 60 steps, student 40 steps, batch 8).
    Expect: finite, decreasing loss; accuracies near chance (the models are far too small and
           too briefly trained to learn the tasks). This preset checks plumbing, not results.
    """
    vision = VisionConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                          image_size=32, patch_size=8)
    return Config(
        preset="tiny",
        model=ModelConfig(
            teacher=VLMConfig(vision=vision, text=TextConfig(
                hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128)),
            student=VLMConfig(vision=vision, text=TextConfig(
                hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)),
        ),
        data=DataConfig(profile="ci", val_items_per_task=8, max_length=128),
        loss=LossConfig(window=16, k_min=2, k_max=8),
        optim=OptimConfig(lr=3e-3, warmup_steps=4),
        train=TrainConfig(max_steps=40, batch_size=8, log_every=5, eval_every=20,
                          checkpoint_every=20,
                          teacher=TeacherTrainConfig(
                              max_steps=60, batch_size=8, lr=3e-3, warmup_steps=5,
                              vision_pretrain=VisionPretrainConfig(steps=10, batch_size=16),
                              language_pretrain=LanguagePretrainConfig(steps=10, batch_size=8,
                                                                rehearse_batch_size=4),
                              freeze_vision=True)),
        run=RunConfig(device="cpu", precision="fp32"),
    )


def default() -> Config:
    """The demo and the evidence study: a ~3.8M-parameter teacher and a ~1.05M student.

    Both share the SigLIP-style vision architecture (96 wide, 3 layers, 32 px images, 8 px
    patches = 16 visual tokens); the student's vision encoder starts as a copy of the trained
    teacher's, as in the paper (TinyLLaVA Qwen2.5-0.5B from Qwen2.5-3B with one SigLIP).
    Teacher LM: Qwen2-style, 256 wide, 4 layers; student LM: 128 wide, 3 layers.

    The teacher is trained in two runs (issue #5, docs/RESULTS.md sections 7, 11 and 11b):
    ``LETTER_TEACHER`` pretrains its encoder on per-token grid labels (the stand-in for the
    paper's pretrained SigLIP, ``switchkd.vision_pretrain``) and then learns every task with
    the encoder frozen, multiple-choice questions answered by letter (3,000 CE steps); the
    default teacher starts from it (``train.teacher.init_from``) and trains 2,000 more CE steps
    with multiple-choice answers written as the option's text and then its letter
    (``data.mc_response=text_letter``), which the students and every evaluation use too.

    Run:   switchkd train --preset default --out runs/default
    Time:  teacher (shipped; else cached after the first run): first run, vision pretraining
           3,000 steps at batch 128 (765 s) + 3,000 CE steps at batch 32 (1,750 s); second run,
           2,000 CE steps (1,005 s); on 2 idle cores. Student 1,000 steps at batch 32.
    Expect: teacher clearly above blind on all ten tasks (docs/RESULTS.md section 11b).
    """
    vision = VisionConfig(hidden_size=96, num_layers=3, num_heads=4, intermediate_size=384,
                          image_size=32, patch_size=8)
    return Config(
        preset="default",
        model=ModelConfig(
            teacher=VLMConfig(vision=vision, text=TextConfig(
                hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=768)),
            student=VLMConfig(vision=vision, text=TextConfig(
                hidden_size=128, num_layers=3, num_heads=4, num_kv_heads=2, intermediate_size=384)),
        ),
        data=DataConfig(profile="default", val_items_per_task=100, max_length=160,
                        mc_response="text_letter"),
        loss=LossConfig(),
        optim=OptimConfig(lr=2e-3, warmup_steps=50),
        train=TrainConfig(max_steps=1000, batch_size=32, log_every=25, eval_every=250,
                          checkpoint_every=250,
                          teacher=TeacherTrainConfig(
                              max_steps=2000, batch_size=32, lr=1e-3, warmup_steps=200,
                              init_from=LETTER_TEACHER,
                              # The stand-in for SigLIP pretraining (issue #5): without it the
                              # teacher stayed at chance on objects and scene text.
                              vision_pretrain=VisionPretrainConfig(steps=3000, batch_size=128),
                              freeze_vision=True)),
        # bf16 autocast: 1.7x faster steps on this project's CPUs (avx512_bf16), measured on
        # the default teacher at batch 32; weights and the optimizer stay fp32.
        run=RunConfig(precision="bf16"),
    )


PRESETS: dict[str, Callable[[], Config]] = {"tiny": tiny, "default": default}


def get_preset(name: str) -> Config:
    """The preset called ``name``; an unknown name lists the valid ones."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; available: {sorted(PRESETS)}")
    return PRESETS[name]()
