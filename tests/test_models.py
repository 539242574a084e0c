"""The VLM pair: presets build, the adapter matches HF, preflight, freezing, save/load."""

import pytest
import torch
from transformers import LlavaForConditionalGeneration

from switchkd.config import VisionConfig, VLMConfig
from switchkd.models.build import (PairMismatchError, build_vlm, check_pair, copy_vision_encoder,
                                   count_parameters, freeze, load_vlm)
from switchkd.models.export import save_hf_folder
from switchkd.presets import PRESETS, get_preset
from tests.conftest import IMAGE_TOKEN_ID, TINY_VOCAB, make_batch


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_and_runs_one_forward(name):
    cfg = get_preset(name)
    vocab = 512 if name == "tiny" else 1024
    teacher = build_vlm(cfg.model.teacher, vocab_size=vocab, image_token_id=IMAGE_TOKEN_ID)
    student = build_vlm(cfg.model.student, vocab_size=vocab, image_token_id=IMAGE_TOKEN_ID)
    check_pair(teacher, student)
    batch = make_batch(batch_size=2, vocab=vocab, num_image_tokens=student.num_image_tokens,
                       image_size=cfg.model.student.vision.image_size)
    out = student(batch.pixel_values, batch.input_ids, batch.attention_mask)
    assert out.logits.shape == (*batch.input_ids.shape, vocab)
    assert out.vision_features.shape == (2, student.num_image_tokens, student.vision_width)
    assert count_parameters(student.hf) < count_parameters(teacher.hf)
    if name == "tiny":
        assert count_parameters(student.hf) + count_parameters(teacher.hf) < 1_000_000
        assert student.num_image_tokens == 16


def test_adapter_matches_hf_forward(tiny_models, tiny_batch):
    _, student = tiny_models
    b = tiny_batch
    ours = student(b.pixel_values, b.input_ids, b.attention_mask).logits
    theirs = student.hf(input_ids=b.input_ids, pixel_values=b.pixel_values,
                        attention_mask=b.attention_mask).logits
    torch.testing.assert_close(ours, theirs)


def test_left_padding_gives_the_same_logits(tiny_models, tiny_batch):
    """Positions count real tokens, so a left-padded row scores like its unpadded self."""
    _, student = tiny_models
    b = tiny_batch.select(slice(0, 1))
    embeds = student.project(student.encode_image(b.pixel_values))
    plain = student.lm_logits(b.input_ids, embeds, b.attention_mask)
    ids = torch.cat([torch.zeros(1, 3, dtype=torch.long), b.input_ids], 1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), b.attention_mask], 1)
    padded = student.lm_logits(ids, embeds, mask)
    torch.testing.assert_close(padded[:, 3:], plain, atol=1e-5, rtol=1e-4)


def test_image_token_count_mismatch_is_reported(tiny_models, tiny_batch):
    _, student = tiny_models
    ids = tiny_batch.input_ids.clone()
    ids[:, 1] = 7
    with pytest.raises(ValueError, match="<image> positions"):
        student(tiny_batch.pixel_values, ids, tiny_batch.attention_mask)


def _vlm(vision=None, text_hidden=32, vocab=TINY_VOCAB, image_token=IMAGE_TOKEN_ID):
    from switchkd.config import TextConfig
    cfg = VLMConfig(vision=vision or VisionConfig(hidden_size=32, num_layers=1, num_heads=2,
                                                  intermediate_size=64),
                    text=TextConfig(hidden_size=text_hidden, num_layers=1, num_heads=2,
                                    num_kv_heads=1, intermediate_size=64))
    return build_vlm(cfg, vocab_size=vocab, image_token_id=image_token)


@pytest.mark.parametrize("student_kwargs,fragment", [
    ({"vision": VisionConfig(hidden_size=48, num_layers=1, num_heads=2, intermediate_size=64)},
     "student vision output width 48 != teacher projector input width 32"),
    ({"vision": VisionConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                             patch_size=4)},
     "student yields 64 visual tokens, teacher 16"),
    ({"vocab": TINY_VOCAB + 1}, "vocabulary sizes differ: student 97, teacher 96"),
    ({"image_token": 5}, "<image> token ids differ: student 5, teacher 4"),
])
def test_pair_preflight_rejects_each_mismatch(student_kwargs, fragment):
    teacher = _vlm(text_hidden=64)
    student = _vlm(**student_kwargs)
    with pytest.raises(PairMismatchError, match=fragment.replace("<", ".").replace(">", ".")):
        check_pair(teacher, student)


def test_pair_preflight_compares_tokenizer_contents():
    with pytest.raises(PairMismatchError, match="tokenizer contents differ"):
        check_pair(_vlm(text_hidden=64), _vlm(), teacher_vocab="abc", student_vocab="abd")


def test_freeze_holds_even_after_train(tiny_models):
    teacher, _ = tiny_models
    teacher.train()
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not any(m.training for m in teacher.modules())
    parent = torch.nn.ModuleDict({"teacher": teacher, "head": torch.nn.Linear(2, 2)})
    parent.train()
    assert parent["head"].training
    assert not any(m.training for m in teacher.modules())


def test_copy_vision_encoder(tiny_models):
    teacher, student = tiny_models
    copy_vision_encoder(teacher, student)
    for a, b in zip(teacher.vision_parameters(), student.vision_parameters()):
        assert torch.equal(a, b)
    trainable = [p.requires_grad for n, p in student.vision_tower.named_parameters()
                 if "post_layernorm" not in n]
    assert all(trainable) and trainable


def test_saved_pair_loads_with_from_pretrained_and_gives_identical_logits(tiny_models, tmp_path,
                                                                         tiny_batch):
    from switchkd.data.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(["USER: what color ASSISTANT: red"] * 4, vocab_size=TINY_VOCAB)
    b = tiny_batch
    for name, model in zip(("teacher", "student"), tiny_models):
        folder = save_hf_folder(model, tokenizer, str(tmp_path / name))
        hf = LlavaForConditionalGeneration.from_pretrained(folder, local_files_only=True)
        reloaded = load_vlm(folder)
        expected = model(b.pixel_values, b.input_ids, b.attention_mask).logits
        torch.testing.assert_close(reloaded(b.pixel_values, b.input_ids, b.attention_mask).logits,
                                   expected, rtol=0, atol=0)
        torch.testing.assert_close(hf(input_ids=b.input_ids, pixel_values=b.pixel_values).logits,
                                   expected, rtol=0, atol=0)
    check_pair(load_vlm(str(tmp_path / "teacher")), load_vlm(str(tmp_path / "student")))
