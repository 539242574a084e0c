"""A study's results -> ``trials.parquet`` (one row per finished trial) and
``history.parquet`` (one row per report), in the ``analysis.schema`` contract.

Sources, all in the results folder (layout: sweeps.tuner): ``sweep.json`` (preset and fixed
overrides per experiment), the Tune experiments (trial ids, configs, final status, errors) and
``reports.jsonl`` (every report, appended as it arrives: Tune rewrites a restarted trial's own
result file). The Parquet files are rebuilt from these on every call and replaced atomically,
so exporting after a resume never duplicates or drops a trial.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable, Mapping, Optional

import pandas as pd

from ray import tune

from analysis.schema import COST_COLUMNS, is_metric, to_frame, validate
from switchkd.config import ConfigError, to_flat_dict, valid_keys, with_overrides
from switchkd.presets import get_preset

TRIALS_FILE = "trials.parquet"
HISTORY_FILE = "history.parquet"
MANIFEST = "sweep.json"
REPORTS = "reports.jsonl"
FINAL_STATES = ("TERMINATED", "ERROR")  # Tune's statuses of a finished trial
# Tune's bookkeeping keys that are worth keeping in history rows.
KEPT_TUNE_KEYS = ("training_iteration",)


def write_parquet(frame: pd.DataFrame, path: str) -> None:
    """Write ``frame`` to ``path`` atomically (temp file in the same folder + os.replace)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def trial_status(tune_status: str, last_step: Optional[float], max_steps: int) -> str:
    """completed | stopped_early | errored, from Tune's final status and the last step."""
    if tune_status == "ERROR":
        return "errored"
    if last_step is None or (isinstance(last_step, float) and math.isnan(last_step)):
        return "errored"
    return "completed" if last_step >= max_steps else "stopped_early"


def error_text(error: Any) -> str:
    """The reason a trial failed, as one readable string (the worker's ``Type: message``)."""
    if error is None:
        return "unknown error"
    if isinstance(error, str):  # Tune's text trace: the last line holds the message
        lines = [line for line in error.strip().splitlines() if line.strip()]
        return lines[-1] if lines else "unknown error"
    cause = getattr(error, "cause", None) or error
    if type(cause).__name__ == "TrialError" and cause.args:
        return str(cause.args[0])
    text = str(cause.args[0]) if cause.args else str(cause)
    if "Traceback (most recent call last)" in text:
        text = text.strip().splitlines()[-1]
    return text if text.startswith(type(cause).__name__) else f"{type(cause).__name__}: {text}"


def trial_config(preset: str, overrides: Mapping[str, Any],
                 params: Mapping[str, Any]) -> dict[str, Any]:
    """Flat ``cfg.<key>`` values of a trial (base + fixed overrides + sampled params)."""
    try:
        cfg = with_overrides(get_preset(preset), {**overrides, **params})
        flat = to_flat_dict(cfg)
    except ConfigError:
        # The sampled combination is invalid (the trial errored on it): record what was asked.
        flat = {**to_flat_dict(with_overrides(get_preset(preset), overrides)), **params}
    return {f"cfg.{k}": v for k, v in flat.items()}


def read_manifest(results_dir: str) -> Optional[dict[str, Any]]:
    """The study's ``sweep.json`` (None when the folder holds no study yet)."""
    path = os.path.join(results_dir, MANIFEST)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def experiment_trials(results_dir: str, experiment: str) -> Optional[list]:
    """The Tune trials of one experiment (None when it died before saving any state)."""
    path = os.path.join(results_dir, "ray", experiment)
    if not tune.Tuner.can_restore(path):
        return None
    return tune.ExperimentAnalysis(path).trials


