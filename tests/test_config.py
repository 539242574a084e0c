"""The config tree: round trips, dotted overrides, and errors that name the key."""

import dataclasses

import pytest

from switchkd.config import (Config, ConfigError, from_flat_dict, from_yaml, parse_override,
                             to_flat_dict, to_yaml, valid_keys, with_overrides)
from switchkd.presets import PRESETS, get_preset


def test_flat_dict_round_trip():
    cfg = with_overrides(get_preset("tiny"), {"loss.temperature": 2.5, "loss.fixed_k": 4})
    assert from_flat_dict(to_flat_dict(cfg)) == cfg


def test_yaml_round_trip():
    cfg = with_overrides(get_preset("default"), {"data.tasks": ["mme", "pope"], "run.seed": 3})
    assert from_yaml(to_yaml(cfg)) == cfg


def test_nested_yaml_sections_are_accepted():
    cfg = from_yaml("loss:\n  temperature: 2.0\ntrain:\n  teacher:\n    max_steps: 5\n")
    assert cfg.loss.temperature == 2.0 and cfg.train.teacher.max_steps == 5


def test_override_with_a_yaml_1_1_exponent_names_the_fix():
    """PyYAML reads 3e-4 (no dot) as text; the error says how to write it."""
    with pytest.raises(ConfigError, match=r"optim.lr: expected a number, got '3e-4' \(YAML reads "
                                          r"exponents without a dot as strings: write 1.0e-4"):
        with_overrides(get_preset("tiny"), dict([parse_override("optim.lr=3e-4")]))
    assert with_overrides(get_preset("tiny"),
                          dict([parse_override("optim.lr=3.0e-4")])).optim.lr == 3e-4


def test_override_applies_and_coerces():
    cfg = with_overrides(Config(), dict([parse_override("loss.temperature=2"),
                                         parse_override("loss.fixed_k=null"),
                                         parse_override("data.tasks=mme,pope")]))
    assert cfg.loss.temperature == 2.0 and isinstance(cfg.loss.temperature, float)
    assert cfg.loss.fixed_k is None
    assert cfg.data.tasks == ("mme", "pope")


def test_unknown_key_suggests_closest():
    with pytest.raises(ConfigError, match=r"unknown config key 'loss.temprature'.*'loss.temperature'"):
        with_overrides(Config(), {"loss.temprature": 2.0})


def test_section_key_is_rejected():
    with pytest.raises(ConfigError, match="names a section"):
        with_overrides(Config(), {"loss": 1})


@pytest.mark.parametrize("key,value,fragment", [
    ("loss.k_min", 1, "loss.k_min"),
    ("loss.k_max", 128, "loss.k_max"),
    ("loss.switch_ratio", 1.5, "loss.switch_ratio"),
    ("loss.kind", "mse", "loss.kind"),
    ("optim.lr", -1.0, "optim.lr"),
    ("train.stage", "teacher", "train.stage"),
    ("data.tasks", ["mme", "imagenet"], "data.tasks"),
    ("model.student.text.hidden_size", 30, "model.student.text.hidden_size"),
    ("train.max_steps", 2.5, "train.max_steps"),
    ("train.max_steps", True, "train.max_steps"),
])
def test_invalid_values_name_the_key(key, value, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        with_overrides(Config(), {key: value})


def test_mismatched_visual_token_counts_rejected():
    with pytest.raises(ConfigError, match="visual tokens"):
        with_overrides(Config(), {"model.student.vision.patch_size": 4})


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().loss.temperature = 1.0  # type: ignore[misc]


def test_valid_keys_are_the_flat_keys():
    keys = valid_keys()
    assert "loss.temperature" in keys and "model.teacher.text.num_layers" in keys
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_validates(name):
    cfg = get_preset(name)
    assert cfg.preset == name
    assert with_overrides(cfg, {}) == cfg


# The letter-answered first-stage teacher (44195a6a43d48d88) as a config: the default preset
# without its second stage.
LETTER_TEACHER = {"data.mc_response": "letter", "train.teacher.init_from": None,
                  "train.teacher.max_steps": 3000}


def test_teacher_key_hashes_vision_pretraining_only_when_it_is_on():
    """The evidence study's first teacher (trained before vision pretraining existed) keeps
    its cache key; turning pretraining or freezing on gives a new teacher."""
    from switchkd.train import teacher_key

    data = "7b22e3ff76aa5ba2"
    letter = with_overrides(get_preset("default"), LETTER_TEACHER)
    before = with_overrides(letter, {"train.teacher.vision_pretrain.steps": 0,
                                     "train.teacher.language_pretrain.steps": 0,
                                     "train.teacher.freeze_vision": False})
    assert teacher_key(before, data) == "181a167165ee47a9"
    assert teacher_key(with_overrides(before, {"train.teacher.vision_pretrain.lr": 1.0}),
                       data) == "181a167165ee47a9"  # an unused knob of a step-0 pretraining
    keys = {teacher_key(letter, data),
            teacher_key(with_overrides(letter, {"train.teacher.vision_pretrain.steps": 10}), data),
            teacher_key(with_overrides(before, {"train.teacher.freeze_vision": True}), data)}
    assert len(keys) == 3 and "181a167165ee47a9" not in keys


def test_teacher_key_hashes_language_pretraining_only_when_it_is_on():
    """The vision-pretrained teacher 44195a6a43d48d88 (data 7b22e3ff76aa5ba2) keeps its key."""
    from switchkd.train import teacher_key

    data = "7b22e3ff76aa5ba2"
    letter = with_overrides(get_preset("default"), LETTER_TEACHER)
    assert letter.train.teacher.language_pretrain.steps == 0
    assert teacher_key(letter, data) == "44195a6a43d48d88"
    assert teacher_key(with_overrides(letter, {"train.teacher.language_pretrain.lr": 1.0}),
                       data) == "44195a6a43d48d88"
    assert teacher_key(with_overrides(letter, {"train.teacher.language_pretrain.steps": 1500}),
                       data) != "44195a6a43d48d88"
    rehearsed = with_overrides(letter, {"train.teacher.language_pretrain.rehearse_batch_size": 32})
    assert teacher_key(rehearsed, data) != "44195a6a43d48d88"


def test_default_teacher_is_the_second_stage_keyed_by_its_first():
    """The default teacher (18b5aa5d642136be) starts from 44195a6a43d48d88 and answers multiple
    choice with text then letter; its key names the first stage by key, not by location."""
    from switchkd.train import teacher_key

    data = "7b22e3ff76aa5ba2"
    default = get_preset("default")
    assert (default.data.mc_response, default.train.teacher.init_from) == \
        ("text_letter", "44195a6a43d48d88")
    assert teacher_key(default, data) == "18b5aa5d642136be"
    letter_second_stage = with_overrides(default, {"data.mc_response": "letter"})
    assert teacher_key(letter_second_stage, data) not in ("18b5aa5d642136be", "44195a6a43d48d88")
    with pytest.raises(ConfigError, match="data.mc_response"):
        with_overrides(default, {"data.mc_response": "words"})
