"""Pure scorers for MiniVL-10 (BENCHMARK_DESIGN.md section 5): predictions in, numbers out.

No torch here. Scorers work on *item records*, the per-item output of
``switchkd.evaluation.evaluate.predict``::

    {"task": str, "index": int,          # row index in the evaluated split
     "prediction": str,                  # decoded answer, option letter or "yes"/"no"
     "answer": str, "answers": list[str],  # gold answer and pseudo-annotator answers
     "meta": dict,                       # the row's parsed ``meta`` JSON
     "score": float,                     # item-level score in [0, 1] (``item_score``)
     "rotation_correct": list[bool],     # CircularEval tasks only; rotation 0 = stored order
     "cloze_score": float}               # multiple choice, when scored in the cloze formulation

Primary metric per task, all in percent (0-100):

* ``mme``: MME score normalised to percent. Per subtask, acc (per question) and acc+ (an image
  counts only if all its questions are right); subtask score = 100 * (acc + acc+) in [0, 200];
  ``total`` = sum over subtasks (max 1000 with the five subtasks); primary =
  total / (2 * #subtasks), i.e. total / 10 with all five subtasks.
* ``mmb``, ``mmbcn``: CircularEval accuracy (right only if right under every rotation of the
  options); the vanilla accuracy of rotation 0 is reported too.
* ``vqa``, ``textvqa``, ``vizwiz``: VQA accuracy (``vqa_accuracy``); vizwiz also reports the
  F1 of detecting "unanswerable".
* ``gqa``: exact-match accuracy, also per structural ``type``.
* ``sqa``, ``mmmu``: multiple-choice accuracy.
* every multiple-choice task, when records carry ``cloze_score``: ``cloze``, the accuracy of the
  cloze formulation (option text scored after the bare question, ``evaluate.predict``).
* ``pope``: mean F1 over the settings present (random / popular / adversarial); accuracy,
  precision, recall, F1 and yes-ratio per setting.

Groups (the paper's five columns), used by ``group_averages``:

* ``perception`` (Perception & Understanding): mme, mmb, mmbcn, vqa, gqa
* ``cognition`` (Cognition & Reasoning): mmmu
* ``domain`` (Domain-specific): sqa
* ``ocr`` (OCR): textvqa, vizwiz
* ``hallucination`` (Hallucination): pope

``avg10`` is the unweighted mean of the ten primary metrics.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any, Mapping, Sequence

TASKS: tuple[str, ...] = (
    "mme", "mmb", "mmbcn", "vqa", "gqa", "sqa", "mmmu", "textvqa", "vizwiz", "pope",
)
TASK_GROUPS: dict[str, tuple[str, ...]] = {
    "perception": ("mme", "mmb", "mmbcn", "vqa", "gqa"),
    "cognition": ("mmmu",),
    "domain": ("sqa",),
    "ocr": ("textvqa", "vizwiz"),
    "hallucination": ("pope",),
}
YES_NO_TASKS = frozenset({"mme", "pope"})
CIRCULAR_TASKS = frozenset({"mmb", "mmbcn"})
VQA_TASKS = frozenset({"vqa", "textvqa", "vizwiz"})
UNANSWERABLE = "unanswerable"

Record = Mapping[str, Any]

_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10", "eleven": "11",
    "twelve": "12", "thirteen": "13", "fourteen": "14", "fifteen": "15", "sixteen": "16",
    "seventeen": "17", "eighteen": "18", "nineteen": "19", "twenty": "20",
}
_SYNONYMS = {"grey": "gray"}
# Punctuation (ASCII and CJK) becomes a space, except a period between two digits ("3.5").
_PUNCT = re.compile(r"(?<!\d)\.|\.(?!\d)"
                    r"|[!\"#$%&'()*+,\-/:;<=>?@\[\\\]^_`{|}~，。？！：；、（）“”‘’]")


# --- answer normalisation and item-level scores ------------------------------------------------


def normalize_answer(text: str) -> str:
    """Lowercase, punctuation to spaces, number words to digits, synonyms, single spaces.

    A subset of the official VQA normaliser (no article or contraction rules), as listed in
    BENCHMARK_DESIGN.md section 5.1: ``"Grey."`` -> ``"gray"``, ``"Seven"`` -> ``"7"``.
    """
    words = _PUNCT.sub(" ", text.lower()).split()
    words = [_SYNONYMS.get(w, _NUMBER_WORDS.get(w, w)) for w in words]
    return " ".join(words)


def exact_match(prediction: str, answer: str) -> float:
    """1.0 if the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(answer))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQA accuracy as in the official VQA evaluation (leave-one-annotator-out average).

    For each of the n reference answers, the prediction scores ``min(1, m_i / t)`` against the
    other n - 1, where ``m_i`` counts the matches (after ``normalize_answer``) among them and
    ``t = min(3, n - 1)``; the item score is the mean over the n subsets. With the usual ten
    answers this is the official rule (``t = 3``: 3 matches give 0.9, 4 or more give 1.0); with
    a single reference it is exact match.
    """
    if not answers:
        raise ValueError("vqa_accuracy needs at least one reference answer")
    if len(answers) == 1:
        return exact_match(prediction, answers[0])
    pred = normalize_answer(prediction)
    matches = sum(normalize_answer(a) == pred for a in answers)
    threshold = min(3, len(answers) - 1)
    # Leaving out a matching answer leaves matches - 1, any other leaves matches.
    with_match = matches * min(1.0, (matches - 1) / threshold)
    without = (len(answers) - matches) * min(1.0, matches / threshold)
    return (with_match + without) / len(answers)


def references(answer: str, answers: Sequence[str]) -> list[str]:
    """The pseudo-annotator answers, or ``[answer]`` when none are stored."""
    return list(answers) if answers else [answer]


def item_score(task: str, prediction: str, answer: str, answers: Sequence[str] = ()) -> float:
    """The per-item score in [0, 1]: VQA accuracy for VQA-style tasks, else exact match."""
    if task in VQA_TASKS:
        return vqa_accuracy(prediction, references(answer, answers))
    return exact_match(prediction, answer)


# --- task-level aggregates ------------------------------------------------------------------


def accuracy(records: Sequence[Record]) -> float:
    """Mean item score in percent."""
    if not records:
        raise ValueError("no records to score")
    return 100.0 * sum(float(r["score"]) for r in records) / len(records)


def accuracy_by(records: Sequence[Record], key: str) -> dict[str, float]:
    """``accuracy`` per value of ``meta[key]`` (rows without the key are skipped)."""
    groups: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        if key in r["meta"]:
            groups[str(r["meta"][key])].append(r)
    return {name: accuracy(group) for name, group in sorted(groups.items())}


def mme_scores(records: Sequence[Record]) -> dict[str, float]:
    """MME acc / acc+ / score per subtask, the total, and the primary metric in percent.

    Each record needs ``meta["subtask"]`` and ``meta["image_id"]``; acc+ groups the questions of
    one image within its subtask. Keys: ``<sub>_acc``, ``<sub>_acc_plus`` (percent),
    ``<sub>_score`` (0-200), ``total`` (0-200 * #subtasks) and ``primary`` (percent).
    """
    by_subtask: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_subtask[str(r["meta"]["subtask"])].append(r)
    out: dict[str, float] = {}
    total = 0.0
    for subtask, rows in sorted(by_subtask.items()):
        per_image: dict[str, list[bool]] = defaultdict(list)
        for r in rows:
            per_image[str(r["meta"]["image_id"])].append(float(r["score"]) == 1.0)
        acc = sum(float(r["score"]) for r in rows) / len(rows)
        acc_plus = sum(all(v) for v in per_image.values()) / len(per_image)
        out[f"{subtask}_acc"] = 100.0 * acc
        out[f"{subtask}_acc_plus"] = 100.0 * acc_plus
        out[f"{subtask}_score"] = 100.0 * (acc + acc_plus)
        total += 100.0 * (acc + acc_plus)
    out["total"] = total
    out["primary"] = total / (2 * len(by_subtask))
    return out


def circular_scores(records: Sequence[Record]) -> dict[str, float]:
    """CircularEval: an item is right only if every rotation is right; plus vanilla accuracy.

    Each record carries ``rotation_correct`` (one bool per rotation, rotation 0 first).
    Returns ``{"circular": %, "vanilla": %}``.
    """
    if not records:
        raise ValueError("no records to score")
    circular = sum(all(r["rotation_correct"]) for r in records) / len(records)
    vanilla = sum(bool(r["rotation_correct"][0]) for r in records) / len(records)
    return {"circular": 100.0 * circular, "vanilla": 100.0 * vanilla}


def binary_scores(predicted: Sequence[bool], gold: Sequence[bool]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and predicted-positive ratio, in percent.

    Precision, recall and F1 are 0 when undefined (no predicted or no gold positives).
    """
    if len(predicted) != len(gold) or not gold:
        raise ValueError(f"need equal, non-zero lengths; got {len(predicted)} and {len(gold)}")
    tp = sum(p and g for p, g in zip(predicted, gold))
    fp = sum(p and not g for p, g in zip(predicted, gold))
    fn = sum(g and not p for p, g in zip(predicted, gold))
    correct = sum(p == g for p, g in zip(predicted, gold))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"acc": 100.0 * correct / len(gold), "precision": 100.0 * precision,
            "recall": 100.0 * recall, "f1": 100.0 * f1,
            "yes_ratio": 100.0 * sum(predicted) / len(gold)}


