"""Build, cache and fingerprint the MiniVL-10 suite (BENCHMARK_DESIGN.md section 5).

``build_suite(profile, seed, cache_dir)`` generates the ten tasks' train/val/test splits, trains
the shared tokenizer on train text only, and stores everything under
``cache_dir/minivl/{profile}-s{seed}-v{GENERATOR_VERSION}``; a second call with the same key
returns at once. Generation is deterministic by seed: every block of items comes from
``random.Random(f"{task}-{split}-{seed}-{block}")``, so the fingerprint does not depend on the
number of worker processes.

Leakage controls (design section 5.3): disjoint seed streams per split; val/test items whose
image also occurs in train are dropped (with their pair partner; the count is recorded);
held-out pools for photos, digits, scene-text strings and fonts; balanced yes/no and MC letters
(asserted); the tokenizer never sees val/test text.

CLI: ``python -m switchkd.data.suite build --profile ci --seed 0 --out DIR``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from dataclasses import dataclass

import datasets
import numpy as np
from datasets import Features, Image, List, Value

from switchkd.config import MINIVL_TASKS
from switchkd.data.assets import Assets, availability_tag, load_assets
from switchkd.data.format import answer_text, strip_image_placeholder, user_text
from switchkd.data.tasks import (ANSWER_VOCAB, PAIRED, Unit, check_balance, encode_rows,
                                 generate_block, init_worker, run_unit)

GENERATOR_VERSION = "1"  # bump on any change to what is generated: it keys the cache
SPLITS = ("train", "val", "test")
BLOCK = 100  # items (or train images) per seed block; even, so eval pairs never straddle blocks


@dataclass(frozen=True)
class Profile:
    train: int  # train images per task (multi-turn conversations)
    val: int  # val items per task
    test: int  # test items per task
    image_size: int
    vocab_size: int
    workers: int  # generation processes (1 = in-process)


PROFILES = {
    "ci": Profile(train=24, val=8, test=16, image_size=32, vocab_size=512, workers=1),
    "default": Profile(train=6000, val=500, test=1000, image_size=32, vocab_size=1024, workers=2),
    "full": Profile(train=12000, val=1000, test=2000, image_size=32, vocab_size=1024, workers=2),
}


@dataclass(frozen=True)
class Suite:
    """A built suite on disk. ``fingerprint`` identifies its exact contents."""

    root: str
    fingerprint: str
    tokenizer_dir: str
    tasks: tuple[str, ...]

    def split(self, name: str):
        """The ``train`` / ``val`` / ``test`` split as a ``datasets.Dataset`` (all tasks, with a
        ``task`` column)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; valid: {list(SPLITS)}")
        return datasets.load_from_disk(os.path.join(self.root, name))

    def info(self) -> dict:
        """The contents of ``suite.json`` (counts, drops, build time, assets, token lengths)."""
        with open(os.path.join(self.root, "suite.json"), encoding="utf-8") as f:
            return json.load(f)


def suite_root(profile: str, seed: int, cache_dir: str) -> str:
    name = f"{profile}-s{seed}-v{GENERATOR_VERSION}-a{availability_tag()}"
    return os.path.join(cache_dir, "minivl", name)


def _load(root: str) -> Suite:
    with open(os.path.join(root, "suite.json"), encoding="utf-8") as f:
        info = json.load(f)
    return Suite(root=root, fingerprint=info["fingerprint"],
                 tokenizer_dir=os.path.join(root, "tokenizer"), tasks=tuple(info["tasks"]))


def plan(profile: Profile, seed: int) -> list[Unit]:
    """All work units, in canonical order (split, task, block)."""
    units = []
    for split in SPLITS:
        total = getattr(profile, split)
        for task in MINIVL_TASKS:
            if task in PAIRED and total % 2:
                raise ValueError(f"{task} {split}: {total} items; paired tasks need an even count")
            for block, start in enumerate(range(0, total, BLOCK)):
                units.append(Unit(task, split, seed, block, min(BLOCK, total - start)))
    return units


