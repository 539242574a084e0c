"""compare_runs: per-task differences of two runs on the same items, with paired bootstrap
intervals (a model against its blind baseline, a teacher against a student)."""

from __future__ import annotations

import pytest

from switchkd.evaluation.compare import compare_runs, format_comparison


def _records(task, scores, **extra):
    return [{"task": task, "index": i, "prediction": "x", "answer": "x", "answers": [],
             "meta": {}, "score": float(s), **extra} for i, s in enumerate(scores)]


def _mme(correct):
    """MME records: two questions per image, all right or all wrong."""
    return [{"task": "mme", "index": i, "prediction": "yes" if correct else "no",
             "answer": "yes", "answers": [], "meta": {"subtask": "color", "image_id": str(i // 2)},
             "score": float(correct)} for i in range(40)]


def test_a_model_right_where_its_blind_run_is_wrong_is_clearly_above():
    model = _records("gqa", [1] * 60 + [0] * 40) + _mme(True)
    blind = _records("gqa", [1] * 30 + [0] * 70) + _mme(False)
    out = compare_runs(model, blind, num_samples=2000)
    gqa = out["gqa"]
    assert (gqa["model"], gqa["reference"], gqa["diff"]) == (60.0, 30.0, 30.0)
    assert 0 < gqa["low"] < 30 < gqa["high"] and gqa["clearly_above"] is True
    assert gqa["basis"] == "primary"
    # MME's primary is a whole-set metric: its interval is that of the question accuracy.
    mme = out["mme"]
    assert (mme["model"], mme["reference"]) == (100.0, 0.0) and mme["basis"] == "accuracy"
    assert mme["low"] == mme["high"] == 100.0 and mme["clearly_above"] is True
    table = format_comparison(out)
    assert "gqa" in table and "(accuracy)" in table


def test_equal_scores_are_not_clearly_above():
    scores = [1, 0] * 50
    out = compare_runs(_records("sqa", scores), _records("sqa", scores[::-1]), num_samples=2000)
    assert out["sqa"]["diff"] == 0.0 and out["sqa"]["clearly_above"] is False


def test_circular_tasks_compare_their_circular_item_scores():
    model = _records("mmb", [1] * 50, rotation_correct=[True] * 4)
    blind = _records("mmb", [0] * 50, rotation_correct=[True, False, False, False])
    out = compare_runs(model, blind, num_samples=500)
    assert (out["mmb"]["model"], out["mmb"]["reference"]) == (100.0, 0.0)
    assert out["mmb"]["clearly_above"] is True


def test_different_items_raise():
    with pytest.raises(ValueError, match="same items"):
        compare_runs(_records("gqa", [1, 0]), _records("gqa", [1]))
