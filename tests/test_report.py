"""Reports from Parquet (analysis.report, analysis.stats): numbers checked against plain loops.

The fixture is written here with pandas: an ablation (2 variants x 3 seeds, ten tasks, per-item
test scores), a study whose rows used two teachers and two data sets, and a small sweep.
"""

import json
import math
import os

import numpy as np
import pandas as pd
import pytest

from analysis import stats
from analysis.paper import direction, paper_delta
from analysis.report import (TASK_GROUPS, TASKS, ReportError, build_report, load, report_main,
                             split_tables)
from analysis.schema import ITEM_COLUMNS, to_frame, validate
from switchkd.config import to_flat_dict
from switchkd.presets import tiny

B = 2000          # bootstrap samples in the report under test
SEEDS = [0, 1, 2]
ITEMS_PER_TASK = 4


def _row(study, trial_id, seed, *, variant=None, data="data-A", teacher="teacher-A",
         metrics=None, status="completed", wall_s=10.0, cfg=None):
    flat = {f"cfg.{k}": v for k, v in to_flat_dict(tiny()).items()}
    flat.update({f"cfg.{k}": v for k, v in (cfg or {}).items()})
    row = {"study": study, "trial_id": trial_id, "status": status,
           "error": "boom" if status == "errored" else None, "seed": seed, "git_sha": "abc",
           "data_fingerprint": data, "teacher_fingerprint": teacher, **flat,
           "train/loss": 1.0, "train/ce_loss": 0.9, "val/avg10": 10.0, "wall_s": wall_s,
           "steps": 8, "samples": 64, "samples_per_s": 8.0,
           "teacher_forward_passes": 16 if teacher else 0,
           "teacher_backward_passes": 8 if teacher else 0, **(metrics or {})}
    if variant is not None:
        row["variant"] = variant
    return row


def _test_metrics(per_task):
    """test/* columns from {task: value}: the ten tasks, Avg10 and the group averages."""
    out = {f"test/{t}": v for t, v in per_task.items()}
    out["test/avg10"] = sum(per_task.values()) / len(per_task)
    for group, tasks in TASK_GROUPS.items():
        out[f"test/group_{group}"] = sum(per_task[t] for t in tasks) / len(tasks)
    return out


def _write(folder, trials, history=None, items=None):
    os.makedirs(folder, exist_ok=True)
    validate(to_frame(trials)).to_parquet(os.path.join(folder, "trials.parquet"), index=False)
    if history is not None:
        to_frame(history, history=True).to_parquet(os.path.join(folder, "history.parquet"),
                                                   index=False)
    if items is not None:
        pd.DataFrame(items, columns=list(ITEM_COLUMNS)).to_parquet(
            os.path.join(folder, "items.parquet"), index=False)


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    """2 variants x 3 seeds with per-task test metrics, per-item scores and a history."""
    rng = np.random.default_rng(7)
    folder = str(tmp_path_factory.mktemp("abl"))
    trials, history, items = [], [], []
    truth = {"metrics": {}, "scores": {}}
    for variant, shift in (("base", 0.0), ("better", 0.25)):
        for seed in SEEDS:
            trial = f"{variant}-{seed}"
            per_task = {t: float(rng.uniform(20, 60) + 10 * shift) for t in TASKS}
            truth["metrics"][variant, seed] = per_task
            scores = {}
            for task in TASKS:
                for index in range(ITEMS_PER_TASK):
                    score = float(rng.random() < 0.4 + shift)
                    scores[task, index] = score
                    items.append(("abl", trial, variant, seed, task, index, score))
            truth["scores"][variant, seed] = scores
            trials.append(_row("abl", trial, seed, variant=variant, metrics=_test_metrics(per_task),
                               wall_s=10.0 + seed, teacher=None if variant == "base" else "T"))
            for step in (4, 8):
                history.append({**_row("abl", trial, seed, variant=variant), "step": step,
                                "train/loss": 2.0 / step + shift, "train/k_teacher_mean": 4.0,
                                "train/k_teacher_std": 1.0, "train/k_student_mean": 3.0 + shift,
                                "train/k_student_std": 0.5})
    _write(folder, trials, history, items)
    out = str(tmp_path_factory.mktemp("abl-report"))
    report = build_report([folder], out, num_samples=B, seed=0)
    return folder, out, report, truth


def test_task_groups_match_the_library():
    from switchkd.evaluation.metrics import TASK_GROUPS as LIBRARY_GROUPS
    from switchkd.evaluation.metrics import TASKS as LIBRARY_TASKS

    assert TASKS == LIBRARY_TASKS and TASK_GROUPS == LIBRARY_GROUPS


