"""LLaVA JSON loader and ``load_data``: schema, clear errors, fingerprint, task filtering."""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass

import datasets
import pytest
from PIL import Image

from switchkd.config import DataConfig
from switchkd.data.collate import Collator
from switchkd.data.llava import LlavaFormatError, load_llava, read_llava
from switchkd.data.source import load_data, select_tasks
from switchkd.data.tokenizer import train_tokenizer

RECORDS = [
    {"id": "a1", "image": "sub/one.png",
     "conversations": [{"from": "human", "value": "<image>\nWhat color is this?"},
                       {"from": "gpt", "value": "red"},
                       {"from": "human", "value": "Is it round?"},
                       {"from": "gpt", "value": "yes"}]},
    {"id": "b2", "image": "two.png",
     "conversations": [{"from": "human", "value": "Describe the image.\n<image>"},
                       {"from": "gpt", "value": "A blue square."}]},
]


def _write(folder, records=RECORDS):
    images = folder / "images"
    (images / "sub").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 12), (255, 0, 0)).save(images / "sub" / "one.png")
    Image.new("RGB", (16, 16), (0, 0, 255)).save(images / "two.png")
    path = folder / "data.json"
    path.write_text(json.dumps(records))
    return str(path), str(images)


def _with(record_index, **changes):
    records = json.loads(json.dumps(RECORDS))
    records[record_index].update(changes)
    return records


def test_load_llava_yields_train_schema_rows(tmp_path):
    ds = load_llava(*_write(tmp_path))
    assert isinstance(ds, datasets.Dataset) and len(ds) == 2
    row = ds[0]
    assert row["task"] == "llava"
    assert isinstance(row["image"], Image.Image) and row["image"].size == (20, 12)
    assert row["conversations"][0] == {"from": "human", "value": "<image>\nWhat color is this?"}
    assert len(row["conversations"]) == 4
    # a trailing <image> is moved to the front of the first human message
    assert ds[1]["conversations"][0]["value"] == "<image>\nDescribe the image."


def test_loaded_rows_collate(tmp_path):
    ds = load_llava(*_write(tmp_path))
    texts = [m["value"] for r in RECORDS for m in r["conversations"]]
    tokenizer = train_tokenizer(texts * 3, vocab_size=300)
    batch = Collator(tokenizer, num_image_tokens=4, image_size=16,
                     max_length=64).train_batch([ds[0], ds[1]])
    assert batch.pixel_values.shape == (2, 3, 16, 16)
    assert ((batch.input_ids == tokenizer.convert_tokens_to_ids("<image>")).sum(1) == 4).all()


def test_missing_image_names_record_and_path(tmp_path):
    json_path, image_dir = _write(tmp_path, _with(1, image="nope.png"))
    with pytest.raises(FileNotFoundError, match=r"record 1 \(id 'b2'\).*nope\.png"):
        read_llava(json_path, image_dir)


@pytest.mark.parametrize("records, message", [
    (_with(0, conversations=[{"from": "user", "value": "<image>\nq"},
                             {"from": "gpt", "value": "a"}]), r"record 0 .*unknown role 'user'"),
    (_with(0, conversations=[{"from": "gpt", "value": "a"},
                             {"from": "human", "value": "<image>\nq"}]), "out of order"),
    (_with(1, conversations=[{"from": "human", "value": "<image>\nq"}]), "human/gpt pairs"),
    (_with(1, conversations=[{"from": "human", "value": "<image>\nq"}, {"from": "gpt"}]),
     r"message 1: missing key 'value'"),
    ([{"id": "t", "conversations": RECORDS[0]["conversations"]}], "missing key 'image'"),
    ([{"id": "c", "image": "two.png"}], "missing key 'conversations'"),
    (_with(0, conversations=[{"from": "human", "value": "<image>\nq"},
                             {"from": "gpt", "value": "a"},
                             {"from": "human", "value": "<image>\nagain"},
                             {"from": "gpt", "value": "b"}]), "at most once"),
    ({"not": "a list"}, "non-empty JSON list"),
])
def test_malformed_records_raise_clear_errors(tmp_path, records, message):
    json_path, image_dir = _write(tmp_path, records)
    with pytest.raises(LlavaFormatError, match=message) as info:
        read_llava(json_path, image_dir)
    assert "data.json" in str(info.value)


