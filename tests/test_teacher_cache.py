"""The teacher-logit cache: cached and live KD terms agree, it is built once, damage is caught.

Tolerances. The cache stores float16, whose rounding error is at most half a unit in the last
place: ``|z16 - z| <= 2**-11 * |z|``. Logits are compared with ``rtol=2**-10`` (one ulp, which
also absorbs the float32 noise of a different batch composition) and a tiny ``atol`` for values
near 0. The losses are smooth in the logits away from top-k ties, so a relative logit error of
~5e-4 moves them by ~1e-3 relative; they are compared with ``rtol=1e-2, atol=1e-5``.
"""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import torch

from switchkd.config import ConfigError, with_overrides
from switchkd.data.collate import Collator
from switchkd.data.source import load_data
from switchkd.data.tokenizer import image_token_id
from switchkd.models.build import build_vlm, freeze
from switchkd.presets import tiny
from switchkd.step import distill_step
from switchkd.teacher_cache import (TeacherCacheError, build_teacher_cache,
                                    open_teacher_cache)
from switchkd.train import build_student, prepare, teacher_cache_dir, train

LOGIT_TOL = {"rtol": 2 ** -10, "atol": 1e-6}
LOSS_TOL = {"rtol": 1e-3, "atol": 1e-6}
ROWS = [17, 3, 200, 42, 99, 5, 131, 64]  # unsorted, crossing the build's 64-row batches


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One ci data suite (and, for the slow tests, one trained teacher) for the module."""
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def setup(cache_dir, tmp_path_factory):
    """(cfg, bundle, collator, frozen random teacher, its cache) on real ci rows."""
    cfg = with_overrides(tiny(), {"run.cache_dir": cache_dir})
    bundle = load_data(cfg.data, cache_dir)
    tok = bundle.tokenizer
    teacher = freeze(build_vlm(cfg.model.teacher, vocab_size=len(tok),
                               image_token_id=image_token_id(tok), pad_token_id=tok.pad_token_id,
                               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                               seed=1))
    collator = Collator(tok, num_image_tokens=teacher.num_image_tokens,
                        image_size=teacher.image_size, max_length=cfg.data.max_length)
    directory = str(tmp_path_factory.mktemp("logits") / "random-teacher")
    cache = build_teacher_cache(teacher, bundle, collator, directory, batch_size=64)
    return cfg, bundle, collator, teacher, cache


def _batch(setup, rows):
    _, bundle, collator, _, _ = setup
    return collator.train_batch([bundle.train[i] for i in rows])


def test_cache_layout_and_metadata(setup):
    _, bundle, _, teacher, cache = setup
    assert cache.num_rows == len(bundle.train) and cache.vocab_size == teacher.vocab_size
    assert cache.logits.dtype == np.float16 and isinstance(cache.logits, np.memmap)
    meta = cache.meta
    assert meta["num_positions"] == cache.offsets[-1] == cache.logits.shape[0] > 0
    assert meta["bytes"] == os.path.getsize(os.path.join(cache.directory, "logits.f16"))
    assert meta["data_fingerprint"] == bundle.fingerprint and meta["max_length"] == 128


def test_cached_rows_are_the_live_teacher_logits_in_mask_order(setup):
    """logits_for(rows) equals the live teacher's logits[:, :-1][labels[:, 1:] != -100]."""
    _, _, _, teacher, cache = setup
    batch = _batch(setup, ROWS)
    with torch.no_grad():
        live = teacher(batch.pixel_values, batch.input_ids, batch.attention_mask).logits[:, :-1]
    expected = live[batch.labels[:, 1:] != -100]  # (n, V)
    torch.testing.assert_close(cache.logits_for(ROWS), expected, **LOGIT_TOL)


def test_cached_and_live_align_losses_agree(setup):
    cfg, bundle, _, teacher, cache = setup
    student = build_student(cfg, bundle)
    loss_cfg = dataclasses.replace(cfg.loss, vsd_weight=0.0)
    batch = _batch(setup, ROWS)
    live = distill_step(student, teacher, batch, loss_cfg, diagnostics=True)
    cached = distill_step(student, teacher, batch, loss_cfg, diagnostics=True,
                          teacher_answer_logits=cache.logits_for(ROWS))
    assert live.parts["align_loss"] > 0
    for name in ("align_loss", "loss", "top1_agreement", "k_teacher_mean"):
        torch.testing.assert_close(cached.parts[name], live.parts[name], **LOSS_TOL)
    assert (live.teacher_forward_passes, cached.teacher_forward_passes) == (1, 0)


def test_cached_and_live_vsd_losses_agree_on_a_partial_switch(setup):
    """switch_ratio < 1: the cached rows of the switch samples are picked by row id."""
    cfg, bundle, _, teacher, cache = setup
    student = build_student(cfg, bundle)
    loss_cfg = dataclasses.replace(cfg.loss, align_weight=0.0, switch_ratio=0.5)
    batch = _batch(setup, ROWS)
    outs = [distill_step(student, teacher, batch, loss_cfg,
                         generator=torch.Generator().manual_seed(7), teacher_answer_logits=t)
            for t in (None, cache.logits_for(ROWS))]
    live, cached = outs
    assert live.parts["vsd_loss"] > 0
    torch.testing.assert_close(cached.parts["vsd_loss"], live.parts["vsd_loss"], **LOSS_TOL)
    assert (live.teacher_forward_passes, live.teacher_backward_passes) == (2, 1)
    assert (cached.teacher_forward_passes, cached.teacher_backward_passes) == (1, 1)


