"""The Parquet column contract shared by sweeps (``trials.parquet``, ``history.parquet``) and
single runs (``result.json``).

One row per trial (``trials.parquet``) or per report (``history.parquet``, which adds the
``step`` of the report). Columns:

* provenance: ``study``, ``trial_id``, ``status`` (completed | stopped_early | errored),
  ``error`` (the reason, set exactly when errored), ``seed``, ``git_sha``, ``data_fingerprint``,
  ``teacher_fingerprint``, ``schema_version``;
* ``cfg.<dotted key>`` for every leaf of the config tree; list values are stored as JSON strings;
* metrics: ``train/*``, ``val/*`` and ``test/*`` (at least ``train/loss``, ``train/ce_loss`` and
  one ``val/*``; ``test/*`` only where a run was scored on the test split, e.g. ablations), as
  float64, null where a run never reported them (e.g. errored at step 0);
* cost: ``wall_s``, ``steps``, ``samples``, ``samples_per_s``, ``teacher_forward_passes``,
  ``teacher_backward_passes`` (float64, null when never reported);
* optional provenance (strings, present only where known): ``variant`` (the ablation variant
  of the row) and ``checkpoint_path`` (the trial's last checkpoint folder).

Ablations also write ``items.parquet``: one row per (trial, test item) with ``ITEM_COLUMNS``,
the per-item scores (0-1) that the report's paired tests resample.

This module knows nothing of switchkd (analysis never imports it), so the full set of ``cfg.*``
keys is passed in by the caller that knows it (``validate(df, cfg_keys=...)``); without it only
``CORE_CFG_KEYS`` are required.
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable, Mapping, Optional, Sequence

import pandas as pd

SCHEMA_VERSION = 1
STATUSES = ("completed", "stopped_early", "errored")

STRING_COLUMNS = ("study", "trial_id", "status", "error", "git_sha", "data_fingerprint",
                  "teacher_fingerprint")
OPTIONAL_STRING_COLUMNS = ("variant", "checkpoint_path")
INT_COLUMNS = ("seed", "schema_version")
PROVENANCE_COLUMNS = ("study", "trial_id", "status", "error", "seed", "git_sha",
                      "data_fingerprint", "teacher_fingerprint", "schema_version")
COST_COLUMNS = ("wall_s", "steps", "samples", "samples_per_s", "teacher_forward_passes",
                "teacher_backward_passes")
REQUIRED_METRICS = ("train/loss", "train/ce_loss")
# The keys sweeps vary; kept in step with switchkd.config by tests/test_schema.py.
CORE_CFG_KEYS = ("loss.kind", "loss.align_weight", "loss.vsd_weight", "loss.temperature",
                 "loss.window", "loss.k_min", "loss.k_max", "loss.fixed_k", "loss.divergence",
                 "loss.directions", "loss.switch_ratio", "optim.lr", "run.seed", "train.stage",
                 "train.max_steps", "train.eval_every", "model.student_vision_init",
                 "run.cache_dir", "preset")
HISTORY_COLUMNS = ("step",)
ITEM_COLUMNS = ("study", "trial_id", "variant", "seed", "task", "index", "score")


class SchemaError(ValueError):
    """A frame breaks the contract; the message lists every problem found."""


def is_metric(name: str) -> bool:
    return name.startswith(("train/", "val/", "test/"))


def _cfg_value(value: Any) -> Any:
    """Scalars stay; lists/tuples/dicts become JSON strings (Parquet columns hold scalars)."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    return value


def _number(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return math.nan if value is None else float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def to_frame(records: Sequence[Mapping[str, Any]], *, history: bool = False) -> pd.DataFrame:
    """Rows (flat dicts) -> a DataFrame with the contract's dtypes.

    Fills missing metric and cost columns with nulls, JSON-encodes list-valued ``cfg.*`` values,
    and fills a missing ``schema_version`` with the current one. Does not validate.
    """
    rows = []
    for record in records:
        row = {k: (_cfg_value(v) if k.startswith("cfg.") else v) for k, v in record.items()}
        row.setdefault("schema_version", SCHEMA_VERSION)
        rows.append(row)
    frame = pd.DataFrame.from_records(rows)
    columns: dict[str, pd.Series] = {}
    for name in (*STRING_COLUMNS, *COST_COLUMNS, *REQUIRED_METRICS,
                 *(HISTORY_COLUMNS if history else ())):
        if name not in frame.columns:
            columns[name] = pd.Series([None] * len(frame), dtype=object)
    for name in frame.columns:
        columns[name] = _typed(name, frame[name])
    for name in list(columns):
        if name not in frame.columns:
            columns[name] = _typed(name, columns[name])
    frame = pd.DataFrame(columns, index=range(len(rows)))
    return frame[_column_order(frame.columns)]


def _typed(name: str, column: pd.Series) -> pd.Series:
    column = column.reset_index(drop=True)
    if name in STRING_COLUMNS or name in OPTIONAL_STRING_COLUMNS:
        return column.map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v))
                          else str(v)).astype(object)
    if name in INT_COLUMNS:
        return column.astype("int64")
    if name in COST_COLUMNS or is_metric(name) or name in HISTORY_COLUMNS:
        return column.map(_number).astype("float64")
    if name.startswith("cfg."):
        return _cfg_column(column)
    return column