def report_fields(result: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a Tune result that belong in the Parquet history."""
    return {k: v for k, v in result.items()
            if is_metric(k) or k in COST_COLUMNS
            or k in ("step", "training_iteration", "data_fingerprint", "teacher_fingerprint",
                     "checkpoint_path")}


def read_reports(results_dir: str) -> dict[str, list[dict[str, Any]]]:
    """Every report of the study, by trial id, in arrival order (``reports.jsonl``)."""
    reports: dict[str, list[dict[str, Any]]] = {}
    path = os.path.join(results_dir, REPORTS)
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:  # a line cut short by an interruption
                    continue
                reports.setdefault(row.pop("trial_id"), []).append(row)
    return reports


def _metrics(report: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "training_iteration"}


def rows_for_trial(trial: Any, reports: list[dict[str, Any]], *, study: str,
                   experiment: Mapping[str, Any],
                   provenance: Mapping[str, Any]) -> tuple[Optional[dict], list[dict]]:
    """(final row or None while unfinished, history rows) of one Tune trial."""
    if trial.status not in FINAL_STATES:
        return None, []  # unfinished (interrupted): exported once a resume finishes it
    wall_s = _total_wall(reports)
    # A trial resumed from a checkpoint may repeat the steps after that checkpoint: keep the
    # last report of each step.
    by_step: dict[Any, dict] = {}
    for report in reports:
        by_step[report.get("step")] = report
    reports = sorted(by_step.values(), key=lambda r: r.get("step") or 0)
    params = dict(trial.config)
    cfg = trial_config(experiment["preset"], experiment["overrides"], params)
    max_steps = cfg["cfg.train.max_steps"]
    last = reports[-1] if reports else {}
    base = {
        "study": study, "trial_id": trial.trial_id,
        "seed": cfg["cfg.run.seed"], "git_sha": experiment.get("git_sha", "unknown"),
        "data_fingerprint": last.get("data_fingerprint", provenance.get("data_fingerprint")),
        "teacher_fingerprint": last.get("teacher_fingerprint",
                                        provenance.get("teacher_fingerprint")),
        **cfg,
    }
    status = trial_status(trial.status, last.get("step"), max_steps)
    error = None
    if status == "errored":
        error = (error_text(trial.get_pickled_error() or trial.get_error())
                 if trial.status == "ERROR" else "the trial finished without reporting")
    final = {**base, "status": status, "error": error, **_metrics(last)}
    if reports:
        final["wall_s"] = wall_s
    # The trial's last persisted checkpoint (Ray Train's copy; ``switchkd export`` reads it).
    saved = [r["checkpoint_path"] for r in reports if r.get("checkpoint_path")]
    final["checkpoint_path"] = saved[-1] if saved else None
    history = [{**base, "status": status, "error": error, **_metrics(r),
                **{k: r.get(k) for k in KEPT_TUNE_KEYS}} for r in reports]
    return final, history


def _total_wall(reports: list[dict[str, Any]]) -> float:
    """The trial's own wall time over all its segments: each (re)start of the worker restarts
    ``wall_s`` from 0, so a drop marks a new segment and the segments' last values add up."""
    total, previous = 0.0, 0.0
    for report in reports:
        value = report.get("wall_s")
        if not isinstance(value, (int, float)):
            continue
        if value < previous:
            total += previous
        previous = value
    return total + previous


def collect(results_dir: str) -> tuple[list[dict], list[dict]]:
    """Rows of every finished trial of the study in ``results_dir`` (all experiments)."""
    manifest = read_manifest(results_dir)
    if manifest is None:
        raise FileNotFoundError(f"no sweep manifest in {results_dir}")
    reports = read_reports(results_dir)
    finals, history, seen = [], [], set()
    for experiment in manifest["experiments"]:
        # None: died before Tune saved anything, so no trial of it ever ran.
        for trial in experiment_trials(results_dir, experiment["name"]) or []:
            if trial.trial_id in seen:
                continue
            # reports.jsonl is the record; Tune's last result stands in for folders without it.
            own = reports.get(trial.trial_id) or (
                [report_fields(trial.last_result)] if trial.last_result else [])
            final, rows = rows_for_trial(trial, own,
                                         study=manifest["study"], experiment=experiment,
                                         provenance=manifest.get("provenance", {}))
            if final is not None:
                seen.add(trial.trial_id)
                finals.append(final)
                history.extend(rows)
    return finals, history


def export_results(results_dir: str) -> tuple[str, str, int]:
    """Write ``trials.parquet`` and ``history.parquet`` for the study in ``results_dir``.

    Returns:
        (trials path, history path, number of trials).
    """
    finals, history = collect(results_dir)
    keys = valid_keys()
    trials = validate(to_frame(finals), cfg_keys=keys) if finals else _empty(keys)
    steps = validate(to_frame(history, history=True), cfg_keys=keys, history=True) if history \
        else _empty(keys, history=True)
    trials_path = os.path.join(results_dir, TRIALS_FILE)
    history_path = os.path.join(results_dir, HISTORY_FILE)
    write_parquet(trials, trials_path)
    write_parquet(steps, history_path)
    return trials_path, history_path, len(trials)


def _empty(cfg_keys: Iterable[str], history: bool = False) -> pd.DataFrame:
    frame = to_frame([], history=history)
    for key in cfg_keys:
        frame[f"cfg.{key}"] = pd.Series(dtype=object)
    for name in ("seed", "schema_version"):
        frame[name] = pd.Series(dtype="int64")
    frame["val/avg"] = pd.Series(dtype="float64")
    return frame
