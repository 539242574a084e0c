"""Shared fixtures: deterministic seeds, tiny configs, tiny models and a hand-made batch."""

from __future__ import annotations

import os

# Before torch/ray import anywhere: one thread (2-core machines), offline hubs, Ray quiet.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")

import pytest  # noqa: E402
import torch  # noqa: E402

from switchkd.config import with_overrides  # noqa: E402
from switchkd.data.batch import Batch  # noqa: E402
from switchkd.models.build import build_vlm, freeze  # noqa: E402
from switchkd.presets import tiny  # noqa: E402

torch.set_num_threads(1)

pytest_plugins = ["tests.ray_fixtures"]  # the one shared local Ray cluster (ray-marked tests)

TINY_VOCAB = 96
IMAGE_TOKEN_ID = 4


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_cfg(tmp_path):
    return with_overrides(tiny(), {"run.cache_dir": str(tmp_path / "cache")})


@pytest.fixture
def tiny_models(tiny_cfg):
    """(teacher, student): random tiny VLMs over a 96-token vocabulary; teacher frozen."""
    teacher = build_vlm(tiny_cfg.model.teacher, vocab_size=TINY_VOCAB,
                        image_token_id=IMAGE_TOKEN_ID, seed=1)
    student = build_vlm(tiny_cfg.model.student, vocab_size=TINY_VOCAB,
                        image_token_id=IMAGE_TOKEN_ID, seed=2)
    return freeze(teacher), student


def make_batch(batch_size: int = 3, text_len: int = 8, num_image_tokens: int = 16,
               vocab: int = TINY_VOCAB, image_size: int = 32) -> Batch:
    """A batch shaped like collate's: <bos>, N image tokens, text; the last 3 tokens supervised."""
    length = 1 + num_image_tokens + text_len
    ids = torch.randint(5, vocab, (batch_size, length))
    ids[:, 0] = 2
    ids[:, 1:1 + num_image_tokens] = IMAGE_TOKEN_ID
    labels = torch.full_like(ids, -100)
    labels[:, -3:] = ids[:, -3:]
    return Batch(pixel_values=torch.randn(batch_size, 3, image_size, image_size),
                 input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels)


@pytest.fixture
def tiny_batch():
    return make_batch()