def _generate(units: list[Unit], profile: Profile, assets: Assets) -> list[list[dict]]:
    """Encoded rows per unit, in order: in-process, or in a pool of forked workers.

    Forked workers inherit ``assets`` without pickling and run only PIL/numpy code, so the
    parent's threads (torch, arrow) never matter to them; fork also works from any caller
    (a Ray worker, an unguarded script), which spawn/forkserver do not.
    """
    if profile.workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        cache: dict = {}
        return [encode_rows(generate_block(u, assets, profile.image_size, cache)) for u in units]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(profile.workers, initializer=init_worker,
                  initargs=(assets, profile.image_size)) as pool:
        return list(pool.imap(run_unit, units, chunksize=2))


def _dedupe(rows: dict[str, list[dict]]) -> dict[str, dict[str, int]]:
    """Drop val/test rows whose image hash occurs in train, with every row of their group."""
    train_hashes = {r["hash"] for r in rows["train"]}
    dropped: dict[str, dict[str, int]] = {}
    for split in ("val", "test"):
        bad_groups = {r["group"] for r in rows[split] if r["hash"] in train_hashes and r["group"]}
        kept, counts = [], {t: 0 for t in MINIVL_TASKS}
        for r in rows[split]:
            if r["hash"] in train_hashes or (r["group"] and r["group"] in bad_groups):
                counts[r["task"]] += 1
            else:
                kept.append(r)
        rows[split] = kept
        dropped[split] = counts
    return dropped


def _text_fields(split: str, row: dict) -> dict:
    if split == "train":
        return {"task": row["task"], "conversations": row["conversations"]}
    return {k: row[k] for k in ("task", "question", "answer", "answers", "options", "meta")}


