"""Vision-encoder pretraining: exact grid labels, determinism, and that it teaches the encoder."""

import numpy as np
import pytest
import torch

from switchkd.config import ConfigError, VisionPretrainConfig, with_overrides
from switchkd.data.assets import load_assets
from switchkd.data.grid_labels import LABEL_CLASSES, _cell, grid_batch
from switchkd.models.build import build_vlm
from switchkd.presets import tiny
from switchkd.vision_pretrain import pretrain_vision

from tests.conftest import IMAGE_TOKEN_ID, TINY_VOCAB


@pytest.fixture(scope="module")
def assets():
    return load_assets()


def test_cells_are_row_major_and_clamped():
    assert _cell(0.0, 0.0, 4) == 0
    assert _cell(0.99, 0.0, 4) == 3
    assert _cell(0.0, 0.3, 4) == 4
    assert _cell(0.6, 0.8, 4) == 3 * 4 + 2
    assert _cell(1.0, 1.0, 4) == 15  # the far edge belongs to the last cell
    assert _cell(-0.01, 1.2, 4) == 12


def test_grid_batches_are_deterministic_labelled_and_in_range(assets):
    a = grid_batch(assets, size=32, grid=4, n=24, seed=0, index=3)
    b = grid_batch(assets, size=32, grid=4, n=24, seed=0, index=3)
    c = grid_batch(assets, size=32, grid=4, n=24, seed=0, index=4)
    assert a.images.shape == (24, 32, 32, 3) and a.images.dtype == np.uint8
    assert np.array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    for name, classes in LABEL_CLASSES.items():
        assert np.array_equal(a.labels[name], b.labels[name])
        assert a.labels[name].shape == (24, 16)
        assert a.labels[name].min() >= 0 and a.labels[name].max() < classes
    shapes, colors, chars = (a.labels[k] for k in ("shape", "color", "char"))
    # An object cell names a shape and its colour; a character cell names the sign's colour.
    assert np.array_equal(shapes > 0, (colors > 0) & (chars == 0))
    assert not np.any((shapes > 0) & (chars > 0))
    assert (shapes > 0).any() and (chars > 0).any()


def test_sign_fraction_selects_the_scene_kind(assets):
    only_shapes = grid_batch(assets, size=32, grid=4, n=12, seed=0, index=0, sign_fraction=0.0)
    only_signs = grid_batch(assets, size=32, grid=4, n=12, seed=0, index=0, sign_fraction=1.0)
    assert not only_shapes.labels["char"].any() and only_shapes.labels["shape"].any(axis=1).all()
    assert not only_signs.labels["shape"].any() and only_signs.labels["char"].any(axis=1).all()


def test_pretraining_teaches_colours_and_touches_only_the_vision_encoder(assets):
    cfg = tiny()
    vlm = build_vlm(cfg.model.teacher, vocab_size=TINY_VOCAB, image_token_id=IMAGE_TOKEN_ID)
    before = {k: v.clone() for k, v in vlm.hf.state_dict().items()}
    record = pretrain_vision(vlm, VisionPretrainConfig(steps=120, batch_size=32, lr=5e-3,
                                                                 warmup_steps=5),
                             seed=0, device=torch.device("cpu"), assets=assets)
    after = vlm.hf.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("vision_tower" in k for k in changed), sorted(changed)[:5]
    # Colour is the easiest label: 8 classes on filled cells (chance 12.5 %).
    assert record["vision_pretrain/color_acc"] > 25.0, record
    assert record["vision_pretrain/steps"] == 120 and np.isfinite(record["vision_pretrain/final_loss"])


def test_vision_pretrain_config_is_validated():
    with pytest.raises(ConfigError, match="train.teacher.vision_pretrain.sign_fraction"):
        with_overrides(tiny(), {"train.teacher.vision_pretrain.sign_fraction": 1.5})
    with pytest.raises(ConfigError, match="train.teacher.vision_pretrain.steps"):
        with_overrides(tiny(), {"train.teacher.vision_pretrain.steps": -1})


def test_a_corrupt_cached_encoder_is_named_not_loaded(tmp_path):
    """A damaged file in the encoder cache stops the teacher with the folder to delete."""
    import os

    from switchkd.train import pretrained_vision, vision_key

    cfg = with_overrides(tiny(), {"run.cache_dir": str(tmp_path)})
    vlm = build_vlm(cfg.model.teacher, vocab_size=TINY_VOCAB, image_token_id=IMAGE_TOKEN_ID)
    folder = tmp_path / "vision" / vision_key(cfg, vlm.vocab_size)
    os.makedirs(folder)
    (folder / "vision_tower.safetensors").write_bytes(b"not a safetensors file")
    (folder / "vision_pretrain.json").write_text("{}")
    with pytest.raises(RuntimeError, match=f"{folder}.*cannot be read.*delete that folder"):
        pretrained_vision(vlm, cfg, torch.device("cpu"))
