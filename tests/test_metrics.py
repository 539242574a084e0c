"""Scorers on hand-made predictions with hand-computed scores."""

from __future__ import annotations

import pytest

from switchkd.evaluation import metrics
from switchkd.evaluation.metrics import (avg10, circular_scores, exact_match, group_averages,
                                         mme_scores, normalize_answer, pope_scores, task_metrics,
                                         unanswerable_f1, vqa_accuracy)


def _rec(task="gqa", prediction="", answer="", score=None, answers=(), **meta):
    if score is None:
        score = metrics.item_score(task, prediction, answer, answers)
    return {"task": task, "index": 0, "prediction": prediction, "answer": answer,
            "answers": list(answers), "meta": meta, "score": score}


@pytest.mark.parametrize("raw, normalised", [
    ("Grey.", "gray"), ("  RED ", "red"), ("Seven", "7"), ("two cats!", "2 cats"),
    ("3.5", "3.5"), ("yes, it is", "yes it is"), ("7Q", "7q"), ("none", "0"), ("是。", "是"),
])
def test_normalize_answer(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_exact_match_uses_normalisation():
    assert exact_match("Grey", "gray") == 1.0
    assert exact_match("seven.", "7") == 1.0
    assert exact_match("blue", "gray") == 0.0


@pytest.mark.parametrize("matches, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0),
                                               (10, 1.0)])
def test_vqa_accuracy_official_leave_one_out(matches, expected):
    """10 answers: mean over the 10 subsets of 9 of min(1, matches / 3)."""
    answers = ["red"] * matches + ["blue"] * (10 - matches)
    assert vqa_accuracy("red", answers) == pytest.approx(expected)