def test_cached_step_rejects_misaligned_rows_and_all_positions(setup):
    cfg, bundle, _, teacher, cache = setup
    student = build_student(cfg, bundle)
    batch = _batch(setup, ROWS)
    with pytest.raises(ValueError, match="answer positions"):
        distill_step(student, teacher, batch, cfg.loss,
                     teacher_answer_logits=cache.logits_for(ROWS[:-1]))
    with pytest.raises(ValueError, match="kd_positions"):
        distill_step(student, teacher, batch, dataclasses.replace(cfg.loss, kd_positions="all"),
                     teacher_answer_logits=cache.logits_for(ROWS))
    with pytest.raises(ConfigError, match=r"train\.use_teacher_cache"):
        with_overrides(cfg, {"train.use_teacher_cache": True, "loss.kd_positions": "all"})


def _damaged_copy(cache, tmp_path, name):
    directory = str(tmp_path / name)
    shutil.copytree(cache.directory, directory)
    return directory


def test_mismatched_cache_names_the_file(setup):
    _, bundle, _, teacher, cache = setup
    with pytest.raises(TeacherCacheError, match="offsets.npy.*train rows"):
        cache.check_matches(num_rows=len(bundle.train) - 1, vocab_size=teacher.vocab_size)
    with pytest.raises(TeacherCacheError, match="logits.f16.*vocabulary"):
        cache.check_matches(num_rows=len(bundle.train), vocab_size=teacher.vocab_size + 1)
    with pytest.raises(IndexError, match="outside"):
        cache.logits_for([len(bundle.train)])


def test_corrupt_cache_names_the_file(setup, tmp_path):
    _, _, _, _, cache = setup
    truncated = _damaged_copy(cache, tmp_path, "truncated")
    with open(os.path.join(truncated, "logits.f16"), "r+b") as f:
        f.truncate(1000)
    with pytest.raises(TeacherCacheError, match=r"logits\.f16: 1000 bytes"):
        open_teacher_cache(truncated)

    wrong_vocab = _damaged_copy(cache, tmp_path, "vocab")
    meta_path = os.path.join(wrong_vocab, "cache.json")
    with open(meta_path) as f:
        meta = json.load(f)
    with open(meta_path, "w") as f:
        json.dump({**meta, "vocab_size": meta["vocab_size"] * 2}, f)
    with pytest.raises(TeacherCacheError, match=r"logits\.f16"):
        open_teacher_cache(wrong_vocab)

    wrong_rows = _damaged_copy(cache, tmp_path, "rows")
    np.save(os.path.join(wrong_rows, "offsets.npy"), cache.offsets[:-1])
    with pytest.raises(TeacherCacheError, match=r"offsets\.npy"):
        open_teacher_cache(wrong_rows)

    garbled = _damaged_copy(cache, tmp_path, "garbled")
    with open(os.path.join(garbled, "cache.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(TeacherCacheError, match=r"cache\.json"):
        open_teacher_cache(garbled)


# --- end to end (trains the tiny teacher once for the module) ---


def _cfg(cache_dir, **overrides):
    return with_overrides(tiny(), {"run.cache_dir": cache_dir, "train.use_teacher_cache": True,
                                   "data.val_items_per_task": 1, **overrides})


@pytest.mark.slow
def test_prepare_builds_the_cache_once(cache_dir):
    cfg = _cfg(cache_dir)
    prepare(cfg)
    directory = teacher_cache_dir(cfg, load_data(cfg.data, cache_dir))
    stamp = os.path.getmtime(os.path.join(directory, "logits.f16"))
    prepare(cfg)
    assert os.path.getmtime(os.path.join(directory, "logits.f16")) == stamp
    assert not [name for name in os.listdir(os.path.dirname(directory)) if ".tmp-" in name]


@pytest.mark.slow
def test_train_with_the_cache_runs_fewer_teacher_passes_and_the_same_losses(cache_dir, tmp_path):
    """Same seed, cached vs live: half the teacher forwards, the same step-1 losses."""
    common = {"train.max_steps": 3, "train.log_every": 1, "train.eval_every": 3}
    results, first = [], []
    for use_cache in (False, True):
        out = str(tmp_path / f"cache-{use_cache}")
        results.append(train(_cfg(cache_dir, **common, **{"train.use_teacher_cache": use_cache}),
                             out_dir=out))
        with open(os.path.join(out, "metrics.jsonl")) as f:
            first.append(json.loads(f.readline()))
    live, cached = results
    assert cached["status"] == "completed" and cached["cfg.train.use_teacher_cache"] is True
    assert (live["teacher_forward_passes"], cached["teacher_forward_passes"]) == (6, 3)
    assert live["teacher_backward_passes"] == cached["teacher_backward_passes"] == 3
    # V_S starts as a copy of V_T, so the live VSD is exactly 0 at step 1 and the cached one is
    # float16 rounding (~1e-7): hence the absolute tolerance.
    for name in ("train/align_loss", "train/vsd_loss", "train/loss"):
        assert first[1][name] == pytest.approx(first[0][name], rel=1e-3, abs=1e-6), name
