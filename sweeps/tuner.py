"""Build and run a sweep: Optuna TPE (seeded, persistent) + ASHA over Ray Train trials.

A results folder holds one study::

    DIR/sweep.json        manifest: study, space file, preset, fixed overrides, experiments
    DIR/optuna.journal    the Optuna study (JournalStorage): TPE sees every finished trial,
                          also those of earlier invocations, so a sweep can be extended
    DIR/ray/<study>-NNN/  one Tune experiment per invocation (Tuner.restore target)
    DIR/ray/train/        the Ray Train runs (checkpoints), one per trial
    DIR/reports.jsonl     every report of every trial, appended as it arrives (Tune rewrites a
                          restarted trial's own result.json, so history is kept here)
    DIR/trials.parquet    one row per finished trial  (sweeps.export)
    DIR/history.parquet   one row per report

``run_sweep(..., resume=True)`` first finishes an interrupted experiment with
``Tuner.restore`` (its trials continue from their Train checkpoints), then starts a new
experiment for the trials still missing, so no trial is run twice or dropped.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from sweeps.driver import TrialPlan, train_driver_fn
from sweeps.export import (FINAL_STATES, MANIFEST, REPORTS, experiment_trials, export_results,
                           read_manifest, report_fields)
from sweeps.space import SearchSpace

# A custom resource held by each trial driver instead of a CPU, so the drivers never take the
# CPUs their Train workers need (2-CPU machines would deadlock otherwise). The embedded cluster
# declares it; on a cluster without it, the driver asks for a sliver of memory instead.
TRIAL_RESOURCE = "sweep_trial_driver"
TRIAL_RESOURCE_SLOTS = 64
FALLBACK_DRIVER_MEMORY = 64 * 1024**2

JOURNAL = "optuna.journal"


class SweepError(RuntimeError):
    """A sweep cannot start or resume (e.g. a results folder of another study)."""


@dataclass
class SweepOutcome:
    results_dir: str
    trials_path: str
    history_path: str
    num_trials: int         # finished trials in trials.parquet
    unfinished: int         # trials left unfinished (the sweep was interrupted): --resume
    wall_s: float           # the whole call: prepare, Ray trials, export


# ------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------


def driver_resources() -> dict[str, float]:
    """What one trial driver asks Ray for: no CPU, one custom slot (or a little memory)."""
    if ray.cluster_resources().get(TRIAL_RESOURCE, 0) >= 1:
        return {"CPU": 0, TRIAL_RESOURCE: 1}
    return {"CPU": 0, "memory": FALLBACK_DRIVER_MEMORY}


def open_study(results_dir: str, space: SearchSpace) -> optuna.Study:
    """The study's persistent Optuna record (created on first use)."""
    storage = journal_storage(results_dir)
    return optuna.create_study(storage=storage, study_name=space.study, load_if_exists=True,
                               direction="maximize" if space.mode == "max" else "minimize")


def journal_storage(results_dir: str) -> optuna.storages.JournalStorage:
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(os.path.join(results_dir, JOURNAL)))


def make_searcher(space: SearchSpace, results_dir: str) -> OptunaSearch:
    """Seeded TPE on the persistent study.

    The sampler's seed is offset by the number of trials the study already holds, so an
    extended sweep does not replay the random start-up draws of the first invocation.
    Points to evaluate that the study already tried (or queued) are not queued again.
    """
    study = open_study(results_dir, space)
    tried = [t.params for t in study.get_trials(deepcopy=False)]
    points = [p for p in space.points_to_evaluate
              if not any(all(t.get(k) == v for k, v in p.items()) for t in tried)]
    sampler = optuna.samplers.TPESampler(seed=space.seed + len(tried))
    return OptunaSearch(space=space.sample, metric=space.metric, mode=space.mode,
                        sampler=sampler, study_name=space.study,
                        storage=journal_storage(results_dir), points_to_evaluate=points or None)


def make_scheduler(space: SearchSpace):
    """ASHA on the metric with rungs in training steps (``step`` of each report)."""
    if space.scheduler.kind == "fifo":
        return FIFOScheduler()
    base = space.base_config()
    max_t = space.scheduler.max_t or space.max_steps()
    grace = min(space.scheduler.grace_period or base.train.eval_every, max_t)
    return ASHAScheduler(time_attr="step", max_t=max_t, grace_period=grace,
                         reduction_factor=space.scheduler.reduction_factor)