def is_yes(text: str) -> bool:
    """POPE's reading of an answer: yes if the normalised text starts with the word "yes"."""
    words = normalize_answer(text).split()
    return bool(words) and words[0] == "yes"


def pope_scores(records: Sequence[Record]) -> dict[str, float]:
    """POPE metrics per ``meta["setting"]`` and the primary metric (mean F1 over settings).

    "yes" is the positive class. Keys ``<setting>_{acc,precision,recall,f1,yes_ratio}`` and
    ``primary``, all in percent.
    """
    by_setting: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_setting[str(r["meta"]["setting"])].append(r)
    out: dict[str, float] = {}
    for setting, rows in sorted(by_setting.items()):
        scores = binary_scores([is_yes(r["prediction"]) for r in rows],
                               [is_yes(r["answer"]) for r in rows])
        out.update({f"{setting}_{name}": value for name, value in scores.items()})
    out["primary"] = sum(out[f"{s}_f1"] for s in by_setting) / len(by_setting)
    return out


def unanswerable_f1(predictions: Sequence[str], answers: Sequence[str]) -> float:
    """F1 (percent) of detecting unanswerable items: positive = normalised "unanswerable"."""
    return binary_scores([normalize_answer(p) == UNANSWERABLE for p in predictions],
                         [normalize_answer(a) == UNANSWERABLE for a in answers])["f1"]


