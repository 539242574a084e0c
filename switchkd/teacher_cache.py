"""Teacher logits at the supervised positions, computed once and read back memory-mapped.

The teacher reference pass ``z_T = L_T(P_T(V_T(x)))`` (METHOD.md section 2) depends only on the
frozen teacher and the data, never on the student, so it can be computed once per (teacher,
train split, ``max_length``) and shared by every run and sweep trial that uses them. The
visual-switch pass ``L_T(P_T(V_S(x)))`` depends on the student and always stays live.

Only answer positions are stored (``labels[:, 1:] != -100`` after the causal shift, what
``loss.kd_positions="answer"`` averages over). A cache folder holds

* ``logits.f16``: raw float16, shape (P, V), row-major; P = answer positions of the whole
  train split in dataset order, V = the teacher's vocabulary. Read with ``numpy.memmap``, so
  the page cache shares it between processes and only the rows a batch touches are read.
* ``offsets.npy``: int64 (R + 1,); train row ``i`` owns ``logits[offsets[i]:offsets[i + 1]]``.
* ``cache.json``: teacher key, data fingerprint, tasks, vocab, dtype, max_length, row and
  position counts, bytes and build seconds.

Shapes: R train rows, P answer positions in total, V vocabulary, n positions of one batch.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from switchkd.data.collate import Collator
from switchkd.data.source import DataBundle
from switchkd.models.vlm import VLM

LOGITS_FILE = "logits.f16"
OFFSETS_FILE = "offsets.npy"
META_FILE = "cache.json"
FORMAT_VERSION = 1


class TeacherCacheError(ValueError):
    """A teacher-logit cache is missing, corrupt, or belongs to other data or another teacher;
    the message names the offending file."""


@dataclass(frozen=True)
class TeacherCache:
    """A read-only, memory-mapped teacher-logit cache (see the module docstring).

    Shapes: ``logits`` (P, V) float16 memmap; ``offsets`` (R + 1,) int64.
    """

    directory: str
    logits: np.ndarray
    offsets: np.ndarray
    meta: dict[str, Any]

    @property
    def num_rows(self) -> int:
        return len(self.offsets) - 1

    @property
    def vocab_size(self) -> int:
        return self.logits.shape[1]

    def logits_for(self, row_indices: Sequence[int]) -> torch.Tensor:
        """The cached teacher logits of a batch made of these train rows, in this order.

        The positions come row by row, each row's in sequence order: exactly the order in
        which ``batch.logits[:, :-1][batch.labels[:, 1:] != -100]`` selects them from a
        collated batch of ``row_indices``.

        Shapes: row_indices (B,) -> (n, V) float32, n = the batch's answer positions.

        Raises:
            IndexError: a row index outside ``[0, num_rows)``.
        """
        pieces = []
        for i in row_indices:
            if not 0 <= i < self.num_rows:
                raise IndexError(f"row {i} is outside the {self.num_rows} rows of the teacher "
                                 f"cache {self.directory}")
            pieces.append(self.logits[self.offsets[i]:self.offsets[i + 1]])  # (n_i, V)
        if not pieces:
            return torch.empty(0, self.vocab_size)
        return torch.from_numpy(np.concatenate(pieces)).float()  # (n, V)

    def check_matches(self, *, num_rows: int, vocab_size: int) -> None:
        """Raise ``TeacherCacheError`` unless the cache has this many rows and this vocabulary."""
        if self.num_rows != num_rows:
            raise TeacherCacheError(
                f"{os.path.join(self.directory, OFFSETS_FILE)}: the cache holds {self.num_rows} "
                f"train rows but the train split has {num_rows}; delete {self.directory} to "
                "rebuild it")
        if self.vocab_size != vocab_size:
            raise TeacherCacheError(
                f"{os.path.join(self.directory, LOGITS_FILE)}: cached vocabulary {self.vocab_size} "
                f"but the teacher has {vocab_size}; delete {self.directory} to rebuild it")


def build_teacher_cache(teacher: VLM, bundle: DataBundle, collator: Collator, directory: str, *,
                        teacher_key: str = "", batch_size: int = 64,
                        device: str | torch.device = "cpu") -> TeacherCache:
    """Run the frozen teacher over the train split once and store its answer-position logits.

    Rows are collated in dataset order, ``batch_size`` at a time (right padding leaves the
    causal logits at real positions unchanged). The teacher runs under ``torch.no_grad`` in
    its own dtype, without autocast; logits are rounded to float16 for storage. The folder is
    written to a temporary sibling and renamed, so a killed build never leaves a half cache.

    Args:
        teacher: the frozen teacher, already on ``device``.
        bundle: the data; only ``bundle.train`` is cached.
        collator: collates train rows exactly as the training loop does.
        directory: the cache folder to create (must not exist yet).
        teacher_key: recorded in ``cache.json`` (provenance only).
        batch_size: rows per teacher forward.
        device: where the batches go.

    Returns:
        The opened cache.

    Raises:
        TeacherCacheError: a logit does not fit float16 (|z| > 65504).
    """
    start = time.perf_counter()
    tmp = f"{directory}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    num_rows = len(bundle.train)
    offsets = np.zeros(num_rows + 1, dtype=np.int64)  # (R + 1,)
    vocab = teacher.vocab_size
    with open(os.path.join(tmp, LOGITS_FILE), "wb") as out, torch.no_grad():
        for first in range(0, num_rows, batch_size):
            rows = range(first, min(first + batch_size, num_rows))
            batch = collator.train_batch([bundle.train[i] for i in rows]).to(device)
            logits = teacher(batch.pixel_values, batch.input_ids,
                             batch.attention_mask).logits[:, :-1]  # (B, T-1, V)
            mask = batch.labels[:, 1:] != -100  # (B, T-1)
            answer = logits[mask].half().cpu().numpy()  # (n, V) float16
            if not np.isfinite(answer).all():
                raise TeacherCacheError(f"{directory}: teacher logits of rows {rows.start}-"
                                        f"{rows.stop - 1} are not finite in float16")
            out.write(answer.tobytes())
            offsets[first + 1:rows.stop + 1] = offsets[first] + mask.sum(1).cumsum(0).cpu().numpy()
    np.save(os.path.join(tmp, OFFSETS_FILE), offsets)
    meta = {"version": FORMAT_VERSION, "teacher_key": teacher_key,
            "data_fingerprint": bundle.fingerprint, "tasks": list(bundle.tasks),
            "vocab_size": vocab, "dtype": "float16", "max_length": collator.max_length,
            "num_rows": num_rows, "num_positions": int(offsets[-1]),
            "bytes": int(offsets[-1]) * vocab * 2,
            "build_s": time.perf_counter() - start}
    with open(os.path.join(tmp, META_FILE), "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(tmp, directory)
    return open_teacher_cache(directory)


def open_teacher_cache(directory: str) -> TeacherCache:
    """Open a cache folder read-only and check that its three files agree with each other.

    Raises:
        TeacherCacheError: a file is missing or unreadable, or the logits file's size, the
            offsets and ``cache.json`` disagree (the message names the file).
    """
    meta_path = os.path.join(directory, META_FILE)
    offsets_path = os.path.join(directory, OFFSETS_FILE)
    logits_path = os.path.join(directory, LOGITS_FILE)
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        num_rows, vocab, positions = meta["num_rows"], meta["vocab_size"], meta["num_positions"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TeacherCacheError(f"{meta_path}: unreadable teacher cache metadata ({err}); "
                                f"delete {directory} to rebuild it") from err
    if meta.get("version") != FORMAT_VERSION or meta.get("dtype") != "float16":
        raise TeacherCacheError(f"{meta_path}: format {meta.get('version')}/{meta.get('dtype')}, "
                                f"expected {FORMAT_VERSION}/float16; delete {directory}")
    try:
        offsets = np.load(offsets_path)  # (R + 1,)
    except (OSError, ValueError) as err:
        raise TeacherCacheError(f"{offsets_path}: unreadable ({err})") from err
    if (offsets.dtype != np.int64 or offsets.shape != (num_rows + 1,) or offsets[0] != 0
            or offsets[-1] != positions or (np.diff(offsets) < 0).any()):
        raise TeacherCacheError(f"{offsets_path}: expected {num_rows + 1} non-decreasing int64 "
                                f"offsets from 0 to {positions} (cache.json), got "
                                f"{offsets.dtype} {offsets.shape}")
    expected_bytes = positions * vocab * 2
    size = os.path.getsize(logits_path) if os.path.isfile(logits_path) else -1
    if size != expected_bytes:
        raise TeacherCacheError(f"{logits_path}: {size} bytes, expected {expected_bytes} "
                                f"({positions} positions x {vocab} vocab x float16)")
    logits = (np.memmap(logits_path, dtype=np.float16, mode="r", shape=(positions, vocab))
              if positions else np.zeros((0, vocab), dtype=np.float16))  # (P, V)
    return TeacherCache(directory=directory, logits=logits, offsets=offsets, meta=meta)
