"""Load sweep results (``trials.parquet``) and single runs (``result.json``) into one frame."""

from __future__ import annotations

import glob
import json
import os
from typing import Iterable, Union

import pandas as pd

from analysis.schema import to_frame, validate

TRIALS_FILE = "trials.parquet"
RESULT_FILE = "result.json"


def _expand(path: str) -> list[str]:
    """A file stays; a folder yields its trials.parquet files and result.json files (recursive)."""
    if os.path.isfile(path):
        return [path]
    if os.path.isdir(path):
        found = sorted(glob.glob(os.path.join(path, "**", TRIALS_FILE), recursive=True))
        found += sorted(glob.glob(os.path.join(path, "**", RESULT_FILE), recursive=True))
        # A sweep's Ray folders hold Tune's own result.json files (JSON lines): not ours.
        return [p for p in found if p.endswith(TRIALS_FILE) or _is_run_result(p)]
    raise FileNotFoundError(f"no such file or folder: {path}")


def _is_run_result(path: str) -> bool:
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "status" in record and "trial_id" in record


def _read(path: str) -> pd.DataFrame:
    if path.endswith(".parquet"):
        frame = pd.read_parquet(path)
    elif path.endswith(".json"):
        with open(path) as f:
            frame = to_frame([json.load(f)])
    else:
        raise ValueError(f"{path}: expected a .parquet or a result .json file")
    return frame.assign(source=os.path.abspath(path))


def load_results(paths: Union[str, os.PathLike, Iterable[Union[str, os.PathLike]]]) -> pd.DataFrame:
    """One validated frame from ``trials.parquet`` files, ``result.json`` files or folders.

    Folders are searched recursively. A ``source`` column names the file each row came from.
    Columns missing from some inputs (e.g. ``train/align_loss`` in an SFT run) are null there.

    Raises:
        FileNotFoundError: a path does not exist, or nothing loadable was found.
        analysis.schema.SchemaError: a row breaks the contract.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = [f for p in paths for f in _expand(os.fspath(p))]
    if not files:
        raise FileNotFoundError(f"no {TRIALS_FILE} or {RESULT_FILE} under {list(paths)}")
    frames = [_read(f) for f in files]
    frame = pd.concat(frames, ignore_index=True, sort=False) if len(frames) > 1 else frames[0]
    # concat of int and missing columns can produce object/float mixes; re-apply the dtypes.
    frame = to_frame(frame.to_dict("records")) if len(frames) > 1 else frame
    return validate(frame)