def task_metrics(task: str, records: Sequence[Record]) -> dict[str, float]:
    """All metrics of one task from its item records: ``primary`` plus named extras.

    Unknown tasks get plain accuracy of the item scores.
    """
    if not records:
        raise ValueError(f"no records for task {task!r}")
    if task == "mme":
        return mme_scores(records)
    if task == "pope":
        return pope_scores(records)
    cloze = ({"cloze": 100.0 * sum(r["cloze_score"] for r in records) / len(records)}
             if all("cloze_score" in r for r in records) else {})
    if task in CIRCULAR_TASKS:
        scores = circular_scores(records)
        return {"primary": scores["circular"], "vanilla": scores["vanilla"], **cloze}
    out = {"primary": accuracy(records), **cloze}
    if task == "gqa":
        out.update(accuracy_by(records, "type"))
    if task == "vizwiz":
        out["unanswerable_f1"] = unanswerable_f1([r["prediction"] for r in records],
                                                 [r["answer"] for r in records])
    return out


# --- across tasks ----------------------------------------------------------------------------


def group_averages(primary: Mapping[str, float]) -> dict[str, float]:
    """Mean primary metric of each group in ``TASK_GROUPS`` whose tasks are all present."""
    return {group: sum(primary[t] for t in tasks) / len(tasks)
            for group, tasks in TASK_GROUPS.items() if all(t in primary for t in tasks)}


def avg10(primary: Mapping[str, float]) -> float:
    """Unweighted mean of the ten primary metrics (percent).

    Raises:
        ValueError: a MiniVL-10 task is missing.
    """
    missing = [t for t in TASKS if t not in primary]
    if missing:
        raise ValueError(f"avg10 needs all ten tasks; missing {missing}")
    return sum(primary[t] for t in TASKS) / len(TASKS)