def test_vqa_accuracy_pseudo_answers_with_synonyms_and_single_reference():
    answers = ["gray"] * 7 + ["grey"] * 3
    assert vqa_accuracy("Grey", answers) == 1.0  # all ten match after normalisation
    assert vqa_accuracy("seven", ["7"]) == 1.0  # one reference: exact match
    assert vqa_accuracy("8", ["7"]) == 0.0
    assert vqa_accuracy("red", ["red", "blue"]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        vqa_accuracy("red", [])


def test_item_score_dispatch():
    assert metrics.item_score("vqa", "red", "red", ["red"] * 3 + ["blue"] * 7) == pytest.approx(0.9)
    assert metrics.item_score("textvqa", "7q", "7Q") == 1.0  # no answers -> [answer]
    assert metrics.item_score("gqa", "left", "right") == 0.0


def test_mme_acc_acc_plus_and_score():
    """Two subtasks; acc+ needs both questions of an image right."""
    records = [
        # existence: img1 both right, img2 one right -> acc 3/4, acc+ 1/2
        _rec("mme", score=1.0, subtask="existence", image_id="1"),
        _rec("mme", score=1.0, subtask="existence", image_id="1"),
        _rec("mme", score=1.0, subtask="existence", image_id="2"),
        _rec("mme", score=0.0, subtask="existence", image_id="2"),
        # count: img3 both wrong -> acc 0, acc+ 0
        _rec("mme", score=0.0, subtask="count", image_id="3"),
        _rec("mme", score=0.0, subtask="count", image_id="3"),
    ]
    out = mme_scores(records)
    assert out["existence_acc"] == pytest.approx(75.0)
    assert out["existence_acc_plus"] == pytest.approx(50.0)
    assert out["existence_score"] == pytest.approx(125.0)
    assert out["count_score"] == pytest.approx(0.0)
    assert out["total"] == pytest.approx(125.0)
    assert out["primary"] == pytest.approx(125.0 / 4)  # total / (2 * #subtasks)


def test_mme_five_perfect_subtasks_give_1000_and_100_percent():
    records = [_rec("mme", score=1.0, subtask=s, image_id=f"{s}{i}")
               for s in ("existence", "count", "position", "color", "ocr") for i in range(4)]
    out = mme_scores(records)
    assert out["total"] == pytest.approx(1000.0) and out["primary"] == pytest.approx(100.0)


def test_circular_eval_needs_every_rotation_right():
    records = [
        {"rotation_correct": [True, True, True, True]},
        {"rotation_correct": [True, False, True, True]},  # vanilla right, circular wrong
        {"rotation_correct": [False, True, True, True]},
        {"rotation_correct": [True, True, True, True]},
    ]
    assert circular_scores(records) == {"circular": 50.0, "vanilla": 75.0}
    out = task_metrics("mmb", [dict(r, score=float(all(r["rotation_correct"]))) for r in records])
    assert out == {"primary": 50.0, "vanilla": 75.0}


def test_pope_metrics_per_setting_and_mean_f1():
    random = [("yes", "yes"), ("yes", "yes"), ("no", "yes"), ("no", "no"), ("yes", "no"),
              ("no", "no")]  # tp 2, fn 1, fp 1, tn 2
    popular = [("yes", "yes"), ("yes", "yes"), ("yes", "no"), ("yes", "no")]  # tp 2, fp 2
    records = ([_rec("pope", p, g, setting="random") for p, g in random]
               + [_rec("pope", p, g, setting="popular") for p, g in popular])
    out = pope_scores(records)
    assert out["random_acc"] == pytest.approx(400 / 6)
    assert out["random_precision"] == pytest.approx(200 / 3)
    assert out["random_recall"] == pytest.approx(200 / 3)
    assert out["random_f1"] == pytest.approx(200 / 3)
    assert out["random_yes_ratio"] == pytest.approx(50.0)
    assert out["popular_precision"] == pytest.approx(50.0)
    assert out["popular_recall"] == pytest.approx(100.0)
    assert out["popular_f1"] == pytest.approx(200 / 3)
    assert out["popular_yes_ratio"] == pytest.approx(100.0)
    assert out["primary"] == pytest.approx(200 / 3)


def test_pope_all_no_gives_zero_f1_not_nan():
    out = pope_scores([_rec("pope", "no", g, setting="adversarial") for g in ("yes", "no")])
    assert out["adversarial_f1"] == 0.0 and out["adversarial_acc"] == 50.0


def test_vizwiz_unanswerable_f1():
    predictions = ["unanswerable", "Unanswerable.", "red", "unanswerable"]
    answers = ["unanswerable", "unanswerable", "unanswerable", "red"]
    # tp 2, fn 1, fp 1 -> precision 2/3, recall 2/3
    assert unanswerable_f1(predictions, answers) == pytest.approx(200 / 3)
    records = [_rec("vizwiz", p, a) for p, a in zip(predictions, answers)]
    out = task_metrics("vizwiz", records)
    assert out["primary"] == pytest.approx(50.0)
    assert out["unanswerable_f1"] == pytest.approx(200 / 3)


def test_gqa_accuracy_per_type():
    records = [_rec("gqa", "yes", "yes", type="verify"), _rec("gqa", "no", "yes", type="verify"),
               _rec("gqa", "red", "red", type="query")]
    out = task_metrics("gqa", records)
    assert out == {"primary": pytest.approx(200 / 3), "verify": 50.0, "query": 100.0}


def test_group_averages_and_avg10():
    primary = {t: float(10 * i) for i, t in enumerate(metrics.TASKS)}  # mme 0 ... pope 90
    groups = group_averages(primary)
    assert groups == {"perception": pytest.approx((0 + 10 + 20 + 30 + 40) / 5),
                      "cognition": 60.0, "domain": 50.0, "ocr": 75.0, "hallucination": 90.0}
    assert avg10(primary) == pytest.approx(45.0)
    partial = {"mmmu": 20.0, "textvqa": 40.0}
    assert group_averages(partial) == {"cognition": 20.0}  # ocr lacks vizwiz
    with pytest.raises(ValueError, match="vizwiz"):
        avg10(partial)


def test_groups_cover_every_task_once():
    grouped = [t for tasks in metrics.TASK_GROUPS.values() for t in tasks]
    assert sorted(grouped) == sorted(metrics.TASKS)
