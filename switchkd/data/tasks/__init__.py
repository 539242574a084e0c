"""The ten MiniVL-10 task generators (BENCHMARK_DESIGN.md section 5.2), one module per task.

``generate_block`` is the single entry point: it builds the block's string-seeded rng
(``random.Random(f"{task}-{split}-{seed}-{block}")``) and returns plain rows. ``mmbcn`` val/test
blocks reuse ``mmb``'s seed stream so that they hold the same items in Chinese.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import signal
from dataclasses import dataclass

import numpy as np
from PIL import Image

from switchkd.data.assets import Assets
from switchkd.data.tasks import gqa, mmb, mme, mmmu, pope, sqa, textvqa, vizwiz, vqa
from switchkd.data.tasks.common import ANSWER_VOCAB, Context, check_balance, pack

__all__ = ["ANSWER_VOCAB", "PAIRED", "Unit", "check_balance", "encode_rows", "generate_block",
           "init_worker", "run_unit"]

MODULES = {"mme": mme, "mmb": mmb, "vqa": vqa, "gqa": gqa, "sqa": sqa, "mmmu": mmmu,
           "textvqa": textvqa, "vizwiz": vizwiz, "pope": pope}
PAIRED = ("mme", "vqa")  # eval items come in pairs: block sizes must be even


@dataclass(frozen=True)
class Unit:
    """One block of work: ``count`` train images or val/test items of one task."""

    task: str
    split: str
    seed: int
    block: int
    count: int


def seed_stream(unit: Unit) -> str:
    source = "mmb" if unit.task == "mmbcn" and unit.split != "train" else unit.task
    return f"{source}-{unit.split}-{unit.seed}-{unit.block}"


def generate_block(unit: Unit, assets: Assets, size: int, cache: dict | None = None) -> list[dict]:
    """Rows of one block: train rows carry ``conversations``, val/test rows the eval fields.

    Every row also has ``image`` (an (S, S, 3) uint8 array); eval rows have ``group`` (pair id or
    "" for a single item), which dedupe uses to drop pairs together.
    """
    stream = seed_stream(unit)
    rng = random.Random(stream)
    ctx = Context(assets, size, unit.split, unit.seed, block_id=stream,
                  cache={} if cache is None else cache)
    chinese = unit.task == "mmbcn"
    module = mmb if chinese else MODULES[unit.task]
    kwargs = {"chinese": True} if chinese else {}
    if unit.split == "train":
        rows = []
        for _ in range(unit.count):
            ex = module.train_example(rng, ctx, **kwargs)
            rows.append({"task": unit.task, "image": ex.image, "conversations": pack(rng, ex)})
        return rows
    items = module.eval_items(rng, ctx, unit.count, **kwargs)
    if len(items) != unit.count:
        raise AssertionError(f"{stream}: {len(items)} items, expected {unit.count}")
    return [{"task": unit.task, "image": it.image, "question": it.question, "answer": it.answer,
             "answers": list(it.answers), "options": list(it.options),
             "meta": json.dumps(it.meta, sort_keys=True, ensure_ascii=False),
             "group": f"{stream}/{it.group}" if it.group else ""} for it in items]


def encode_rows(rows: list[dict]) -> list[dict]:
    """Replace each row's array ``image`` by PNG ``png`` bytes and the sha256 ``hash`` of its
    uint8 pixels (shape included), which dedupe and the fingerprint use."""
    for row in rows:
        arr = np.ascontiguousarray(row.pop("image"), dtype=np.uint8)
        digest = hashlib.sha256(repr(arr.shape).encode() + arr.tobytes()).hexdigest()
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        row["png"], row["hash"] = buf.getvalue(), digest
    return rows


# --- pool workers: the assets are handed over once per process (its one piece of state) ----

_WORKER: dict = {}


def init_worker(assets: Assets, size: int) -> None:
    # A forked worker inherits its parent's signal handlers; under a Ray driver that is Ray's
    # crash reporter, which prints a stack trace when the pool terminates its workers.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _WORKER.update(assets=assets, size=size, cache={})


def run_unit(unit: Unit) -> list[dict]:
    return encode_rows(generate_block(unit, _WORKER["assets"], _WORKER["size"], _WORKER["cache"]))