# --- hand computations (plain loops) -------------------------------------------------------


def _mean(xs):
    return sum(xs) / len(xs)


def _std(xs):
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _quantile(sorted_values, q):
    """numpy's default (linear) quantile, by hand."""
    position = q * (len(sorted_values) - 1)
    low = int(math.floor(position))
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def _hand_seed_ci(values, seed=0):
    draws = np.random.default_rng(seed).integers(0, len(values), size=(B, len(values)))
    means = sorted(_mean([values[j] for j in row]) for row in draws.tolist())
    return _quantile(means, 0.025), _quantile(means, 0.975)


def _whole_metric_items(item_scores, metrics):
    """MME and POPE as the report pairs them: one pseudo-item holding the task metric / 100."""
    out = {k: v for k, v in item_scores.items() if k[0] not in ("mme", "pope")}
    out.update({(t, -1): metrics[t] / 100.0 for t in ("mme", "pope")})
    return out


def _hand_paired(a, b, tasks, seed=0):
    """a, b: {seed: {(task, index): score}}; the draws of analysis.stats.paired_bootstrap
    (seeds first, then each task in sorted order), the statistic with loops."""
    seeds = sorted(a)
    rng = np.random.default_rng(seed)
    seed_draws = rng.integers(0, len(seeds), size=(B, len(seeds))).tolist()
    members = {t: sorted(i for (task, i) in a[seeds[0]] if task == t) for t in sorted(tasks)}
    item_draws = {t: rng.integers(0, len(members[t]), size=(B, len(members[t]))).tolist()
                  for t in sorted(tasks)}

    def statistic(seed_pick, item_pick):
        total = 0.0
        for s in seed_pick:
            per_task = []
            for t in sorted(tasks):
                picked = [members[t][j] for j in item_pick[t]]
                per_task.append(_mean([100 * (b[seeds[s]][t, i] - a[seeds[s]][t, i])
                                       for i in picked]))
            total += _mean(per_task)
        return total / len(seed_pick)

    point = statistic(range(len(seeds)), {t: range(len(members[t])) for t in tasks})
    samples = sorted(statistic(seed_draws[k], {t: item_draws[t][k] for t in tasks})
                     for k in range(B))
    eps = 1e-9 * 100  # ties at 0 (within 1e-9 of the largest |difference|) count on both sides
    tail = min(sum(x <= eps for x in samples), sum(x >= -eps for x in samples))
    return {"mean_diff": point, "low": _quantile(samples, 0.025),
            "high": _quantile(samples, 0.975), "p_value": min(1.0, 2 * (tail + 1) / (B + 1))}


# --- the table -----------------------------------------------------------------------------


def test_table_means_std_ci_and_deltas_match_hand_computation(ablation):
    _, _, report, truth = ablation
    (table,) = report.tables
    assert table.split == "test" and table.baseline == "base"
    assert table.variants == ["base", "better"]
    assert table.columns == [*TASKS, "avg10", *(f"group_{g}" for g in TASK_GROUPS)]
    for variant in ("base", "better"):
        per_seed = [truth["metrics"][variant, s] for s in SEEDS]
        for task in TASKS:
            values = [m[task] for m in per_seed]
            assert table.stats[variant, task]["mean"] == pytest.approx(_mean(values))
            assert table.stats[variant, task]["std"] == pytest.approx(_std(values))
        avg = [_mean(list(m.values())) for m in per_seed]
        assert table.stats[variant, "avg10"]["mean"] == pytest.approx(_mean(avg))
        perception = [_mean([m[t] for t in TASK_GROUPS["perception"]]) for m in per_seed]
        assert table.stats[variant, "group_perception"]["mean"] == pytest.approx(_mean(perception))
        low, high = _hand_seed_ci(avg)
        row = table.summary.set_index("variant").loc[variant]
        assert (row["low"], row["high"]) == (pytest.approx(low), pytest.approx(high))
        assert row["wall_s"] == pytest.approx(_mean([10.0 + s for s in SEEDS]))

    base = [_mean(list(truth["metrics"]["base", s].values())) for s in SEEDS]
    better = [_mean(list(truth["metrics"]["better", s].values())) for s in SEEDS]
    delta = table.deltas["better", "avg10"]
    assert delta["delta"] == pytest.approx(_mean(better) - _mean(base))
    assert delta["method"] == "items x seeds"
    assert (delta["num_seeds"], delta["num_items"]) == (3, 8 * ITEMS_PER_TASK + 2)
    scores = {key: _whole_metric_items(value, truth["metrics"][key])
              for key, value in truth["scores"].items()}
    hand = _hand_paired({s: scores["base", s] for s in SEEDS},
                        {s: scores["better", s] for s in SEEDS}, TASKS)
    # The paired statistic is the column's own difference of means: MME and POPE (metrics that
    # are not item means) enter with their metric, the other tasks with their item means.
    item_delta = _mean([_mean([_mean([100 * (scores["better", s][t, i] - scores["base", s][t, i])
                                      for (t2, i) in scores["base", s] if t2 == t])
                               for t in TASKS]) for s in SEEDS])
    assert delta["paired_diff"] == pytest.approx(item_delta)
    assert delta["paired_diff"] == pytest.approx(hand["mean_diff"])
    assert delta["low"] == pytest.approx(hand["low"])
    assert delta["high"] == pytest.approx(hand["high"])
    assert delta["p_value"] == pytest.approx(hand["p_value"])
    # One task's column is paired over that task's items only.
    vqa = table.deltas["better", "vqa"]
    hand_vqa = _hand_paired({s: scores["base", s] for s in SEEDS},
                            {s: scores["better", s] for s in SEEDS}, ["vqa"])
    assert (vqa["low"], vqa["high"], vqa["p_value"]) == (
        pytest.approx(hand_vqa["low"]), pytest.approx(hand_vqa["high"]),
        pytest.approx(hand_vqa["p_value"]))
    # A metric that is not an item mean alone: paired over seeds, on the metric itself.
    pope = table.deltas["better", "pope"]
    assert pope["method"] == "seeds" and pope["paired_diff"] == pytest.approx(
        table.deltas["better", "pope"]["delta"])