class ProgressPrinter(tune.Callback):
    """One line per report and per finished trial (Tune's own tables are too wide here)."""

    def __init__(self, metric: str, total: int):
        self.metric, self.total, self.finished = metric, total, 0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        shown = f"{value:.4g}" if isinstance(value, (int, float)) else value
        print(f"[sweep] trial {trial.trial_id} step {result.get('step')} "
              f"{self.metric}={shown} train/loss={result.get('train/loss', float('nan')):.4g}",
              flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.finished += 1
        print(f"[sweep] trial {trial.trial_id} finished ({self.finished}/{self.total})", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.finished += 1
        print(f"[sweep] trial {trial.trial_id} errored ({self.finished}/{self.total})", flush=True)


class ReportLog(tune.Callback):
    """Appends every report (metrics, cost, step) with its trial id to ``DIR/reports.jsonl``."""

    def __init__(self, path: str):
        self.path = path

    def on_trial_result(self, iteration, trials, trial, result, **info):
        row = {"trial_id": trial.trial_id, **report_fields(result)}
        with open(self.path, "a") as f:
            f.write(json.dumps(row, default=str) + "\n")


def trainable(plan: TrialPlan):
    return tune.with_resources(tune.with_parameters(train_driver_fn, plan=plan),
                               driver_resources())


def build_tuner(space: SearchSpace, plan: TrialPlan, *, results_dir: str, experiment: str,
                num_samples: int, verbose: int = 0) -> tune.Tuner:
    """The Tuner of one experiment (``num_samples`` new trials) of the study in ``results_dir``."""
    return tune.Tuner(
        trainable(plan),
        tune_config=tune.TuneConfig(
            metric=space.metric, mode=space.mode, num_samples=num_samples,
            search_alg=make_searcher(space, results_dir), scheduler=make_scheduler(space),
            max_concurrent_trials=space.max_concurrent_trials, reuse_actors=False),
        run_config=tune.RunConfig(
            name=experiment, storage_path=os.path.join(results_dir, "ray"), verbose=verbose,
            callbacks=[ProgressPrinter(space.metric, num_samples),
                       ReportLog(os.path.join(results_dir, REPORTS))],
            failure_config=tune.FailureConfig(max_failures=0)),
    )


def restore_tuner(space: SearchSpace, plan: TrialPlan, *, results_dir: str,
                  experiment: str) -> tune.Tuner:
    """Tuner.restore of an interrupted experiment; unfinished trials continue from their
    last Train checkpoint, errored ones stay errored."""
    return tune.Tuner.restore(os.path.join(results_dir, "ray", experiment), trainable(plan),
                              resume_unfinished=True, resume_errored=False,
                              restart_errored=False)


# ------------------------------------------------------------------------------------------
# Manifest and bookkeeping
# ------------------------------------------------------------------------------------------


def write_json_atomic(data: Any, path: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=str)
    os.replace(tmp, path)


@contextlib.contextmanager
def _exclusive(results_dir: str) -> Iterator[None]:
    """One sweep process per results folder at a time."""
    with open(os.path.join(results_dir, ".sweep.lock"), "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepError(f"another sweep is running in {results_dir}") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _comparable(overrides: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in overrides.items() if k != "run.cache_dir"}


def trial_plan(space: Any, overrides: dict[str, Any], results_dir: str, *,
               score_test: bool = False) -> TrialPlan:
    """The TrialPlan of a SearchSpace or an Ablation (both carry the same resource fields)."""
    return TrialPlan(study=space.study, preset=space.preset, overrides=overrides,
                     train_storage=os.path.join(results_dir, "ray", "train"),
                     num_workers=space.workers_per_trial, cpus_per_worker=space.cpus_per_worker,
                     gpus_per_worker=space.gpus_per_worker, max_failures=space.max_failures,
                     keep_checkpoints=space.keep_checkpoints, score_test=score_test)


# ------------------------------------------------------------------------------------------
# The sweep
# ------------------------------------------------------------------------------------------


def run_sweep(space: SearchSpace, results_dir: str, *, cache_dir: str, resume: bool = False,
              git_sha: str = "unknown", verbose: int = 0) -> SweepOutcome:
    """Prepare caches, run the study's missing trials on the connected Ray cluster, export.

    Args:
        space: the validated space (with command-line changes applied).
        results_dir: the study's folder (created); must not hold a study unless ``resume``.
        cache_dir: absolute ``run.cache_dir`` for every trial (data + teacher caches).
        resume: continue the study in ``results_dir`` up to ``space.num_samples`` trials.
        git_sha: recorded in every row.

    Returns:
        Where the Parquet files are and how many trials they hold.

    Raises:
        SweepError: ``results_dir`` holds another study or different fixed settings, or holds
            a study and ``resume`` is not set.
    """
    from switchkd.train import prepare  # torch: imported only when a sweep really runs

    start = time.perf_counter()
    results_dir = os.path.abspath(results_dir)
    os.makedirs(results_dir, exist_ok=True)
    if not os.path.isabs(cache_dir):
        raise SweepError(f"cache_dir must be absolute, got {cache_dir!r}")
    overrides = {**space.overrides, "run.cache_dir": cache_dir}
    space = space.with_changes(overrides={"run.cache_dir": cache_dir})
    with _exclusive(results_dir):
        manifest = read_manifest(results_dir)
        if manifest is not None and not resume:
            raise SweepError(f"{results_dir} already holds study {manifest['study']!r}; pass "
                             f"--resume to continue it, or choose another --results folder")
        if manifest is not None:
            if manifest["study"] != space.study:
                raise SweepError(f"{results_dir} holds study {manifest['study']!r}, not "
                                 f"{space.study!r}")
            if (manifest["preset"], _comparable(manifest["overrides"])) != \
                    (space.preset, _comparable(overrides)):
                raise SweepError(
                    f"{results_dir} was run with preset {manifest['preset']!r} and overrides "
                    f"{_comparable(manifest['overrides'])}; resuming needs the same (got "
                    f"{space.preset!r}, {_comparable(overrides)})")
        else:
            manifest = {"study": space.study, "question": space.question,
                        "space_file": space.path, "preset": space.preset,
                        "overrides": overrides, "metric": space.metric, "mode": space.mode,
                        "schema": "analysis.schema", "experiments": []}

        # Build data and teacher once, before any trial exists (trials would race for them).
        print(f"[sweep] preparing data and teacher for preset {space.preset!r} in {cache_dir}",
              flush=True)
        manifest["provenance"] = prepare(space.base_config())
        write_json_atomic(manifest, os.path.join(results_dir, MANIFEST))
        plan = trial_plan(space, overrides, results_dir)

        # 1. An interrupted experiment: finish its trials (same trial ids, from checkpoints).
        names = [e["name"] for e in manifest["experiments"]]
        interrupted_name = interrupted_experiment(results_dir, manifest) if resume else None
        if interrupted_name:
            print(f"[sweep] restoring interrupted experiment {interrupted_name}", flush=True)
            restore_tuner(space, plan, results_dir=results_dir, experiment=interrupted_name).fit()

        # 2. New trials up to num_samples, unless step 1 was interrupted (Ctrl-C ends fit()).
        done = _count(results_dir, names, finished=True)
        missing = space.num_samples - done
        interrupted = _count(results_dir, names, finished=False) > 0
        if missing > 0 and not interrupted:
            _fail_stale_optuna_trials(results_dir, space)
            name = f"{space.study}-{len(names) + 1:03d}"
            names.append(name)
            print(f"[sweep] {space.study}: {done} trials done, running {missing} more "
                  f"({name})", flush=True)
            run_experiment(results_dir, manifest, {
                "name": name, "num_samples": missing, "git_sha": git_sha, "preset": space.preset,
                "overrides": overrides, "max_concurrent_trials": space.max_concurrent_trials},
                build_tuner(space, plan, results_dir=results_dir, experiment=name,
                            num_samples=missing, verbose=verbose).fit)
        elif not interrupted:
            print(f"[sweep] {space.study}: {done} trials done; nothing to run", flush=True)
        trials_path, history_path, num_trials = export_results(results_dir)
        unfinished = _count(results_dir, names, finished=False)
    return SweepOutcome(results_dir, trials_path, history_path, num_trials, unfinished,
                        time.perf_counter() - start)


def interrupted_experiment(results_dir: str, manifest: dict[str, Any]) -> Optional[str]:
    """The study's last experiment when it has trials missing or unfinished, else None."""
    if not manifest["experiments"]:
        return None
    last = manifest["experiments"][-1]
    trials = experiment_trials(results_dir, last["name"])
    if trials is not None and (len(trials) < last["num_samples"]
                               or any(t.status not in FINAL_STATES for t in trials)):
        return last["name"]
    return None


def run_experiment(results_dir: str, manifest: dict[str, Any], entry: dict[str, Any],
                   fit: Callable[[], Any]) -> None:
    """Add a new experiment ``entry`` to the manifest, run ``fit`` (a Tuner's), and record
    when it started, when it ended (also when interrupted) and its wall seconds."""
    path = os.path.join(results_dir, MANIFEST)
    entry = {**entry, "started": _now()}
    manifest["experiments"].append(entry)
    write_json_atomic(manifest, path)
    start = time.perf_counter()
    try:
        fit()
    finally:
        entry.update(ended=_now(), wall_s=round(time.perf_counter() - start, 1))
        write_json_atomic(manifest, path)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def _count(results_dir: str, experiments: list[str], *, finished: bool) -> int:
    """Finished (or unfinished) trials over the given experiments."""
    return sum((t.status in FINAL_STATES) == finished
               for name in experiments for t in (experiment_trials(results_dir, name) or []))


def _fail_stale_optuna_trials(results_dir: str, space: SearchSpace) -> None:
    """Optuna trials left RUNNING by a sweep that died before Tune saved its state are closed
    as FAIL (nothing else runs in this folder: _exclusive), so TPE does not wait on them."""
    study = open_study(results_dir, space)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