def test_invalid_json_and_missing_files(tmp_path):
    json_path, image_dir = _write(tmp_path)
    with open(json_path, "w") as f:
        f.write("[{")
    with pytest.raises(LlavaFormatError, match="not valid JSON"):
        read_llava(json_path, image_dir)
    with pytest.raises(FileNotFoundError, match="JSON file not found"):
        read_llava(str(tmp_path / "missing.json"), image_dir)
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        read_llava(json_path, str(tmp_path / "no_images"))


def test_load_data_llava_bundle_and_fingerprint(tmp_path):
    json_path, image_dir = _write(tmp_path)
    tok_dir = tmp_path / "tok"
    train_tokenizer(["What color is this? red"] * 3, vocab_size=280).save_pretrained(tok_dir)
    cfg = DataConfig(kind="llava", llava_json=json_path, image_dir=image_dir,
                     tokenizer_dir=str(tok_dir))
    bundle = load_data(cfg, str(tmp_path / "cache"))
    assert len(bundle.train) == 2 and bundle.val is None and bundle.test is None
    assert bundle.tasks == ("llava",) and bundle.tokenizer_dir == str(tok_dir)
    assert bundle.tokenizer.convert_tokens_to_ids("<image>") == 4
    assert len(bundle.fingerprint) == 16
    assert load_data(cfg, str(tmp_path / "cache")).fingerprint == bundle.fingerprint
    Image.new("RGB", (16, 16), (0, 0, 254)).save(tmp_path / "images" / "two.png")
    assert load_data(cfg, str(tmp_path / "cache")).fingerprint != bundle.fingerprint


def _split(tasks_per_row):
    return datasets.Dataset.from_list([{"task": t, "question": f"q{i}"}
                                       for i, t in enumerate(tasks_per_row)])


def test_select_tasks_filters_and_caps_in_order():
    split = _split(["mme", "pope", "mme", "vqa", "mme", "pope"])
    kept = select_tasks(split, ["mme", "pope"], per_task=2)
    assert kept["question"] == ["q0", "q1", "q2", "q5"]
    assert select_tasks(split, ["vqa"])["question"] == ["q3"]


def test_load_data_minivl_uses_build_suite(tmp_path, monkeypatch):
    """With a stand-in suite module: filtered tasks, val capped per task, suite identity kept."""
    tok_dir = tmp_path / "tok"
    train_tokenizer(["Is there a star? yes"] * 3, vocab_size=280).save_pretrained(tok_dir)
    tasks = ("mme", "mmb", "mmbcn", "vqa", "gqa", "sqa", "mmmu", "textvqa", "vizwiz", "pope")

    @dataclass(frozen=True)
    class FakeSuite:
        root: str
        fingerprint: str
        tokenizer_dir: str
        tasks: tuple

        def split(self, name):
            return _split([t for t in self.tasks for _ in range(3)])

    calls = []

    def build_suite(profile, seed, cache_dir, *, force=False):
        calls.append((profile, seed, cache_dir))
        return FakeSuite(cache_dir, "f" * 16, str(tok_dir), tasks)

    monkeypatch.setitem(sys.modules, "switchkd.data.suite",
                        types.SimpleNamespace(build_suite=build_suite))
    cfg = DataConfig(profile="ci", seed=3, tasks=("pope", "mme"), val_items_per_task=2)
    bundle = load_data(cfg, str(tmp_path))
    assert calls == [("ci", 3, str(tmp_path))]
    assert bundle.tasks == ("pope", "mme") and bundle.fingerprint == "f" * 16
    assert sorted(bundle.train["task"]) == ["mme"] * 3 + ["pope"] * 3
    assert sorted(bundle.val["task"]) == ["mme"] * 2 + ["pope"] * 2
    assert len(bundle.test) == 6