def test_report_files_and_markdown_table(ablation):
    _, out, report, truth = ablation
    text = open(report.paths["markdown"]).read()
    assert "| Variant | n | MME | MMB | MMB-CN | VQAv2 | GQA | SciQA | MMMU | TextVQA | VizWiz " \
           "| POPE | Avg10 | Perception | Cognition | Domain | OCR | Halluc. |" in text
    mme = [truth["metrics"]["better", s]["mme"] for s in SEEDS]
    assert f"| better | 3 | {_mean(mme):.1f} ± {_std(mme):.1f} |" in text
    assert "data-A" in text and "Data and teacher fingerprints" in text
    html = open(report.paths["html"]).read()
    assert html.startswith("<!DOCTYPE html>") and "data:image/png;base64," in html
    names = sorted(os.path.basename(p) for _, p in report.figures)
    assert names == ["fig1_abl_bars.png", "fig1_abl_kneedle_k.png", "fig1_abl_pareto.png",
                     "fig1_abl_train_loss.png"]
    for _, path in report.figures:
        assert os.path.getsize(path) > 5000


def _eval_json(path, per_task, *, data="data-A", split="test"):
    """What `switchkd eval` / `switchkd teacher --eval` write: provenance + flat metrics."""
    record = {"source": "teacher-dir", "split": split, "blind": False, "data_fingerprint": data,
              **{k.replace("test/", f"{split}/"): v for k, v in _test_metrics(per_task).items()},
              f"{split}/pope_yes_ratio": 50.0}
    with open(path, "w") as f:
        json.dump(record, f)
    return str(path)


def test_reference_rows_show_the_teacher_and_blind_scores(ablation, tmp_path):
    folder, _, _, _ = ablation
    teacher = _eval_json(tmp_path / "t.json", {t: 50.0 + i for i, t in enumerate(TASKS)})
    blind = _eval_json(tmp_path / "b.json", {t: 10.0 for t in TASKS})
    report = build_report([folder], str(tmp_path / "rep"), num_samples=200,
                          references=[f"teacher={teacher}", f"blind={blind}"])
    text = open(report.paths["markdown"]).read()
    # The ten tasks, Avg10 = mean(50..59) = 54.5, then the group averages.
    assert "| teacher (reference) | – | 50.0 | 51.0 | 52.0 | 53.0 | 54.0 | 55.0 | 56.0 | 57.0 " \
           "| 58.0 | 59.0 | 54.5 | 52.0 | 56.0 | 55.0 | 57.5 | 59.0 |" in text
    assert "| blind (reference) | – | 10.0 |" in text
    assert "dashed lines: teacher, blind" in text
    # References never enter the comparisons.
    assert report.tables[0].variants == ["base", "better"]


