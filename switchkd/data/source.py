"""One entry point from ``DataConfig`` to datasets + tokenizer: ``load_data``.

``data.kind="minivl"`` builds (or reuses from ``cache_dir``) the offline MiniVL-10 suite and keeps
the configured tasks; ``data.kind="llava"`` reads a LLaVA conversation file (train only).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Iterable, Optional

import datasets

from switchkd.config import DataConfig
from switchkd.data.llava import LLAVA_TASK, read_llava, records_to_dataset
from switchkd.data.tokenizer import load_tokenizer


@dataclass(frozen=True)
class DataBundle:
    """The data of one run.

    ``val`` holds at most ``data.val_items_per_task`` items per task (the first ones, so the
    selection is deterministic). ``val`` and ``test`` are ``None`` for LLaVA data.
    ``fingerprint`` identifies the data content (16 hex digits) and goes into result records.
    """

    train: datasets.Dataset
    val: Optional[datasets.Dataset]
    test: Optional[datasets.Dataset]
    tokenizer: object
    tokenizer_dir: str
    fingerprint: str
    tasks: tuple[str, ...]


def load_data(data_cfg: DataConfig, cache_dir: str) -> DataBundle:
    """Load the data named by ``data_cfg``.

    Raises:
        ValueError: ``data.tasks`` names a task the suite does not have.
        FileNotFoundError / LlavaFormatError: from the LLaVA loader.
    """
    if data_cfg.kind == "minivl":
        return _load_minivl(data_cfg, cache_dir)
    if data_cfg.kind == "llava":
        return _load_llava(data_cfg)
    raise ValueError(f"data.kind: unknown kind {data_cfg.kind!r}")


def _load_minivl(data_cfg: DataConfig, cache_dir: str) -> DataBundle:
    from switchkd.data.suite import build_suite  # heavy (drawing code); only needed here

    suite = build_suite(data_cfg.profile, data_cfg.seed, cache_dir)
    missing = [t for t in data_cfg.tasks if t not in suite.tasks]
    if missing:
        raise ValueError(f"data.tasks: {missing} not in the MiniVL-10 suite "
                         f"(has {list(suite.tasks)})")
    tasks = tuple(data_cfg.tasks)
    return DataBundle(
        train=select_tasks(suite.split("train"), tasks),
        val=select_tasks(suite.split("val"), tasks, per_task=data_cfg.val_items_per_task),
        test=select_tasks(suite.split("test"), tasks),
        tokenizer=load_tokenizer(suite.tokenizer_dir),
        tokenizer_dir=suite.tokenizer_dir,
        fingerprint=suite.fingerprint,
        tasks=tasks,
    )


def _load_llava(data_cfg: DataConfig) -> DataBundle:
    records = read_llava(data_cfg.llava_json, data_cfg.image_dir)
    return DataBundle(
        train=records_to_dataset(records),
        val=None,
        test=None,
        tokenizer=load_tokenizer(data_cfg.tokenizer_dir),
        tokenizer_dir=data_cfg.tokenizer_dir,
        fingerprint=file_fingerprint([data_cfg.llava_json] + [r["image"] for r in records]),
        tasks=(LLAVA_TASK,),
    )


def select_tasks(split: datasets.Dataset, tasks: Iterable[str], *,
                 per_task: int | None = None) -> datasets.Dataset:
    """The rows of ``split`` whose ``task`` is in ``tasks``, in their stored order.

    ``per_task`` keeps only the first that many rows of each task. Reads only the ``task``
    column (images are not decoded).
    """
    keep = set(tasks)
    counts = dict.fromkeys(keep, 0)
    indices = []
    for i, task in enumerate(split["task"]):
        if task in keep and (per_task is None or counts[task] < per_task):
            counts[task] += 1
            indices.append(i)
    return split.select(indices)


def file_fingerprint(paths: Iterable[str]) -> str:
    """sha256 over the bytes of ``paths`` in order (each file once), first 16 hex digits.

    For LLaVA data the first path is the JSON file and the rest are the images it references,
    so any edit to the text or to an image changes the fingerprint.
    """
    digest = hashlib.sha256()
    seen = set()
    for path in paths:
        if path in seen:
            continue
        seen.add(path)
        digest.update(os.path.getsize(path).to_bytes(8, "little"))  # file boundaries count
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]