def _column_order(columns: Iterable[str]) -> list[str]:
    """Provenance, cfg.*, step, train/*, val/*, test/*, cost, then anything else (Tune
    bookkeeping)."""
    def rank(name: str) -> tuple[int, int]:
        if name in PROVENANCE_COLUMNS:
            return 0, PROVENANCE_COLUMNS.index(name)
        if name in OPTIONAL_STRING_COLUMNS:
            return 0, len(PROVENANCE_COLUMNS) + OPTIONAL_STRING_COLUMNS.index(name)
        if name.startswith("cfg."):
            return 1, 0
        if name in HISTORY_COLUMNS:
            return 2, 0
        if name.startswith("train/"):
            return 3, 0
        if name.startswith("val/"):
            return 4, 0
        if name.startswith("test/"):
            return 4, 1
        if name in COST_COLUMNS:
            return 5, COST_COLUMNS.index(name)
        return 6, 0
    return sorted(columns, key=rank)  # stable: keeps the input order within a group


def _cfg_column(column: pd.Series) -> pd.Series:
    """One dtype per cfg column: bool, int64, float64, or object (strings, None, mixed)."""
    values = [v for v in column if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if len(values) == len(column) and values:
        if all(isinstance(v, bool) for v in values):
            return column.astype(bool)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return column.astype("int64")
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return column.astype("float64")
    return column.astype(object).where(column.notna(), None)


def validate(frame: pd.DataFrame, *, cfg_keys: Optional[Iterable[str]] = None,
             history: bool = False) -> pd.DataFrame:
    """Check ``frame`` against the contract; return it unchanged.

    Args:
        frame: rows of ``trials.parquet`` (or ``history.parquet`` with ``history=True``).
        cfg_keys: the dotted config keys every row must carry as ``cfg.<key>``
            (default ``CORE_CFG_KEYS``).

    Raises:
        SchemaError: listing every missing column, wrong dtype and bad value found.
    """
    problems: list[str] = []
    required = [*PROVENANCE_COLUMNS, *COST_COLUMNS, *REQUIRED_METRICS,
                *(HISTORY_COLUMNS if history else ()),
                *(f"cfg.{k}" for k in (CORE_CFG_KEYS if cfg_keys is None else cfg_keys))]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        problems.append(f"missing columns: {missing}")
    if not any(c.startswith("val/") for c in frame.columns):
        problems.append("no val/* metric column")
    for name in frame.columns:
        dtype = frame[name].dtype
        if name in INT_COLUMNS and not pd.api.types.is_integer_dtype(dtype):
            problems.append(f"{name}: expected an integer dtype, got {dtype}")
        elif (name in COST_COLUMNS or is_metric(name) or name in HISTORY_COLUMNS) and \
                not pd.api.types.is_float_dtype(dtype):
            problems.append(f"{name}: expected float64, got {dtype}")
        elif name in (*STRING_COLUMNS, *OPTIONAL_STRING_COLUMNS) and not (
                pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype)):
            problems.append(f"{name}: expected strings, got {dtype}")
        elif name.startswith("cfg.") and pd.api.types.is_object_dtype(dtype):
            bad = [v for v in frame[name] if isinstance(v, (list, tuple, dict))]
            if bad:
                problems.append(f"{name}: list values must be JSON strings, got {bad[0]!r}")
    if "status" in frame.columns:
        bad = sorted(set(frame["status"].dropna()) - set(STATUSES)) + \
            (["<null>"] if frame["status"].isna().any() else [])
        if bad:
            problems.append(f"status: values {bad} not in {list(STATUSES)}")
        if "error" in frame.columns:
            errored = frame["status"] == "errored"
            has_error = frame["error"].notna() & (frame["error"].astype(str) != "")
            if (errored & ~has_error).any():
                problems.append("error: errored rows must say why")
            if (~errored & frame["error"].notna()).any():
                problems.append("error: only errored rows may carry an error")
    if "schema_version" in frame.columns and pd.api.types.is_integer_dtype(
            frame["schema_version"].dtype):
        versions = sorted(set(frame["schema_version"]) - {SCHEMA_VERSION})
        if versions:
            problems.append(f"schema_version: {versions} (this reader knows {SCHEMA_VERSION})")
    if not history and {"study", "trial_id"} <= set(frame.columns):
        # Several single runs may share a run name; they differ by the file they came from.
        key = ["source", "study", "trial_id"] if "source" in frame.columns else ["study", "trial_id"]
        dup = frame.duplicated(key)
        if dup.any():
            problems.append(f"duplicate trials: {frame.loc[dup, 'trial_id'].tolist()}")
    if problems:
        raise SchemaError("; ".join(problems))
    return frame