def test_a_reference_on_other_data_or_not_from_eval_is_refused(ablation, tmp_path):
    folder, _, _, _ = ablation
    other = _eval_json(tmp_path / "o.json", {t: 1.0 for t in TASKS}, data="data-B")
    with pytest.raises(ReportError, match="scored on data data-B.*results are on data data-A"):
        build_report([folder], str(tmp_path / "rep"), references=[f"teacher={other}"])
    (tmp_path / "junk.json").write_text('{"test/mme": 3}')
    out = str(tmp_path / "rep2")
    assert report_main([folder, "--out", out, "--reference",
                        f"teacher={tmp_path / 'junk.json'}"]) == 2
    assert report_main([folder, "--out", out, "--reference", "teacher"]) == 2
    # A reference on another split is left out of the table, with a note saying so.
    val = _eval_json(tmp_path / "v.json", {t: 1.0 for t in TASKS}, split="val")
    report = build_report([folder], out, num_samples=100, references=[f"teacher={val}"])
    assert "reference 'teacher' is on the val split" in report.markdown
    assert "teacher (reference)" not in report.markdown


def test_paper_deltas_and_their_direction():
    # METHOD.md section 7: Switch-KD-0.5B minus TinyLLaVA-0.5B.
    assert paper_delta("avg10") == pytest.approx(3.6)
    assert paper_delta("sqa") == pytest.approx(-1.2) and paper_delta("mmmu") == pytest.approx(-3.8)
    assert math.isnan(paper_delta("group_ocr"))
    assert direction(3.6, {"low": 0.5, "high": 2.0}) == "same"
    assert direction(3.6, {"low": -2.0, "high": -0.5}) == "opposite"
    assert direction(-1.2, {"low": -2.0, "high": -0.5}) == "same"
    assert direction(3.6, {"low": -0.5, "high": 2.0}) == "unclear (CI spans 0)"
    assert direction(3.6, {"low": math.nan, "high": math.nan}) == "–"
    assert direction(3.6, {"low": 0.0, "high": 0.0}) == "no change"   # e.g. every model at 0


def test_paper_side_by_side_uses_the_tables_paired_deltas(ablation, tmp_path):
    folder, _, _, _ = ablation
    report = build_report([folder], str(tmp_path / "rep"), num_samples=300,
                          paper_variant="better")
    table = report.tables[0]
    d = table.deltas["better", "avg10"]
    row = (f"| Avg10 | +3.6 | {d['delta']:+.1f} | [{d['low']:+.1f}, {d['high']:+.1f}] | "
           f"{direction(3.6, d)} |")
    assert "Side by side with the paper's Table 1" in report.markdown and row in report.markdown
    # Only the ten tasks and Avg10 have paper numbers (no group averages in Table 1).
    section = report.markdown.split("Side by side")[1].split("###")[0]
    assert section.count("\n| ") == 1 + 11 and "Perception" not in section
    with pytest.raises(ReportError, match="--paper nope"):
        build_report([folder], str(tmp_path / "rep"), num_samples=100, paper_variant="nope")


def test_a_chosen_baseline_and_the_command_line(ablation, tmp_path):
    folder, _, _, _ = ablation
    out = str(tmp_path / "rep")
    assert report_main([folder, "--out", out, "--baseline", "better",
                        "--bootstrap-samples", "200"]) == 0
    text = open(os.path.join(out, "report.md")).read()
    assert "| better (baseline) |" in text and "Δ vs better" in text
    assert report_main([str(tmp_path / "nowhere"), "--out", out]) == 2


# --- fingerprints --------------------------------------------------------------------------


def test_rows_with_different_fingerprints_are_never_in_one_table(tmp_path):
    metrics = _test_metrics({t: 30.0 for t in TASKS})
    rows = [
        _row("fp", "sft-0", 0, variant="sft", teacher=None, metrics=metrics),
        _row("fp", "kd-T1", 0, variant="kd", teacher="T1", metrics=metrics),
        _row("fp", "kd-T2", 0, variant="kd_t2", teacher="T2", metrics=metrics),
        _row("fp", "kd-D2", 0, variant="kd", data="data-B", teacher="T3", metrics=metrics),
        _row("fp", "bad", 1, variant="kd", teacher="T1", status="errored"),
    ]
    folder = str(tmp_path / "fp")
    _write(folder, rows)
    tables = split_tables(load([folder]).trials)
    got = sorted((t.data_fingerprint, t.teacher_fingerprint, tuple(sorted(t.rows["trial_id"])))
                 for t in tables)
    assert got == [("data-A", "T1", ("kd-T1", "sft-0")), ("data-A", "T2", ("kd-T2", "sft-0")),
                   ("data-B", "T3", ("kd-D2",))]
    report = build_report([folder], str(tmp_path / "out"), num_samples=100)
    text = report.markdown
    assert text.count("students of different teachers are never compared") == 2
    assert text.count("rows trained on different data are never compared") == 3
    assert "Errored trials" in text and "boom" in text


