"""MiniVL-10 generator: determinism, cache, schema, leakage controls and graceful degradation.

One ``ci`` suite is built per module (a few seconds) and shared by the tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time

import numpy as np
import pytest

from switchkd.config import MINIVL_TASKS
from switchkd.data import assets as assets_mod
from switchkd.data.format import IMAGE_TOKEN, OPTION_LETTERS
from switchkd.data.suite import (PROFILES, Profile, _generate, build_suite, describe, main, plan,
                                 train_texts)
from switchkd.data.tasks import Unit, generate_block
from switchkd.data.tasks.common import ocr_strings
from switchkd.data.tokenizer import load_tokenizer, train_tokenizer, vocabulary_fingerprint

EVAL_COLUMNS = {"task", "image", "question", "answer", "answers", "options", "meta"}
TRAIN_COLUMNS = {"task", "image", "conversations"}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("minivl"))


@pytest.fixture(scope="module")
def suite(cache_dir):
    return build_suite("ci", 0, cache_dir)


@pytest.fixture(scope="module")
def splits(suite):
    return {name: suite.split(name) for name in ("train", "val", "test")}


def _pixel_hash(image) -> str:
    arr = np.ascontiguousarray(np.asarray(image.convert("RGB")), dtype=np.uint8)
    return hashlib.sha256(repr(arr.shape).encode() + arr.tobytes()).hexdigest()


def _rows(split, task):
    return [r for r in split if r["task"] == task]


def test_rebuild_gives_the_same_fingerprint(suite, cache_dir):
    """A forced rebuild regenerates everything and reproduces the fingerprint bit for bit."""
    again = build_suite("ci", 0, cache_dir, force=True)
    assert again.fingerprint == suite.fingerprint
    assert again.root == suite.root
    assert re.fullmatch(r"[0-9a-f]{16}", suite.fingerprint)


def test_second_build_is_cached(suite, cache_dir):
    start = time.perf_counter()
    again = build_suite("ci", 0, cache_dir)
    assert time.perf_counter() - start < 1.0
    assert again == suite
    # Atomic write: no temporary build folder is left beside the suite.
    assert not [n for n in os.listdir(os.path.dirname(suite.root)) if n.startswith(".")]


def test_other_seed_gives_other_data(cache_dir, suite):
    other = build_suite("ci", 1, cache_dir)
    assert other.root != suite.root and other.fingerprint != suite.fingerprint


def test_suite_json_and_describe(suite):
    info = suite.info()
    assert info["profile"] == "ci" and info["seed"] == 0
    assert info["counts"]["test"] == {t: PROFILES["ci"].test for t in MINIVL_TASKS}
    assert set(info["dropped_in_train"]) == {"val", "test"}
    text = describe(suite)
    assert suite.fingerprint in text and all(t in text for t in MINIVL_TASKS)


def test_all_tasks_in_all_splits_with_schema(suite, splits):
    assert suite.tasks == MINIVL_TASKS
    assert set(splits["train"].column_names) == TRAIN_COLUMNS
    for name in ("val", "test"):
        assert set(splits[name].column_names) == EVAL_COLUMNS
    for name, ds in splits.items():
        counts = {t: ds["task"].count(t) for t in MINIVL_TASKS}
        assert all(c > 0 for c in counts.values()), (name, counts)
    row = splits["test"][0]
    assert row["image"].size == (32, 32)
    assert isinstance(json.loads(row["meta"]), dict)


def test_no_eval_image_appears_in_train(splits):
    train = {_pixel_hash(im) for im in splits["train"]["image"]}
    for name in ("val", "test"):
        assert not train & {_pixel_hash(im) for im in splits[name]["image"]}


def test_ocr_test_strings_never_appear_in_train(splits):
    train_words = set()
    for conv in splits["train"]["conversations"]:
        for turn in conv:
            train_words.update(re.findall(r"[A-Z0-9]+", turn["value"]))
    test_strings = {r["answer"] for r in _rows(splits["test"], "textvqa")}
    assert test_strings and not test_strings & train_words
    assert not set(ocr_strings("train")) & set(ocr_strings("heldout"))


def test_yes_no_balance(splits):
    for task in ("mme", "pope"):
        answers = [r["answer"] for r in _rows(splits["test"], task)]
        assert answers.count("yes") == answers.count("no") == len(answers) // 2, task
    for r in _rows(splits["test"], "pope"):
        assert json.loads(r["meta"])["setting"] in ("random", "popular", "adversarial")


def test_mme_pairs_share_an_image(splits):
    by_image = {}
    for r in _rows(splits["test"], "mme"):
        by_image.setdefault(json.loads(r["meta"])["image_id"], []).append(r)
    for pair in by_image.values():
        assert sorted(r["answer"] for r in pair) == ["no", "yes"]
        assert _pixel_hash(pair[0]["image"]) == _pixel_hash(pair[1]["image"])


def test_mc_answers_are_letters_within_options(splits):
    for name in ("val", "test"):
        for r in splits[name]:
            if r["options"]:
                assert r["answer"] in OPTION_LETTERS[:len(r["options"])]
                assert len(set(r["options"])) == len(r["options"])
                assert "A. " not in r["question"], "options must not be in the question text"
    for task in ("mmb", "mmbcn", "sqa", "mmmu"):
        assert all(r["options"] for r in _rows(splits["test"], task)), task


def test_mmbcn_is_mmb_in_chinese(splits):
    mmb, mmbcn = _rows(splits["test"], "mmb"), _rows(splits["test"], "mmbcn")
    assert len(mmb) == len(mmbcn)
    for en, cn in zip(mmb, mmbcn):
        assert _pixel_hash(en["image"]) == _pixel_hash(cn["image"])
        assert en["answer"] == cn["answer"] and len(en["options"]) == len(cn["options"])
        assert re.search(r"[\u4e00-\u9fff]", cn["question"])


def test_train_conversations_follow_the_llava_convention(splits):
    for conv in splits["train"]["conversations"]:
        assert conv and len(conv) % 2 == 0
        assert [t["from"] for t in conv] == ["human", "gpt"] * (len(conv) // 2)
        assert conv[0]["value"].startswith(f"{IMAGE_TOKEN}\n")
        assert all(IMAGE_TOKEN not in t["value"] for t in conv[1:])
        assert all(t["value"].strip() for t in conv)


def test_tokenizer_is_trained_on_train_text_only(suite, splits):
    tok = load_tokenizer(suite.tokenizer_dir)
    retrained = train_tokenizer(train_texts(list(splits["train"].remove_columns("image"))),
                                vocab_size=PROFILES["ci"].vocab_size)
    assert vocabulary_fingerprint(tok) == vocabulary_fingerprint(retrained)
    for s in {r["answer"] for r in _rows(splits["test"], "textvqa")}:
        assert len(tok.tokenize(" " + s)) > 1, f"held-out string {s!r} is a single token"


def test_generation_is_deterministic_and_independent_of_workers():
    """Blocks are string-seeded: in-process and 2-worker generation give identical rows."""
    units = [Unit("pope", "test", 0, 0, 4), Unit("textvqa", "train", 0, 1, 3)]
    assets = assets_mod.load_assets()
    one = _generate(units, Profile(0, 0, 0, 32, 512, workers=1), assets)
    two = _generate(units, Profile(0, 0, 0, 32, 512, workers=2), assets)
    assert [[r["hash"] for r in b] for b in one] == [[r["hash"] for r in b] for b in two]
    assert [[r.get("question") for r in b] for b in one] == [[r.get("question") for r in b]
                                                             for b in two]


def test_plan_splits_into_even_blocks():
    units = plan(PROFILES["default"], 0)
    assert {u.task for u in units} == set(MINIVL_TASKS)
    assert sum(u.count for u in units if u.split == "test" and u.task == "vqa") == 1000
    assert all(u.count % 2 == 0 for u in units if u.split != "train")


def test_held_out_pools_are_disjoint():
    paths = assets_mod.find_photo_paths()
    assert not set(paths["train"]) & set(paths["heldout"])
    a = assets_mod.load_assets()
    assert not set(a.fonts["train"]) & set(a.fonts["heldout"])
    if a.digits is not None:
        train, held = a.digits["train"][0], a.digits["heldout"][0]
        assert len(train) + len(held) == 1797


def test_build_degrades_without_optional_assets(tmp_path, monkeypatch):
    """No emoji font, no Fashion-MNIST, no photos, no digits, no TTF fonts: still builds."""
    for name in ("find_emoji_font", "find_fashion_mnist", "find_digits_file", "find_font_dir"):
        monkeypatch.setattr(assets_mod, name, lambda: None)
    monkeypatch.setattr(assets_mod, "find_photo_paths", lambda: {"train": [], "heldout": []})
    bare = build_suite("ci", 0, str(tmp_path))
    info = bare.info()
    assert info["assets"]["icons"] == 0 and not info["assets"]["fashion_mnist"]
    assert not info["assets"]["digits"] and info["assets"]["photos"] == {"train": 0, "heldout": 0}
    assert all(n == PROFILES["ci"].test for n in info["counts"]["test"].values())


def test_optional_icons_and_fashion_are_used_when_present():
    """The emoji and Fashion-MNIST code paths, fed with small synthetic stand-ins."""
    base = assets_mod.load_assets()
    rng = np.random.default_rng(0)
    names = list(assets_mod.ICON_EMOJI)
    images = {}
    for i, name in enumerate(names):
        icon = np.zeros((24, 24, 4), np.uint8)
        icon[4:20, 4:20, :3] = rng.integers(0, 256, 3)
        icon[4:20, 4:20, 3] = 255
        images[name] = icon
    themes = tuple(tuple(n for n in t if n in images) for t in assets_mod.ICON_THEMES)
    garments = (rng.random((20, 28, 28)) * 255).astype(np.uint8), np.arange(20) % 10
    rich = assets_mod.Assets(photos=base.photos, fonts=base.fonts, digits=base.digits,
                             icons=assets_mod.IconBank(images, themes),
                             fashion={"train": garments, "heldout": garments})
    pope = generate_block(Unit("pope", "test", 0, 0, 12), rich, 32)
    objects = {json.loads(r["meta"])["object"] for r in pope}
    assert objects <= set(names)
    vizwiz = generate_block(Unit("vizwiz", "train", 0, 0, 40), rich, 32)
    answers = {t["value"] for r in vizwiz for t in r["conversations"] if t["from"] == "gpt"}
    assert answers & set(assets_mod.FASHION_CLASSES)


def test_cli_prints_fingerprint(suite, cache_dir, capsys):
    assert main(["build", "--profile", "ci", "--seed", "0", "--out", cache_dir]) == 0
    assert suite.fingerprint in capsys.readouterr().out
