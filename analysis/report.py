"""``switchkd report RESULTS_DIR... --out DIR``: tables and figures from Parquet only.

Reads ``trials.parquet`` (and, where present, ``history.parquet`` and ``items.parquet``) of
each results folder and writes ``DIR/report.md``, a standalone ``DIR/report.html`` (figures
embedded) and the PNG figures.

Tables follow the paper (METHOD.md section 7): one row per variant, the ten MiniVL-10 tasks,
Avg10 and the five group averages, as mean +- std over seeds. Test metrics (``test/*``) are used
when every row of a table has them, else validation metrics (``val/*``). For the headline
(Avg10) each variant also gets a 95% bootstrap CI over seeds, and every variant is compared with
the baseline variant: the difference of the means and a paired bootstrap over seeds and test
items (``analysis.stats.paired_bootstrap`` on ``items.parquet``; over seeds alone without item
scores).

Rows are compared only when they used the same data and the same teacher: a study whose rows
carry several data or teacher fingerprints is split into one table per fingerprint, and the
header says so. Rows without a teacher fingerprint (SFT from a random vision encoder) used no
teacher, so they join the table of every teacher of their data.

Studies without a ``variant`` column (sweeps) get one row per trial and, instead of baseline
comparisons, the optimisation history and parameter importances.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import html
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from analysis import plots
from analysis.paper import PAPER_BASELINE, PAPER_METHOD, direction, paper_delta
from analysis.load import load_results
from analysis.stats import paired_bootstrap, param_importance, pareto_front, seed_bootstrap_ci

# MiniVL-10 (switchkd.evaluation.metrics.TASKS / TASK_GROUPS; a test keeps them in step).
TASKS = ("mme", "mmb", "mmbcn", "vqa", "gqa", "sqa", "mmmu", "textvqa", "vizwiz", "pope")
TASK_GROUPS = {
    "perception": ("mme", "mmb", "mmbcn", "vqa", "gqa"),
    "cognition": ("mmmu",),
    "domain": ("sqa",),
    "ocr": ("textvqa", "vizwiz"),
    "hallucination": ("pope",),
}
LABELS = {"mme": "MME", "mmb": "MMB", "mmbcn": "MMB-CN", "vqa": "VQAv2", "gqa": "GQA",
          "sqa": "SciQA", "mmmu": "MMMU", "textvqa": "TextVQA", "vizwiz": "VizWiz",
          "pope": "POPE", "avg10": "Avg10", "avg": "Avg", "group_perception": "Perception",
          "group_cognition": "Cognition", "group_domain": "Domain", "group_ocr": "OCR",
          "group_hallucination": "Halluc."}
TRIALS_FILE, HISTORY_FILE, ITEMS_FILE = "trials.parquet", "history.parquet", "items.parquet"
NO_TEACHER = "none (no teacher)"
# Tasks whose primary metric is not the mean of their item scores: MME (acc + acc+ per image
# pair) and POPE (F1). Paired comparisons use their per-seed metric instead of their items.
WHOLE_METRIC_TASKS = ("mme", "pope")
SIGNIFICANCE = 0.05


# ------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------


@dataclass
class Results:
    """Everything a report reads: trial rows, report rows and per-item test scores."""

    trials: pd.DataFrame
    history: pd.DataFrame
    items: pd.DataFrame
    sources: list[str]


def load(paths: Sequence[str]) -> Results:
    """Read each results folder (or ``trials.parquet`` file) and its sibling Parquet files.

    Adds ``variant`` where missing (the trial id: a sweep's rows are all different configs).

    Raises:
        FileNotFoundError: a folder has no ``trials.parquet``.
        analysis.schema.SchemaError: a trials file breaks the contract.
    """
    trials, history, items, sources = [], [], [], []
    for path in paths:
        folder = os.path.dirname(path) if path.endswith(".parquet") else path
        trials_path = os.path.join(folder, TRIALS_FILE)
        if not os.path.isfile(trials_path):
            raise FileNotFoundError(f"no {TRIALS_FILE} in {folder}")
        sources.append(os.path.abspath(folder))
        frame = load_results(trials_path)
        frame["ablation"] = "variant" in frame.columns and frame["variant"].notna().all()
        trials.append(frame)
        for name, out in ((HISTORY_FILE, history), (ITEMS_FILE, items)):
            if os.path.isfile(os.path.join(folder, name)):
                out.append(pd.read_parquet(os.path.join(folder, name)))
    frame = pd.concat(trials, ignore_index=True, sort=False)
    if "variant" not in frame.columns:
        frame["variant"] = None
    frame["variant"] = frame["variant"].where(frame["variant"].notna(), frame["trial_id"])
    frame["variant"] = frame["variant"].astype(str)
    return Results(
        trials=frame,
        history=pd.concat(history, ignore_index=True, sort=False) if history else pd.DataFrame(),
        items=pd.concat(items, ignore_index=True, sort=False) if items else pd.DataFrame(),
        sources=sources)


# ------------------------------------------------------------------------------------------
# Tables
# ------------------------------------------------------------------------------------------


@dataclass
class Table:
    """One comparable set of rows: a study, one data fingerprint, one teacher fingerprint."""

    study: str
    data_fingerprint: str
    teacher_fingerprint: str
    rows: pd.DataFrame                       # the trials (errored ones excluded)
    split: str = "val"                       # test | val
    columns: list[str] = field(default_factory=list)   # metric names without the split
    headline: str = "avg10"
    variants: list[str] = field(default_factory=list)  # baseline first
    baseline: Optional[str] = None
    ablation: bool = True
    stats: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    deltas: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    references: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> column -> %
    paper_variant: Optional[str] = None      # compared with the paper's Table 1 deltas

    @property
    def title(self) -> str:
        return f"{self.study} (data {self.data_fingerprint}, teacher {self.teacher_fingerprint})"

    def metric(self, name: str) -> str:
        return f"{self.split}/{name}"


def _fingerprint(value: Any) -> Optional[str]:
    return None if value is None or value is pd.NA or \
        (isinstance(value, float) and math.isnan(value)) else str(value)


def _fingerprints(column: pd.Series) -> pd.Series:
    """As Python objects (a string dtype would turn None back into NaN)."""
    return pd.Series([_fingerprint(v) for v in column], index=column.index, dtype=object)


def split_tables(trials: pd.DataFrame) -> list[Table]:
    """Group usable rows into tables: by study, then data fingerprint, then teacher
    fingerprint; rows without a teacher join every teacher's table of their data."""
    usable = trials[trials["status"] != "errored"]
    tables = []
    for study in dict.fromkeys(usable["study"]):
        rows = usable[usable["study"] == study]
        data = _fingerprints(rows["data_fingerprint"])
        data_fps = list(dict.fromkeys(data))
        for data_fp in data_fps:
            same_data = rows[(data == data_fp) if data_fp is not None else data.isna()]
            teacher = _fingerprints(same_data["teacher_fingerprint"])
            teachers = [t for t in dict.fromkeys(teacher) if t is not None]
            notes = []
            if len(data_fps) > 1:
                notes.append(f"study {study!r} has rows on {len(data_fps)} different data "
                             f"fingerprints; rows trained on different data are never compared, "
                             f"so this table holds data {data_fp} only")
            if len(teachers) > 1:
                notes.append(f"this data has {len(teachers)} different teacher fingerprints; "
                             f"students of different teachers are never compared in one table, "
                             f"so each teacher gets its own table (rows without a teacher, e.g. "
                             f"SFT, appear in each)")
            for t in teachers or [None]:
                keep = (teacher == t) | teacher.isna() if t is not None else teacher.isna()
                tables.append(Table(study=study, data_fingerprint=str(data_fp),
                                    teacher_fingerprint=t or NO_TEACHER,
                                    rows=same_data[keep.to_numpy()], notes=list(notes),
                                    ablation=bool(same_data["ablation"].all())))
    return tables


def _pick_split(rows: pd.DataFrame) -> str:
    for name in ("avg10", "avg"):
        if f"test/{name}" in rows.columns and rows[f"test/{name}"].notna().all():
            return "test"
    return "val"


class ReportError(ValueError):
    """A report input that cannot be used (a bad or mismatched reference file)."""


@dataclass
class Reference:
    """Scores of one model that is not a trial (the teacher, a blind baseline), from the JSON
    ``switchkd eval`` / ``switchkd teacher --eval`` write: flat ``<split>/<metric>`` keys plus
    ``split`` and ``data_fingerprint``."""

    name: str
    path: str
    split: str
    data_fingerprint: str
    metrics: dict[str, float]


def load_reference(spec: str) -> Reference:
    """``NAME=FILE`` -> the Reference; errors name the file and what is wrong with it."""
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise ReportError(f"--reference {spec!r}: expected NAME=FILE, e.g. "
                          f"teacher=results/teacher_test.json")
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ReportError(f"--reference {name}: cannot read {path}: {err}") from err
    missing = [k for k in ("split", "data_fingerprint") if k not in record]
    if not isinstance(record, dict) or missing:
        raise ReportError(f"--reference {name}: {path} is not a `switchkd eval` result "
                          f"(missing {missing})")
    split = record["split"]
    metrics = {k[len(split) + 1:]: float(v) for k, v in record.items()
               if k.startswith(f"{split}/") and isinstance(v, (int, float))}
    return Reference(name, path, split, str(record["data_fingerprint"]), metrics)


def attach_references(tables: Sequence[Table], references: Sequence[Reference]) -> None:
    """Give each filled table the references scored on its data and split; a reference that
    fits no table is an error (it would silently be missing from the report)."""
    for ref in references:
        fits = [t for t in tables if t.data_fingerprint == ref.data_fingerprint]
        if not fits:
            raise ReportError(
                f"--reference {ref.name}: {ref.path} was scored on data {ref.data_fingerprint}, "
                f"but the results are on data "
                f"{', '.join(sorted({t.data_fingerprint for t in tables}))}")
        for table in fits:
            if ref.split != table.split:
                table.notes.append(f"reference {ref.name!r} is on the {ref.split} split, this "
                                   f"table on {table.split}; it is left out here")
                continue
            table.references[ref.name] = {c: ref.metrics[c] for c in table.columns
                                          if c in ref.metrics}


def fill_table(table: Table, items: pd.DataFrame, *, baseline: Optional[str],
               num_samples: int, seed: int) -> Table:
    """Compute the table's cells: per-variant mean/std/n per column, the headline's CI, and
    the differences to the baseline with their paired tests."""
    rows = table.rows
    table.split = _pick_split(rows)
    if table.split == "val" and any(c.startswith("test/") for c in rows.columns) and \
            rows.filter(like="test/").notna().any().any():
        table.notes.append("some rows lack test metrics, so this table uses validation metrics")
    table.headline = "avg10" if table.metric("avg10") in rows.columns and \
        rows[table.metric("avg10")].notna().any() else "avg"
    present = [t for t in TASKS if table.metric(t) in rows.columns
               and rows[table.metric(t)].notna().any()]
    groups = [f"group_{g}" for g in TASK_GROUPS if table.metric(f"group_{g}") in rows.columns
              and rows[table.metric(f"group_{g}")].notna().any()]
    table.columns = [*present, table.headline, *groups]
    variants = list(dict.fromkeys(rows["variant"]))
    if baseline is not None and baseline in variants:
        table.baseline = baseline
    elif table.ablation and variants:
        table.baseline = variants[0]
    if table.baseline is not None:
        variants = [table.baseline, *(v for v in variants if v != table.baseline)]
    table.variants = variants

    for variant in variants:
        own = rows[rows["variant"] == variant]
        for column in table.columns:
            values = own[table.metric(column)].dropna().to_numpy(dtype=np.float64)
            table.stats[variant, column] = {
                "mean": float(values.mean()) if len(values) else math.nan,
                "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                "n": len(values)}

    summary = []
    for variant in variants:
        own = rows[rows["variant"] == variant]
        values = own[table.metric(table.headline)].dropna().to_numpy(dtype=np.float64)
        low, high = seed_bootstrap_ci(values, num_samples=num_samples, seed=seed)
        passes = own["teacher_forward_passes"].fillna(0) + own["teacher_backward_passes"].fillna(0)
        summary.append({"variant": variant, "n": len(values),
                        "mean": table.stats[variant, table.headline]["mean"],
                        "std": table.stats[variant, table.headline]["std"],
                        "low": low, "high": high, "wall_s": own["wall_s"].mean(),
                        "teacher_passes": passes.mean(), "baseline": variant == table.baseline})
    table.summary = pd.DataFrame(summary)

    if table.baseline is not None:
        for variant in variants[1:]:
            for column in table.columns:
                table.deltas[variant, column] = compare(
                    table, items, variant, column, num_samples=num_samples, seed=seed)
    return table


def _column_tasks(table: Table, column: str) -> list[str]:
    if column in TASKS:
        return [column]
    if column.startswith("group_"):
        return [t for t in TASK_GROUPS[column[6:]] if t in table.columns]
    return [t for t in table.columns if t in TASKS]


def compare(table: Table, items: pd.DataFrame, variant: str, column: str, *,
            num_samples: int, seed: int) -> dict[str, Any]:
    """``variant`` minus the baseline on ``column``: the difference of the means over seeds,
    and a paired bootstrap over the seeds both ran (and their test items when scored).

    With item scores (test split): ``paired_bootstrap`` of the item scores (in percent) of
    the column's tasks, strata = tasks, rows = the shared seeds. Without: over the shared seeds
    of the metric itself (needs 2 or more). ``method`` says which; ``none`` when neither is
    possible (no shared seed, or one shared seed and no items).
    """
    rows = table.rows
    base = rows[rows["variant"] == table.baseline]
    own = rows[rows["variant"] == variant]
    delta = table.stats[variant, column]["mean"] - table.stats[table.baseline, column]["mean"]
    out = {"delta": delta, "low": math.nan, "high": math.nan, "p_value": math.nan,
           "method": "none", "num_seeds": 0, "num_items": 0}
    metric = table.metric(column)
    base_by_seed = base.dropna(subset=[metric]).groupby("seed")[metric].first()
    own_by_seed = own.dropna(subset=[metric]).groupby("seed")[metric].first()
    seeds = sorted(set(base_by_seed.index) & set(own_by_seed.index))
    if not seeds:
        return out
    tasks = _column_tasks(table, column)
    scores = _item_matrix(items, table, base, own, seeds, tasks) if table.split == "test" else None
    if scores is not None:
        a, b, strata = scores
        result = paired_bootstrap(a * 100.0, b * 100.0, strata=strata,
                                  num_samples=num_samples, seed=seed)
        method = "items x seeds" if len(seeds) > 1 else "items"
    elif len(seeds) > 1:
        a = base_by_seed.loc[seeds].to_numpy()[:, None]
        b = own_by_seed.loc[seeds].to_numpy()[:, None]
        result = paired_bootstrap(a, b, num_samples=num_samples, seed=seed)
        method = "seeds"
    else:
        return out
    out.update(low=result["low"], high=result["high"], p_value=result["p_value"],
               method=method, num_seeds=result["num_seeds"], num_items=result["num_items"],
               paired_diff=result["mean_diff"])
    return out


def _item_matrix(items: pd.DataFrame, table: Table, base: pd.DataFrame, own: pd.DataFrame,
                 seeds: list, tasks: list[str]):
    """(a, b, strata): the item scores of the baseline and the variant, one row per shared
    seed, columns = the (task, index) items both were scored on; None without item scores."""
    if not len(items) or not tasks:
        return None
    items = items[(items["study"] == table.study) & items["task"].isin(tasks)]
    matrices = []
    for trials in (base, own):
        by_seed = trials.groupby("seed")["trial_id"].first()
        ids = [by_seed[s] for s in seeds]
        part = items[items["trial_id"].isin(ids)]
        if part.empty:
            return None
        wide = part.pivot_table(index="trial_id", columns=["task", "index"], values="score",
                                aggfunc="first")
        if not set(ids) <= set(wide.index):
            return None
        matrices.append(wide.loc[ids])
    shared = matrices[0].columns.intersection(matrices[1].columns)
    shared = [c for c in shared if matrices[0][c].notna().all() and matrices[1][c].notna().all()]
    shared = [c for c in shared if c[0] not in WHOLE_METRIC_TASKS]
    shared = sorted(shared, key=lambda c: (TASKS.index(c[0]) if c[0] in TASKS else 99, c[1]))
    a = matrices[0][shared].to_numpy(dtype=np.float64)
    b = matrices[1][shared].to_numpy(dtype=np.float64)
    strata = [task for task, _ in shared]
    # Tasks whose metric is not a mean of item scores enter as one column per seed holding the
    # metric itself (a stratum of one "item": resampled over seeds only), so the paired
    # statistic stays the column's own difference of means.
    for task in (t for t in tasks if t in WHOLE_METRIC_TASKS):
        values = []
        for trials in (base, own):
            by_seed = trials.groupby("seed")[table.metric(task)].first()
            if by_seed.reindex(seeds).isna().any():
                return None
            values.append(by_seed.loc[seeds].to_numpy(dtype=np.float64)[:, None] / 100.0)
        a, b = np.hstack([a, values[0]]), np.hstack([b, values[1]])
        strata.append(task)
    if a.shape[1] < 2:
        return None
    return a, b, np.array(strata)


# ------------------------------------------------------------------------------------------
# Figures (the data for each; plots.py draws)
# ------------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def table_figures(table: Table, history: pd.DataFrame, out_dir: str,
                  tag: str) -> list[tuple[str, str]]:
    """(caption, PNG path) of a table's figures: bars with CIs, Pareto front, Kneedle k,
    training curves (the last two when the history has them)."""
    figures = []
    rows = table.rows
    label = f"{'Test' if table.split == 'test' else 'Val'} {LABELS[table.headline]} (%)"
    metric = table.metric(table.headline)
    seeds = pd.DataFrame({"variant": rows["variant"], "value": rows[metric]})
    if table.ablation:
        lines = {name: scores[table.headline] for name, scores in table.references.items()
                 if table.headline in scores}
        path = plots.ablation_bars(table.summary, seeds, ylabel=label,
                                   title=f"{table.study}: {label} by variant",
                                   path=os.path.join(out_dir, f"{tag}_bars.png"),
                                   references=lines)
        figures.append((f"{table.study}: {label} per variant, mean over seeds with the 95% "
                        f"bootstrap CI (black) and each seed (dots); hatched = baseline"
                        + ("; dashed lines: " + ", ".join(lines) if lines else ""), path))

    usable = rows.dropna(subset=[metric])
    if len(usable) >= 2:
        panels = []
        passes = usable["teacher_forward_passes"].fillna(0) + \
            usable["teacher_backward_passes"].fillna(0)
        # A sweep's rows are all different configs: one colour ("trial") instead of one each.
        groups = usable["variant"] if table.ablation else pd.Series("trial", index=usable.index)
        for xlabel, cost in (("training wall time (s)", usable["wall_s"]),
                             ("teacher passes (forward + backward)", passes)):
            if cost.dropna().nunique() >= 2:  # a cost all trials share says nothing
                panels.append((xlabel, pd.DataFrame({
                    "variant": groups, "cost": cost, "value": usable[metric],
                    "front": pareto_front(cost, usable[metric], mode="max")})))
        if panels:
            path = plots.pareto(panels, ylabel=label, title=f"{table.study}: accuracy vs cost",
                                path=os.path.join(out_dir, f"{tag}_pareto.png"),
                                order=table.variants if table.ablation else ())
            figures.append((f"{table.study}: {label} against training cost, one point per "
                            f"trial; dashed: the Pareto front", path))

    own = history[history["trial_id"].isin(rows["trial_id"])
                  & history["study"].isin([table.study])] if len(history) else history
    if len(own):
        variant_of = dict(zip(rows["trial_id"], rows["variant"]))
        own = own.assign(variant=own["trial_id"].map(variant_of))
        k = _kneedle_frame(own)
        if len(k):
            path = plots.kneedle_k(k, title=f"{table.study}: Kneedle k on both DBiLD branches",
                                   path=os.path.join(out_dir, f"{tag}_kneedle_k.png"),
                                   order=table.variants)
            figures.append((f"{table.study}: the dynamic k of DBiLD over training (mean over "
                            f"answer tokens and seeds; band: ± the per-token std)", path))
        curves = _curve_frame(own, ("train/loss", "train/ce_loss"))
        if len(curves):
            path = plots.training_curves(
                curves, title=f"{table.study}: training curves",
                path=os.path.join(out_dir, f"{tag}_train_loss.png"), order=table.variants,
                legend_title="variant (bold: mean over seeds)" if table.ablation else "trial")
            figures.append((f"{table.study}: train/loss (each variant's own objective) and "
                            f"train/ce_loss (comparable across variants) at each evaluation"
                            + ("; bold: mean over seeds, faint: each seed" if table.ablation
                               else ", one line per trial"), path))
    return figures


def _kneedle_frame(history: pd.DataFrame) -> pd.DataFrame:
    parts = []
    for branch in ("teacher", "student"):
        mean, std = f"train/k_{branch}_mean", f"train/k_{branch}_std"
        if mean not in history.columns or history[mean].isna().all():
            continue
        rows = history.dropna(subset=[mean])
        grouped = rows.groupby(["variant", "step"], sort=False).agg(
            mean=(mean, "mean"), std=(std, "mean")).reset_index()
        parts.append(grouped.assign(branch=branch))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _curve_frame(history: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    parts = []
    for metric in metrics:
        if metric not in history.columns or history[metric].isna().all():
            continue
        rows = history.dropna(subset=[metric])
        seeds = rows[["variant", "seed", "step", metric]].rename(columns={metric: "value"})
        mean = seeds.groupby(["variant", "step"], sort=False)["value"].mean().reset_index()
        parts += [seeds.assign(kind="seed", metric=metric),
                  mean.assign(kind="mean", seed=-1, metric=metric)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def sweep_figures(trials: pd.DataFrame, study: str, metric: str, out_dir: str,
                  tag: str) -> list[tuple[str, str]]:
    """Optimisation history and parameter importances of a sweep (non-ablation) study."""
    rows = trials[(trials["study"] == study) & (trials["status"] != "errored")
                  & trials[metric].notna()] if metric in trials.columns else trials.iloc[:0]
    if len(rows) < 2:
        return []
    values = rows[metric].to_numpy(dtype=np.float64)
    history = pd.DataFrame({"order": np.arange(1, len(rows) + 1), "value": values,
                            "best": np.maximum.accumulate(values), "status": rows["status"]})
    figures = [(f"{study}: {metric} of each trial in creation order and the best so far",
                plots.optimisation_history(history, ylabel=metric,
                                           title=f"{study}: optimisation history",
                                           path=os.path.join(out_dir, f"{tag}_history.png")))]
    importance = param_importance(rows, metric)
    if len(importance):
        figures.append((f"{study}: parameter importance for {metric} (|Spearman rho| for "
                        f"numeric settings, eta of ranks for categorical ones; marginal, not "
                        f"fANOVA)", plots.importances(
                            importance, title=f"{study}: parameter importance",
                            path=os.path.join(out_dir, f"{tag}_importance.png"))))
    return figures


# ------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------


def _num(value: float, digits: int = 1) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"


def _signed(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:+.1f}"


def _p(value: float) -> str:
    if value is None or math.isnan(value):
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _cell(stats: dict[str, float]) -> str:
    if stats["n"] == 0:
        return "–"
    if stats["n"] == 1:
        return _num(stats["mean"])
    return f"{_num(stats['mean'])} ± {_num(stats['std'])}"


def table_blocks(table: Table) -> list[tuple[str, list[str], list[list[str]], str]]:
    """(heading, header, rows, note) of each sub-table of ``table``."""
    split = "Test" if table.split == "test" else "Validation"
    header = ["Variant", "n", *(LABELS[c] for c in table.columns)]
    main = [[(f"{v} (baseline)" if v == table.baseline else v),
             str(table.stats[v, table.headline]["n"]),
             *(_cell(table.stats[v, c]) for c in table.columns)] for v in table.variants]
    main += [[f"{name} (reference)", "–", *(_num(scores.get(c, math.nan)) for c in table.columns)]
             for name, scores in table.references.items()]
    blocks = [(f"{split} results (%, mean ± std over seeds)", header, main,
               "Columns as in the paper's Table 1: the ten MiniVL-10 tasks, "
               f"{LABELS[table.headline]}, then the five group averages."
               + (" Reference rows are single models scored on the same split (not trials; no "
                  "seeds): " + ", ".join(table.references) + "." if table.references else ""))]

    head = LABELS[table.headline]
    s_header = ["Variant", "n", head, "95% CI (seeds)", "wall s", "teacher passes"]
    if table.baseline is not None:
        s_header += [f"Δ vs {table.baseline}", "Δ 95% CI (paired)", "p", "paired over"]
    s_rows = []
    for _, r in table.summary.iterrows():
        row = [r["variant"], str(r["n"]), _cell(table.stats[r["variant"], table.headline]),
               "–" if math.isnan(r["low"]) else f"[{_num(r['low'])}, {_num(r['high'])}]",
               _num(r["wall_s"]), _num(r["teacher_passes"], 0)]
        if table.baseline is not None:
            if r["variant"] == table.baseline:
                row += ["(baseline)", "", "", ""]
            else:
                d = table.deltas[r["variant"], table.headline]
                ci = "–" if math.isnan(d["low"]) else f"[{_signed(d['low'])}, {_signed(d['high'])}]"
                over = {"none": "–", "seeds": f"{d['num_seeds']} seeds"}.get(
                    d["method"], f"{d['num_seeds']} seed(s) x {d['num_items']} items")
                row += [_signed(d["delta"]), ci, _p(d["p_value"]), over]
        s_rows.append(row)
    blocks.append((f"{head}: 95% CI and difference to the baseline", s_header, s_rows,
                   "CI: percentile bootstrap over seeds of the mean (– with one seed). Δ: "
                   "difference of the means over seeds. Paired CI and p: bootstrap over the "
                   "seeds both variants ran and, with item scores, their test items (resampled "
                   "within each task, every task weighted equally). MME (acc + acc+) and POPE "
                   "(F1) are not means of item scores: they enter with their per-seed metric, "
                   "resampled over seeds only. Two-sided p of the sign of the difference."))

    if table.paper_variant is not None:
        blocks.append(_paper_block(table))
    if table.baseline is not None and len(table.variants) > 1:
        d_rows = []
        for v in table.variants[1:]:
            cells = []
            for c in table.columns:
                d = table.deltas[v, c]
                mark = "*" if not math.isnan(d["p_value"]) and d["p_value"] < SIGNIFICANCE else ""
                cells.append(_signed(d["delta"]) + mark)
            d_rows.append([v, *cells])
        blocks.append((f"Difference to {table.baseline} per column (points; * paired p < "
                       f"{SIGNIFICANCE})", ["Variant", *(LABELS[c] for c in table.columns)],
                       d_rows, ""))
    return blocks


def _paper_block(table: Table) -> tuple[str, list[str], list[list[str]], str]:
    """The paper's Switch-KD - TinyLLaVA deltas next to ours (``analysis.paper``)."""
    variant, rows = table.paper_variant, []
    for column in table.columns:
        paper = paper_delta(column)
        if math.isnan(paper):
            continue
        ours = table.deltas[variant, column]
        ci = "–" if math.isnan(ours["low"]) else f"[{_signed(ours['low'])}, {_signed(ours['high'])}]"
        rows.append([LABELS[column], _signed(paper), _signed(ours["delta"]), ci,
                     direction(paper, ours)])
    return (f"Side by side with the paper's Table 1: {PAPER_METHOD} - {PAPER_BASELINE} vs "
            f"{variant} - {table.baseline}",
            ["Column", "paper Δ", "ours Δ", "ours Δ 95% CI (paired)", "direction"], rows,
            "The paper's numbers are single runs on the real benchmarks at 0.5B scale; ours are "
            "MiniVL-10 means over seeds. Only the direction is comparable: 'same' when our "
            "paired CI lies on the paper's side of 0.")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def provenance_rows(trials: pd.DataFrame) -> list[list[str]]:
    rows = []
    keys = ["study", "data_fingerprint", "teacher_fingerprint"]
    frame = trials.assign(**{k: _fingerprints(trials[k]).fillna(NO_TEACHER)
                             for k in keys[1:]})
    for (study, data_fp, teacher_fp), group in frame.groupby(keys, sort=False):
        shas = ", ".join(sorted({str(s)[:12] for s in group["git_sha"]}))
        rows.append([study, data_fp, teacher_fp, str(len(group)),
                     str(int((group["status"] == "errored").sum())), shas])
    return rows


@dataclass
class Report:
    markdown: str
    html: str
    tables: list[Table]
    figures: list[tuple[str, str]]
    paths: dict[str, str]


def build_report(paths: Sequence[str], out_dir: str, *, baseline: Optional[str] = None,
                 num_samples: int = 10_000, seed: int = 0,
                 references: Sequence[str] = (), paper_variant: Optional[str] = None) -> Report:
    """Load the results, compute the tables, draw the figures, write report.md/.html.

    Args:
        paths: results folders (or their trials.parquet files).
        out_dir: created; receives report.md, report.html and the PNGs.
        baseline: the variant every other is compared with (default: the first variant of
            each ablation table, which ``switchkd ablate`` puts first: the file's baseline).
        num_samples, seed: of every bootstrap (a report is reproducible bit for bit).
        references: ``NAME=FILE`` specs of ``switchkd eval`` JSON files (the teacher, a blind
            baseline), shown as extra rows of every table on the same data and split.
        paper_variant: the variant whose deltas to the baseline are set next to the paper's
            Switch-KD - TinyLLaVA deltas (``analysis.paper``), in every table that has it.
    """
    refs = [load_reference(spec) for spec in references]
    results = load(paths)
    os.makedirs(out_dir, exist_ok=True)
    for name in os.listdir(out_dir):  # figures of an earlier report here would look current
        if re.fullmatch(r"fig\d+_.+\.png", name):
            os.remove(os.path.join(out_dir, name))
    tables = [fill_table(t, results.items, baseline=baseline, num_samples=num_samples, seed=seed)
              for t in split_tables(results.trials)]
    attach_references(tables, refs)
    if paper_variant is not None:
        usable = [t for t in tables if t.baseline not in (None, paper_variant)
                  and paper_variant in t.variants]
        if not usable:
            raise ReportError(f"--paper {paper_variant}: no table has that variant next to a "
                              f"baseline (variants: "
                              f"{sorted({v for t in tables for v in t.variants})})")
        for table in usable:
            table.paper_variant = paper_variant
    figures_by_table = []
    for i, table in enumerate(tables):
        tag = _slug(f"fig{i + 1}_{table.study}")
        figures = table_figures(table, results.history, out_dir, tag)
        if not table.ablation:
            figures += sweep_figures(table.rows, table.study, table.metric(table.headline),
                                     out_dir, tag)
        figures_by_table.append(figures)

    md, body = [], []
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    studies = ", ".join(dict.fromkeys(results.trials["study"]))
    md += [f"# Report: {studies}", "", f"Generated {stamp} by `switchkd report` from:", ""]
    md += [f"- `{s}`" for s in results.sources] + [""]
    body += [f"<h1>Report: {html.escape(studies)}</h1>",
             f"<p>Generated {stamp} by <code>switchkd report</code> from:</p><ul>"
             + "".join(f"<li><code>{html.escape(s)}</code></li>" for s in results.sources)
             + "</ul>"]
    header = ["Study", "Data fingerprint", "Teacher fingerprint", "Trials", "Errored", "git sha"]
    prov = provenance_rows(results.trials)
    md += ["## Data and teacher fingerprints", "", _md_table(header, prov), "",
           "Rows are compared only within one data and one teacher fingerprint.", ""]
    body += ["<h2>Data and teacher fingerprints</h2>", _html_table(header, prov),
             "<p>Rows are compared only within one data and one teacher fingerprint.</p>"]
    errored = results.trials[results.trials["status"] == "errored"]
    if len(errored):
        rows = [[r["study"], r["trial_id"], r["variant"], str(r["error"])]
                for _, r in errored.iterrows()]
        md += ["## Errored trials (left out of every table)", "",
               _md_table(["Study", "Trial", "Variant", "Error"], rows), ""]
        body += ["<h2>Errored trials (left out of every table)</h2>",
                 _html_table(["Study", "Trial", "Variant", "Error"], rows)]

    all_figures = []
    for i, (table, figures) in enumerate(zip(tables, figures_by_table)):
        heading = f"{i + 1}. {table.title}"
        split = "test" if table.split == "test" else "validation"
        md += [f"## {heading}", "", f"Metrics: {split} split (`{table.split}/*`)."
               + (f" Baseline: `{table.baseline}`." if table.baseline else ""), ""]
        body += [f"<h2>{html.escape(heading)}</h2>",
                 f"<p>Metrics: {split} split (<code>{table.split}/*</code>)."
                 + (f" Baseline: <code>{html.escape(table.baseline)}</code>." if table.baseline
                    else "") + "</p>"]
        for note in table.notes:
            md += [f"> Note: {note}", ""]
            body.append(f"<p class='note'>Note: {html.escape(note)}</p>")
        for title, head, rows, note in table_blocks(table):
            md += [f"### {title}", "", _md_table(head, rows), ""] + ([note, ""] if note else [])
            body += [f"<h3>{html.escape(title)}</h3>", _html_table(head, rows)] + \
                ([f"<p class='small'>{html.escape(note)}</p>"] if note else [])
        for caption, path in figures:
            name = os.path.basename(path)
            md += [f"![{caption}]({name})", "", f"*{caption}*", ""]
            with open(path, "rb") as f:
                data = base64.b64encode(f.read()).decode()
            body.append(f"<figure><img src='data:image/png;base64,{data}' "
                        f"alt='{html.escape(name)}'><figcaption>{html.escape(caption)}"
                        f"</figcaption></figure>")
            all_figures.append((caption, path))

    markdown = "\n".join(md).rstrip() + "\n"
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>switchkd report</title>"
            "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse;margin:0.5em 0 1em;font-size:0.9em}"
            "th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}"
            "th:first-child,td:first-child{text-align:left}th{background:#f2f2f2}"
            ".note{background:#fff6d5;padding:0.5em}.small{font-size:0.85em;color:#444}"
            "img{max-width:100%}figure{margin:1em 0}figcaption{font-size:0.85em;color:#444}"
            "</style></head><body>" + "\n".join(body) + "</body></html>\n")
    out = {"markdown": os.path.join(out_dir, "report.md"),
           "html": os.path.join(out_dir, "report.html")}
    with open(out["markdown"], "w") as f:
        f.write(markdown)
    with open(out["html"], "w") as f:
        f.write(page)
    return Report(markdown, page, tables, all_figures, out)


def report_main(argv: Optional[Sequence[str]] = None) -> int:
    """``switchkd report RESULTS_DIR... --out DIR [--baseline VARIANT]``."""
    parser = argparse.ArgumentParser(prog="switchkd report",
                                     description="tables and figures from results Parquet files")
    parser.add_argument("results", nargs="+", help="results folders (or trials.parquet files)")
    parser.add_argument("--out", required=True, help="folder for report.md, report.html, PNGs")
    parser.add_argument("--baseline", help="variant to compare every other with (default: each "
                        "ablation's baseline, listed first)")
    parser.add_argument("--reference", action="append", default=[], metavar="NAME=FILE",
                        help="a `switchkd eval` JSON shown as an extra row, e.g. "
                        "teacher=TEACHER_DIR/eval_test.json (repeatable)")
    parser.add_argument("--paper", metavar="VARIANT", help="set VARIANT - baseline next to the "
                        "paper's Switch-KD - TinyLLaVA deltas (Table 1), column by column")
    parser.add_argument("--bootstrap-samples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        report = build_report(args.results, args.out, baseline=args.baseline,
                              num_samples=args.bootstrap_samples, seed=args.seed,
                              references=args.reference, paper_variant=args.paper)
    except (FileNotFoundError, ReportError) as err:
        print(f"report: {err}", file=sys.stderr)
        return 2
    print(f"[report] {len(report.tables)} table(s), {len(report.figures)} figure(s): "
          f"{report.paths['markdown']}, {report.paths['html']}", flush=True)
    return 0