# --- sweeps: history, importance, Pareto ---------------------------------------------------


def test_sweep_figures_and_importance(tmp_path):
    temps = [1.0, 2.0, 3.0, 4.0, 5.0]
    kinds = ["dbild", "kl", "dbild", "kl", "dbild"]
    values = [11.0, 14.0, 12.0, 17.0, 13.0]
    rows = [_row("sw", f"t{i}", 0, metrics={"val/avg10": v}, wall_s=w,
                 cfg={"loss.temperature": t, "loss.kind": k})
            for i, (t, k, v, w) in enumerate(zip(temps, kinds, values, [5, 4, 3, 2, 1]))]
    folder = str(tmp_path / "sw")
    _write(folder, rows)
    report = build_report([folder], str(tmp_path / "out"), num_samples=100)
    (table,) = report.tables
    assert not table.ablation and table.split == "val" and table.baseline is None
    names = sorted(os.path.basename(p) for _, p in report.figures)
    assert names == ["fig1_sw_history.png", "fig1_sw_importance.png", "fig1_sw_pareto.png"]

    importance = stats.param_importance(load([folder]).trials, "val/avg10").set_index("param")
    # temperature: Spearman of ranks (1..5) vs ranks of values (1, 4, 2, 5, 3), by hand
    rx, ry = [1, 2, 3, 4, 5], [1, 4, 2, 5, 3]
    mx, my = _mean(rx), _mean(ry)
    rho = sum((x - mx) * (y - my) for x, y in zip(rx, ry)) / math.sqrt(
        sum((x - mx) ** 2 for x in rx) * sum((y - my) ** 2 for y in ry))
    assert importance.loc["loss.temperature", "importance"] == pytest.approx(abs(rho))
    # kind: eta of the ranks: groups dbild {1, 2, 3}, kl {4, 5}
    groups = {"dbild": [1, 2, 3], "kl": [4, 5]}
    between = sum(len(g) * (_mean(g) - 3) ** 2 for g in groups.values())
    total = sum((r - 3) ** 2 for r in range(1, 6))
    assert importance.loc["loss.kind", "importance"] == pytest.approx(math.sqrt(between / total))
    assert importance.loc["loss.kind", "kind"] == "eta"


def test_a_null_setting_is_a_category_of_its_own():
    """loss.fixed_k null (adaptive k) against 16: eta over two groups, not a dropped column."""
    frame = pd.DataFrame({"cfg.loss.fixed_k": [None, None, 16.0, 16.0],
                          "val/avg10": [21.7, 27.3, 23.5, 23.4]})
    importance = stats.param_importance(frame, "val/avg10").set_index("param")
    # ranks of the metric: 1, 4, 3, 2; groups null {1, 4}, 16 {3, 2}: equal means, eta 0
    assert importance.loc["loss.fixed_k", "kind"] == "eta"
    assert importance.loc["loss.fixed_k", "importance"] == pytest.approx(0.0)
    frame["val/avg10"] = [21.7, 22.0, 23.5, 23.4]          # ranks 1, 2, 4, 3: fully separated
    importance = stats.param_importance(frame, "val/avg10").set_index("param")
    between, total = 4 * 1.0 ** 2, sum((r - 2.5) ** 2 for r in (1, 2, 3, 4))
    assert importance.loc["loss.fixed_k", "importance"] == pytest.approx(math.sqrt(between / total))


def test_pareto_front_by_hand():
    cost = [1.0, 2.0, 3.0, 2.0, 4.0, float("nan")]
    value = [10.0, 12.0, 11.0, 12.0, 15.0, 99.0]
    # (2, 12) twice: neither beats the other; (3, 11) is beaten by (2, 12); nan never counts.
    assert stats.pareto_front(cost, value).tolist() == [True, True, False, True, True, False]
    assert stats.pareto_front(cost, value, mode="min").tolist() == \
        [True, False, False, False, False, False]


def test_paired_bootstrap_without_strata_is_the_library_twin():
    from switchkd.evaluation.bootstrap import paired_bootstrap_seeds

    rng = np.random.default_rng(3)
    a, b = rng.random((3, 40)), rng.random((3, 40)) + 0.05
    ours = stats.paired_bootstrap(a, b, num_samples=500, seed=5)
    theirs = paired_bootstrap_seeds(a, b, num_samples=500, seed=5)
    for key in ("mean_diff", "low", "high", "p_value"):
        assert ours[key] == pytest.approx(theirs[key])
    with pytest.raises(ValueError, match="same shape"):
        stats.paired_bootstrap(a, b[:, :3])
    assert all(math.isnan(x) for x in stats.seed_bootstrap_ci([1.0]))
