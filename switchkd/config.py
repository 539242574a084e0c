"""The single configuration tree of switchkd.

Every setting lives in one frozen dataclass tree (``RunConfig``) and is named by a dotted key
(``loss.temperature``, ``model.student.text.hidden_size``) everywhere: CLI overrides, search
spaces, Ray Tune trial configs and Parquet columns (``cfg.loss.temperature``). Defaults live only
here. Every node validates itself in ``__post_init__``, and ``with_overrides`` rebuilds the tree
through the constructors, so an override can never produce an invalid config.

This module is torch-free so orchestration and analysis code can import it cheaply.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Optional

import yaml

from switchkd.data.format import MC_RESPONSES

MINIVL_TASKS: tuple[str, ...] = (
    "mme", "mmb", "mmbcn", "vqa", "gqa", "sqa", "mmmu", "textvqa", "vizwiz", "pope",
)


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the dotted key."""


def _check(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{key}: {message}")


def _check_choice(value: Any, key: str, choices: tuple) -> None:
    _check(value in choices, key, f"must be one of {list(choices)}, got {value!r}")


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VisionConfig:
    """SigLIP-style ViT: ``(image_size / patch_size) ** 2`` visual tokens of width ``hidden_size``."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 128
    image_size: int = 32
    patch_size: int = 8

    def validate(self, key: str) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "image_size",
                     "patch_size"):
            _check(getattr(self, name) >= 1, f"{key}.{name}", "must be >= 1")
        _check(self.hidden_size % self.num_heads == 0, f"{key}.hidden_size",
               f"{self.hidden_size} is not divisible by num_heads={self.num_heads}")
        _check(self.image_size % self.patch_size == 0, f"{key}.image_size",
               f"{self.image_size} is not divisible by patch_size={self.patch_size}")

    @property
    def num_image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class TextConfig:
    """Qwen2-style causal LM (the vocabulary size comes from the tokenizer, not from here)."""

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    max_position_embeddings: int = 256

    def validate(self, key: str) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size",
                     "max_position_embeddings"):
            _check(getattr(self, name) >= 1, f"{key}.{name}", "must be >= 1")
        _check(self.hidden_size % self.num_heads == 0, f"{key}.hidden_size",
               f"{self.hidden_size} is not divisible by num_heads={self.num_heads}")
        _check((self.hidden_size // self.num_heads) % 2 == 0, f"{key}.hidden_size",
               f"head size {self.hidden_size}/{self.num_heads} must be even (rotary embeddings)")
        _check(self.num_heads % self.num_kv_heads == 0, f"{key}.num_heads",
               f"{self.num_heads} is not divisible by num_kv_heads={self.num_kv_heads}")


@dataclass(frozen=True)
class VLMConfig:
    """One TinyLLaVA-style VLM: vision encoder V, 2-layer GELU MLP projector P, language model L.

    ``path`` names a local Hugging Face folder (``save_pretrained`` of a
    ``LlavaForConditionalGeneration``); when set, the model is loaded from it and the
    architecture fields are ignored. ``None`` builds the model from config with random init.
    """

    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    vision_feature_layer: int = -1
    path: Optional[str] = None

    def validate(self, key: str) -> None:
        self.vision.validate(f"{key}.vision")
        self.text.validate(f"{key}.text")
        _check(self.vision_feature_layer != 0, f"{key}.vision_feature_layer",
               "0 selects the patch embeddings, not an encoder layer")
        n = self.vision.num_layers
        _check(-n <= self.vision_feature_layer <= n, f"{key}.vision_feature_layer",
               f"{self.vision_feature_layer} is out of range for {n} encoder layers")


@dataclass(frozen=True)
class ModelConfig:
    """The teacher/student pair (METHOD.md section 1).

    ``student_vision_init``: ``"teacher"`` copies the trained teacher's vision encoder into the
    student (the paper's shared pretrained SigLIP; it stays trainable), in both stages, so the
    SFT baseline starts from the same encoder as the distilled students; ``"random"`` keeps the
    student's own random init (and SFT then needs no teacher at all).
    """

    teacher: VLMConfig = field(default_factory=lambda: VLMConfig(
        text=TextConfig(hidden_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                        intermediate_size=256)))
    student: VLMConfig = field(default_factory=lambda: VLMConfig(
        text=TextConfig(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1,
                        intermediate_size=128)))
    student_vision_init: Literal["teacher", "random"] = "teacher"

    def validate(self, key: str) -> None:
        self.teacher.validate(f"{key}.teacher")
        self.student.validate(f"{key}.student")
        _check_choice(self.student_vision_init, f"{key}.student_vision_init", ("teacher", "random"))


# --------------------------------------------------------------------------------------------
# Data, loss, optimisation, training, run
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataConfig:
    """Where the training and evaluation data come from.

    ``kind="minivl"`` generates the offline MiniVL-10 suite (``profile`` sets its size) into
    ``run.cache_dir``; ``kind="llava"`` reads LLaVA-style conversation JSON (``llava_json``) with
    images under ``image_dir`` and the tokenizer folder ``tokenizer_dir``.
    """

    kind: Literal["minivl", "llava"] = "minivl"
    profile: Literal["ci", "default", "full"] = "ci"
    seed: int = 0
    tasks: tuple[str, ...] = MINIVL_TASKS
    llava_json: Optional[str] = None
    image_dir: Optional[str] = None
    tokenizer_dir: Optional[str] = None
    max_length: int = 128
    val_items_per_task: int = 100
    # How multiple-choice questions are answered in training and scored in evaluation:
    # "letter" (the option's letter, the benchmark's form) or "text_letter" (the option's text,
    # then its letter; see switchkd.data.format.mc_answer and the evaluation module).
    mc_response: Literal["letter", "text_letter"] = "letter"

    def validate(self, key: str) -> None:
        _check_choice(self.kind, f"{key}.kind", ("minivl", "llava"))
        _check_choice(self.profile, f"{key}.profile", ("ci", "default", "full"))
        _check_choice(self.mc_response, f"{key}.mc_response", MC_RESPONSES)
        _check(len(self.tasks) > 0, f"{key}.tasks", "must name at least one task")
        if self.kind == "minivl":
            unknown = sorted(set(self.tasks) - set(MINIVL_TASKS))
            _check(not unknown, f"{key}.tasks", f"unknown MiniVL-10 tasks {unknown}; "
                   f"valid: {list(MINIVL_TASKS)}")
        else:
            for name in ("llava_json", "image_dir", "tokenizer_dir"):
                _check(getattr(self, name) is not None, f"{key}.{name}",
                       "is required when data.kind='llava'")
        _check(self.max_length >= 8, f"{key}.max_length", "must be >= 8")
        _check(self.val_items_per_task >= 1, f"{key}.val_items_per_task", "must be >= 1")


DISTILL_LOSSES = ("dbild", "bild", "kl", "reverse_kl", "jsd")


@dataclass(frozen=True)
class LossConfig:
    """The Switch-KD objective (METHOD.md section 3 and 4).

    ``L = CE(z_S, y) + align_weight * D(z_T, z_S) + vsd_weight * D(z_T, z_Switch)`` where ``D`` is
    chosen by ``kind`` (``dbild`` by default; the others exist for the ablations). The paper's
    lambda_align and lambda_vsd are ``align_weight`` and ``vsd_weight``.
    """

    kind: Literal["dbild", "bild", "kl", "reverse_kl", "jsd"] = "dbild"
    align_weight: float = 1.0
    vsd_weight: float = 1.0
    temperature: float = 3.0
    window: int = 64
    k_min: int = 2
    k_max: int = 32
    fixed_k: Optional[int] = None
    divergence: Literal["reverse", "forward"] = "reverse"
    directions: Literal["both", "teacher", "student"] = "both"
    bild_top_k: int = 8
    jsd_beta: float = 0.5
    switch_ratio: float = 1.0
    kd_positions: Literal["answer", "all"] = "answer"

    def validate(self, key: str) -> None:
        _check_choice(self.kind, f"{key}.kind", DISTILL_LOSSES)
        _check(self.align_weight >= 0, f"{key}.align_weight", "must be >= 0")
        _check(self.vsd_weight >= 0, f"{key}.vsd_weight", "must be >= 0")
        _check(self.temperature > 0, f"{key}.temperature", "must be > 0")
        _check(2 <= self.k_min, f"{key}.k_min", f"must be >= 2, got {self.k_min}")
        _check(self.k_min <= self.k_max, f"{key}.k_max",
               f"must be >= k_min ({self.k_min}), got {self.k_max}")
        _check(self.k_max <= self.window, f"{key}.k_max",
               f"must be <= window ({self.window}), got {self.k_max}")
        _check(self.fixed_k is None or self.fixed_k >= 2, f"{key}.fixed_k",
               f"must be None or >= 2, got {self.fixed_k}")
        _check_choice(self.divergence, f"{key}.divergence", ("reverse", "forward"))
        _check_choice(self.directions, f"{key}.directions", ("both", "teacher", "student"))
        _check(self.bild_top_k >= 2, f"{key}.bild_top_k", "must be >= 2")
        _check(0 < self.jsd_beta < 1, f"{key}.jsd_beta", "must be in (0, 1)")
        _check(0 <= self.switch_ratio <= 1, f"{key}.switch_ratio",
               f"must be in [0, 1], got {self.switch_ratio}")
        _check_choice(self.kd_positions, f"{key}.kd_positions", ("answer", "all"))


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup then cosine decay to ``min_lr_ratio * lr``."""

    lr: float = 2e-3
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.98
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0

    def validate(self, key: str) -> None:
        _check(self.lr > 0, f"{key}.lr", "must be > 0")
        _check(self.weight_decay >= 0, f"{key}.weight_decay", "must be >= 0")
        _check(0 <= self.beta1 < 1, f"{key}.beta1", "must be in [0, 1)")
        _check(0 <= self.beta2 < 1, f"{key}.beta2", "must be in [0, 1)")
        _check(self.warmup_steps >= 0, f"{key}.warmup_steps", "must be >= 0")
        _check(0 <= self.min_lr_ratio <= 1, f"{key}.min_lr_ratio", "must be in [0, 1]")
        _check(self.grad_clip >= 0, f"{key}.grad_clip", "must be >= 0 (0 disables clipping)")


@dataclass(frozen=True)
class VisionPretrainConfig:
    """Pretraining of the teacher's vision encoder before its CE training (0 steps = none).

    The stand-in for SigLIP's pretraining in the paper: the encoder learns, per visual token,
    the shape, colour and scene-text character centred in its grid cell, on freshly generated
    scenes from the train pools (``switchkd.vision_pretrain``). Part of the teacher cache key.
    """

    steps: int = 0
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 50
    sign_fraction: float = 0.35  # share of scenes with scene text instead of shapes

    def validate(self, key: str) -> None:
        _check(self.steps >= 0, f"{key}.steps", "must be >= 0")
        _check(self.batch_size >= 1, f"{key}.batch_size", "must be >= 1")
        _check(self.lr > 0, f"{key}.lr", "must be > 0")
        _check(self.warmup_steps >= 0, f"{key}.warmup_steps", "must be >= 0")
        _check(0.0 <= self.sign_fraction <= 1.0, f"{key}.sign_fraction", "must be in [0, 1]")


@dataclass(frozen=True)
class LanguagePretrainConfig:
    """Text-only pretraining of the teacher's language model before its CE training (0 = none).

    The stand-in for the paper's pretrained LLM, on the skill a from-scratch LM did not learn
    from the VLM data: in-context option lookup ("Which option says red?" over lettered options
    -> the letter), which multiple-choice answers compose with perception
    (``switchkd.language_pretrain``). Measured on ``default``: the skill does not survive the CE
    stage at lr 1e-3 or 3e-4 (docs/RESULTS.md section 8); with ``rehearse_batch_size`` it does
    (87 %), yet multiple choice stays at chance (section 9). Part of the teacher cache key when
    on (``steps`` or ``rehearse_batch_size`` above 0).
    """

    steps: int = 0
    batch_size: int = 64
    lr: float = 3e-4
    warmup_steps: int = 20
    # Lookup prompts added to every teacher CE step (their CE summed with the CE of the
    # conversations), so the CE stage rehearses the skill instead of overwriting it; 0 = none.
    rehearse_batch_size: int = 0

    @property
    def enabled(self) -> bool:
        return self.steps > 0 or self.rehearse_batch_size > 0

    def validate(self, key: str) -> None:
        _check(self.steps >= 0, f"{key}.steps", "must be >= 0")
        _check(self.rehearse_batch_size >= 0, f"{key}.rehearse_batch_size", "must be >= 0")
        _check(self.batch_size >= 1, f"{key}.batch_size", "must be >= 1")
        _check(self.lr > 0, f"{key}.lr", "must be > 0")
        _check(self.warmup_steps >= 0, f"{key}.warmup_steps", "must be >= 0")


@dataclass(frozen=True)
class TeacherTrainConfig:
    """The teacher's own CE training budget (stage 'teacher'); part of the teacher cache key.

    ``freeze_vision`` keeps the (pretrained) vision encoder fixed while the projector and LM
    learn to read it, as LLaVA does with its pretrained tower. ``init_from`` (a teacher key,
    looked up in the cache and then among the shipped teachers, or a teacher folder; of the same
    architecture and vocabulary) starts the CE stage from that teacher's weights instead of a
    fresh model: a curriculum in two teacher runs (vision and language pretraining are then
    skipped; the starting teacher has been through them).
    """

    max_steps: int = 60
    batch_size: int = 8
    lr: float = 2e-3
    warmup_steps: int = 10
    seed: int = 0
    freeze_vision: bool = False
    init_from: Optional[str] = None
    vision_pretrain: VisionPretrainConfig = field(default_factory=VisionPretrainConfig)
    language_pretrain: LanguagePretrainConfig = field(default_factory=LanguagePretrainConfig)

    def validate(self, key: str) -> None:
        _check(self.max_steps >= 1, f"{key}.max_steps", "must be >= 1")
        _check(self.batch_size >= 1, f"{key}.batch_size", "must be >= 1")
        _check(self.lr > 0, f"{key}.lr", "must be > 0")
        _check(self.warmup_steps >= 0, f"{key}.warmup_steps", "must be >= 0")
        self.vision_pretrain.validate(f"{key}.vision_pretrain")
        self.language_pretrain.validate(f"{key}.language_pretrain")


@dataclass(frozen=True)
class TrainConfig:
    """The student's training run.

    ``stage``: ``"sft"`` trains the student with CE only (the no-distillation baseline, no
    teacher is built); ``"distill"`` trains it with CE + Align + VSD. ``batch_size`` is the
    effective (global) batch: under data parallelism each of W workers takes
    ``batch_size / W`` samples per micro-step, and ``grad_accum_steps`` splits it further.
    ``use_teacher_cache`` reads the teacher reference logits from a memory-mapped cache built
    once per (teacher, train split, ``data.max_length``) instead of running the teacher on
    every batch (``switchkd.teacher_cache``; needs ``loss.kd_positions="answer"``).
    """

    stage: Literal["sft", "distill"] = "distill"
    max_steps: int = 40
    batch_size: int = 8
    grad_accum_steps: int = 1
    log_every: int = 10
    eval_every: int = 20
    checkpoint_every: int = 20
    teacher_activation_checkpointing: bool = False
    use_teacher_cache: bool = False
    teacher: TeacherTrainConfig = field(default_factory=TeacherTrainConfig)

    def validate(self, key: str) -> None:
        _check_choice(self.stage, f"{key}.stage", ("sft", "distill"))
        for name in ("max_steps", "batch_size", "grad_accum_steps", "log_every", "eval_every",
                     "checkpoint_every"):
            _check(getattr(self, name) >= 1, f"{key}.{name}", "must be >= 1")
        _check(self.batch_size % self.grad_accum_steps == 0, f"{key}.grad_accum_steps",
               f"must divide batch_size ({self.batch_size}), got {self.grad_accum_steps}")
        self.teacher.validate(f"{key}.teacher")


@dataclass(frozen=True)
class RunConfig:
    """Seed, device, precision and where cached artefacts (data, teacher) live."""

    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    cache_dir: str = ".switchkd_cache"
    name: str = "run"

    def validate(self, key: str) -> None:
        _check_choice(self.device, f"{key}.device", ("auto", "cpu", "cuda"))
        _check_choice(self.precision, f"{key}.precision", ("auto", "fp32", "bf16"))
        _check(bool(self.cache_dir), f"{key}.cache_dir", "must not be empty")


@dataclass(frozen=True)
class Config:
    """The whole tree. Build it from a preset, then ``with_overrides``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    preset: str = "custom"

    def __post_init__(self) -> None:
        self.model.validate("model")
        self.data.validate("data")
        self.loss.validate("loss")
        self.optim.validate("optim")
        self.train.validate("train")
        self.run.validate("run")
        _check(not self.train.use_teacher_cache or self.loss.kd_positions == "answer",
               "train.use_teacher_cache", "the cache holds answer positions only; it needs "
               f"loss.kd_positions='answer', got {self.loss.kd_positions!r}")
        _check(self.model.teacher.vision.num_image_tokens == self.model.student.vision.num_image_tokens
               or self.model.teacher.path is not None or self.model.student.path is not None,
               "model.student.vision",
               f"student yields {self.model.student.vision.num_image_tokens} visual tokens, teacher "
               f"{self.model.teacher.vision.num_image_tokens}; Switch-KD needs equal counts")


# --------------------------------------------------------------------------------------------
# Dotted keys: flatten, override, YAML
# --------------------------------------------------------------------------------------------


def to_flat_dict(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """``{"loss.temperature": 3.0, ...}``: every leaf of the tree under its dotted key.

    Tuples become lists so the result is JSON- and Parquet-friendly.
    """
    flat: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            flat.update(to_flat_dict(value, prefix=f"{key}."))
        else:
            flat[key] = list(value) if isinstance(value, tuple) else value
    return flat


def valid_keys(cfg_type: type = Config) -> list[str]:
    """All dotted leaf keys of the tree (from the defaults)."""
    return list(to_flat_dict(cfg_type()).keys())


def _leaf_type(node_type: type, name: str) -> Any:
    return typing.get_type_hints(node_type)[name]


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check ``value`` against a field annotation, converting where lossless (int -> float, list -> tuple)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union:  # Optional[X]
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is Literal:
        _check(value in args, key, f"must be one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        _check(isinstance(value, (list, tuple)), key, f"expected a list, got {value!r}")
        return tuple(_coerce(v, args[0], key) for v in value)
    if annotation is bool:
        _check(isinstance(value, bool), key, f"expected true/false, got {value!r}")
        return value
    if annotation is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key,
               f"expected an integer, got {value!r}")
        return value
    if annotation is float:
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), key,
               f"expected a number, got {value!r}{yaml_float_hint(value)}")
        return float(value)
    if annotation is str:
        _check(isinstance(value, str), key, f"expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported field type {annotation!r}")


def _unknown_key_error(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid_keys(), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


def with_overrides(cfg: Config, overrides: Mapping[str, Any]) -> Config:
    """Return a new, re-validated tree with dotted-key overrides applied.

    Raises:
        ConfigError: an unknown key (with the closest valid key suggested), a value of the wrong
            type, or a value that fails validation.
    """
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        parts = key.split(".")
        node_type: type = Config
        for depth, part in enumerate(parts):
            names = {f.name for f in dataclasses.fields(node_type)}
            if part not in names:
                raise _unknown_key_error(key)
            hint = _leaf_type(node_type, part)
            is_node = dataclasses.is_dataclass(hint)
            if is_node and depth == len(parts) - 1:
                raise ConfigError(f"{key!r} names a section, not a setting; use e.g. "
                                  f"{key}.{dataclasses.fields(hint)[0].name}")
            if not is_node and depth < len(parts) - 1:
                raise _unknown_key_error(key)
            if is_node:
                node_type = hint
        cursor = nested
        for part in parts[:-1]:
            cursor = cursor.setdefault(part, {})
        cursor[parts[-1]] = _coerce(value, _leaf_type(node_type, parts[-1]), key)
    return _replace_nested(cfg, nested)


def _replace_nested(node: Any, changes: dict[str, Any]) -> Any:
    updates = {}
    for name, change in changes.items():
        current = getattr(node, name)
        updates[name] = _replace_nested(current, change) if isinstance(change, dict) else change
    return dataclasses.replace(node, **updates)


def from_flat_dict(flat: Mapping[str, Any], base: Optional[Config] = None) -> Config:
    """Inverse of ``to_flat_dict`` (``base`` defaults to ``Config()``)."""
    return with_overrides(base if base is not None else Config(), flat)


def yaml_float_hint(value: Any) -> str:
    """YAML 1.1 (PyYAML) reads ``1e-4`` as a string; only ``1.0e-4`` is a float."""
    if not isinstance(value, str):
        return ""
    try:
        float(value)
    except ValueError:
        return ""
    return " (YAML reads exponents without a dot as strings: write 1.0e-4, not 1e-4)"


def parse_override(text: str) -> tuple[str, Any]:
    """``"loss.temperature=2.5"`` -> ``("loss.temperature", 2.5)``; values are YAML scalars."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    return key.strip(), value


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_flat_dict(cfg), sort_keys=False)


def from_yaml(text: str) -> Config:
    """Load a config written by ``to_yaml`` (flat dotted keys, or nested sections)."""
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError("a config YAML must be a mapping of dotted keys to values")
    return from_flat_dict(_flatten_mapping(data))


def _flatten_mapping(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten_mapping(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def to_json(cfg: Config) -> str:
    return json.dumps(to_flat_dict(cfg), indent=2, sort_keys=False)
