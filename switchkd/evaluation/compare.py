"""Is one run clearly above another on the same items, task by task?

The main use is a model against its blind baseline (BENCHMARK_DESIGN.md section 5.3: the same
model with every image zeroed, ``predict(..., blind=True)``, i.e. what it scores from the
question text alone; ``switchkd eval --vs-blind``), and a teacher against a student.
``compare_runs`` gives, per task, the difference of the primary metrics and a paired bootstrap
interval over the items (``bootstrap.paired_bootstrap``). For most tasks the primary metric is
the mean of the item scores, so the interval is that of the primary difference. MME (acc + acc+
per image) and POPE (F1) are whole-set metrics: their interval is that of the per-question
accuracy difference instead (``basis: "accuracy"``), which is what the items can resample.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np

from switchkd.evaluation import metrics
from switchkd.evaluation.bootstrap import paired_bootstrap

# Tasks whose primary metric is not the mean of their item scores.
WHOLE_METRIC_TASKS = frozenset({"mme", "pope"})


def compare_runs(records: Sequence[Mapping[str, Any]],
                 reference_records: Sequence[Mapping[str, Any]], *, num_samples: int = 10_000,
                 seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per task: ``model``, ``reference`` (primary metrics, percent), ``diff`` (model -
    reference), and the 95 % paired bootstrap ``low`` / ``high`` / ``p_value`` of the mean item
    score difference with its ``basis`` ("primary", or "accuracy" for MME and POPE) and
    ``clearly_above`` (the interval lies above 0). Records: ``predict``'s.

    Raises:
        ValueError: the two runs did not score the same items (task and index per record).
    """
    if [(r["task"], r["index"]) for r in records] != \
            [(r["task"], r["index"]) for r in reference_records]:
        raise ValueError("compare_runs needs the same items in the same order in both runs")
    by_task: dict[str, list[int]] = defaultdict(list)
    for k, record in enumerate(records):
        by_task[record["task"]].append(k)
    out = {}
    for task, positions in by_task.items():
        own = [records[k] for k in positions]
        reference = [reference_records[k] for k in positions]
        model_primary = metrics.task_metrics(task, own)["primary"]
        reference_primary = metrics.task_metrics(task, reference)["primary"]
        a = 100.0 * np.array([r["score"] for r in reference])  # (I,)
        b = 100.0 * np.array([r["score"] for r in own])  # (I,)
        interval = paired_bootstrap(a, b, num_samples=num_samples, seed=seed)
        out[task] = {"model": model_primary, "reference": reference_primary,
                     "diff": model_primary - reference_primary,
                     "basis": "accuracy" if task in WHOLE_METRIC_TASKS else "primary",
                     "low": interval["low"], "high": interval["high"],
                     "p_value": interval["p_value"], "clearly_above": bool(interval["low"] > 0)}
    return out


def format_comparison(comparison: Mapping[str, Mapping[str, Any]], *,
                      reference: str = "blind") -> str:
    """A plain-text table of ``compare_runs``: one line per task."""
    lines = [f"{'task':<8} {'model':>6} {reference[:8]:>8} {'diff':>6}  95% CI of the mean "
             "item difference   clearly above"]
    for task, row in comparison.items():
        interval = f"[{row['low']:+6.1f}, {row['high']:+6.1f}]" + (
            " (accuracy)" if row["basis"] == "accuracy" else "")
        lines.append(f"{task:<8} {row['model']:6.1f} {row['reference']:8.1f} {row['diff']:+6.1f}  "
                     f"{interval:<28} {'yes' if row['clearly_above'] else 'no'}")
    return "\n".join(lines)