def fingerprint(rows: dict[str, list[dict]]) -> str:
    """sha256 over every row of every split: the image's pixel hash plus its text as JSON."""
    h = hashlib.sha256()
    for split in SPLITS:
        h.update(split.encode())
        for row in rows[split]:
            h.update(row["hash"].encode())
            h.update(json.dumps(_text_fields(split, row), sort_keys=True,
                                ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def train_texts(train_rows: list[dict]) -> list[str]:
    """What the tokenizer learns from: every train conversation as the model sees it (the
    ``<image>`` placeholder left out), plus the fixed answer vocabulary."""
    texts = []
    for row in train_rows:
        parts = []
        for turn in row["conversations"]:
            if turn["from"] == "human":
                parts.append(user_text(strip_image_placeholder(turn["value"]), first_turn=False))
            else:
                parts.append(answer_text(turn["value"]))
        texts.append("".join(parts))
    return texts + [answer_text(w) for w in ANSWER_VOCAB]


def _save_split(split: str, rows: list[dict], path: str) -> None:
    common = {"task": [r["task"] for r in rows],
              "image": [{"bytes": r["png"], "path": None} for r in rows]}
    if split == "train":
        turn = {"from": Value("string"), "value": Value("string")}
        features = Features({"task": Value("string"), "image": Image(),
                             "conversations": List(turn)})
        data = {**common, "conversations": [r["conversations"] for r in rows]}
    else:
        features = Features({"task": Value("string"), "image": Image(),
                             "question": Value("string"), "answer": Value("string"),
                             "answers": List(Value("string")), "options": List(Value("string")),
                             "meta": Value("string")})
        data = {**common, **{k: [r[k] for r in rows]
                             for k in ("question", "answer", "answers", "options", "meta")}}
    datasets.Dataset.from_dict(data, features=features).save_to_disk(path)


def _token_lengths(tokenizer, texts: list[str], rows: list[dict]) -> dict:
    """Text tokens per train conversation, with one ``<eos>`` per answer and a ``<bos>`` (the
    image tokens, a model setting, come on top)."""
    lengths = np.array([len(ids) + len(row["conversations"]) // 2 + 1
                        for ids, row in zip(tokenizer(texts)["input_ids"], rows)])
    return {"p50": int(np.percentile(lengths, 50)), "p99": int(np.percentile(lengths, 99)),
            "max": int(lengths.max())}


def build_suite(profile: str, seed: int, cache_dir: str, *, force: bool = False) -> Suite:
    """Build (or load from the cache) the MiniVL-10 suite for ``(profile, seed)``.

    The suite is written into a temporary folder beside its root and renamed into place, so a
    killed build never leaves a half-written suite. ``force=True`` rebuilds and replaces it.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid: {list(PROFILES)}")
    root = suite_root(profile, seed, cache_dir)
    if not force and os.path.isfile(os.path.join(root, "suite.json")):
        return _load(root)
    from switchkd.data.tokenizer import train_tokenizer  # imports transformers: only to build

    prof = PROFILES[profile]
    start = time.perf_counter()
    assets = load_assets()
    units = plan(prof, seed)
    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for unit, block_rows in zip(units, _generate(units, prof, assets)):
        rows[unit.split].extend(block_rows)
    dropped = _dedupe(rows)
    for split in ("val", "test"):
        for task in MINIVL_TASKS:
            check_balance(task, split, [r for r in rows[split] if r["task"] == task])
    fp = fingerprint(rows)
    texts = train_texts(rows["train"])
    tokenizer = train_tokenizer(texts, vocab_size=prof.vocab_size)

    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.tmp-", dir=parent)
    bars_were_off = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # save_to_disk would print one bar per split
    try:
        for split in SPLITS:
            _save_split(split, rows[split], os.path.join(tmp, split))
        tokenizer.save_pretrained(os.path.join(tmp, "tokenizer"))
        info = {
            "fingerprint": fp, "profile": profile, "seed": seed,
            "generator_version": GENERATOR_VERSION, "image_size": prof.image_size,
            "tasks": list(MINIVL_TASKS),
            "counts": {s: {t: sum(r["task"] == t for r in rows[s]) for t in MINIVL_TASKS}
                       for s in SPLITS},
            "dropped_in_train": dropped,
            "vocab_size": len(tokenizer),
            "train_text_tokens": _token_lengths(tokenizer, texts[:len(rows["train"])],
                                                rows["train"]),
            "assets": assets.summary(),
            "build_seconds": round(time.perf_counter() - start, 1),
        }
        with open(os.path.join(tmp, "suite.json"), "w", encoding="utf-8") as f:
            json.dump(info, f, indent=1, ensure_ascii=False)
        _replace_dir(tmp, root, force=force)
    finally:
        if not bars_were_off:
            datasets.enable_progress_bars()
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return _load(root)


def _replace_dir(tmp: str, root: str, *, force: bool) -> None:
    """Rename ``tmp`` to ``root``; an existing root is replaced when ``force``, else kept (a
    concurrent build of the same key finished first: identical content)."""
    if os.path.exists(root):
        if not force and os.path.isfile(os.path.join(root, "suite.json")):
            return
        trash = f"{tmp}.old"
        os.rename(root, trash)
        os.rename(tmp, root)
        shutil.rmtree(trash, ignore_errors=True)
        return
    try:
        os.rename(tmp, root)
    except OSError:
        if not os.path.isfile(os.path.join(root, "suite.json")):
            raise


def describe(suite: Suite) -> str:
    """A human-readable summary: key, fingerprint, per-task counts, drops and build time."""
    info = suite.info()
    lines = [
        f"MiniVL-10 {info['profile']} seed={info['seed']} v{info['generator_version']}  "
        f"fingerprint {suite.fingerprint}",
        f"root {suite.root}",
        f"built in {info['build_seconds']} s; images {info['image_size']} px; "
        f"tokenizer vocab {info['vocab_size']}; train text tokens {info['train_text_tokens']}",
        f"{'task':8s} {'train':>7s} {'val':>6s} {'test':>6s}  dropped val/test (image in train)",
    ]
    for t in suite.tasks:
        c, d = info["counts"], info["dropped_in_train"]
        lines.append(f"{t:8s} {c['train'][t]:7d} {c['val'][t]:6d} {c['test'][t]:6d}  "
                     f"{d['val'][t]}/{d['test'][t]}")
    totals = {s: sum(info["counts"][s].values()) for s in SPLITS}
    lines.append(f"{'total':8s} {totals['train']:7d} {totals['val']:6d} {totals['test']:6d}")
    if info.get("assets"):
        lines.append(f"assets {json.dumps(info['assets'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m switchkd.data.suite",
                                     description="Build the offline MiniVL-10 suite.")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build (or load from the cache) one suite")
    build.add_argument("--profile", choices=sorted(PROFILES), default="ci")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--out", required=True, help="cache dir; the suite goes to OUT/minivl/...")
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    suite = build_suite(args.profile, args.seed, args.out, force=args.force)
    print(describe(suite))
    print(f"wall {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
