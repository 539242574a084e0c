"""What runs inside Ray: the Tune trial (``train_driver_fn``) and its Train workers
(``train_fn_per_worker``).

Ray Train V2 pattern (docs/ray.md): each Tune trial is a small driver holding a custom
resource and no CPU; it builds a ``TorchTrainer`` whose workers call ``switchkd.train.train``
and report through ``ray.train.report``; ``TuneReportCallback`` forwards rank 0's reports to
Tune, so ASHA and Optuna see every evaluation. Checkpoints go through ``ray.train.Checkpoint``
into the Train run folder, so a crashed worker (``max_failures``) or a restored sweep resumes
the trial from its last checkpoint instead of from step 0.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import ray.train
from ray import tune
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, LoggingConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback


@dataclass(frozen=True)
class TrialPlan:
    """Everything a trial needs besides its sampled parameters (identical for all trials)."""

    study: str
    preset: str
    overrides: Mapping[str, Any]       # fixed overrides, run.cache_dir absolute
    train_storage: str                 # absolute folder for the Train runs (checkpoints)
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_failures: int = 0
    keep_checkpoints: int = 1
    score_test: bool = False           # ablations: score the final student on the test split


# Written by rank 0 into the final checkpoint when ``score_test``: one score per test item.
TEST_ITEMS_FILE = "test_items.json"


class TrialError(RuntimeError):
    """A trial's training failed; the message is the worker's own error (type and text)."""


def train_fn_per_worker(config: dict[str, Any]) -> None:
    """A Ray Train worker: build the trial's config and run ``switchkd.train.train``.

    ``config``: ``{"preset", "overrides", "score_test"}``. Resumes from
    ``ray.train.get_checkpoint()`` when Ray restarts the worker group (``max_failures``) or the
    sweep is restored. With ``score_test`` (ablations), the final checkpoint's student is scored
    on the test split before the last report: the test metrics join that report and the
    per-item scores go into the checkpoint folder (``TEST_ITEMS_FILE``), which Ray persists.
    """
    # Imported here: the trial driver and the sweep process never need torch for this module.
    from switchkd.config import with_overrides
    from switchkd.presets import get_preset
    from switchkd.train import evaluate_run, prepare, train

    cfg = with_overrides(get_preset(config["preset"]), config["overrides"])
    # The sweep prepared the base config; this only builds caches a trial's own overrides need
    # (file-locked, so ranks and trials never build the same cache twice). Its fingerprints go
    # into every report so each Parquet row says which data and teacher it used.
    provenance = prepare(cfg)
    start = time.perf_counter()

    def report(metrics: dict[str, Any], checkpoint_dir: Optional[str]) -> None:
        payload = {**metrics, **provenance}
        payload.setdefault("wall_s", time.perf_counter() - start)
        if checkpoint_dir is None:
            ray.train.report(payload)
            return
        if config.get("score_test") and metrics.get("step") == cfg.train.max_steps:
            # checkpoint_dir is valid until this returns: score it now. Not counted in wall_s
            # (the training cost), which train() measured before calling report.
            scores, records = evaluate_run(cfg, checkpoint_dir, split="test")
            payload.update(scores)
            with open(os.path.join(checkpoint_dir, TEST_ITEMS_FILE), "w") as f:
                json.dump([{"task": r["task"], "index": r["index"], "score": r["score"]}
                           for r in records], f)
        # Persisted (copied into the Train run folder) before report returns.
        ray.train.report(payload, checkpoint=Checkpoint.from_directory(checkpoint_dir))

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        train(cfg, report=report)
    else:
        with checkpoint.as_directory() as directory:
            train(cfg, report=report, resume_from=directory)


def trial_overrides(config: Mapping[str, Any], plan: TrialPlan,
                    variants: Optional[Mapping[str, Mapping[str, Any]]] = None) -> dict[str, Any]:
    """The dotted overrides of one trial: the plan's fixed ones, then either the sampled
    ``config`` (sweeps) or, for an ablation cell ``{"variant", "run.seed"}``, the variant's."""
    if variants is None:
        return {**plan.overrides, **config}
    return {**plan.overrides, **variants[config["variant"]], "run.seed": config["run.seed"]}


def train_driver_fn(config: dict[str, Any], plan: TrialPlan,
                    variants: Optional[Mapping[str, Mapping[str, Any]]] = None) -> None:
    """A Tune trial: run one TorchTrainer for the sampled ``config`` (dotted keys), or for an
    ablation cell when ``variants`` is given (see ``trial_overrides``).

    The Train run is named after the trial, so restoring the sweep re-attaches to the same
    run and its checkpoints (Ray Train V2 resumes a run folder that already exists).

    Raises:
        TrialError: the training failed (after ``plan.max_failures`` restarts); the message
            is the rank-0 worker's exception, e.g. ``NonFiniteLossError: ... step 3 ...``.
    """
    trial_id = tune.get_context().get_trial_id()
    gpus = {"GPU": plan.gpus_per_worker} if plan.gpus_per_worker else {}
    trainer = TorchTrainer(
        train_fn_per_worker,
        train_loop_config={"preset": plan.preset, "score_test": plan.score_test,
                           "overrides": trial_overrides(config, plan, variants)},
        scaling_config=ScalingConfig(
            num_workers=plan.num_workers, use_gpu=plan.gpus_per_worker > 0,
            resources_per_worker={"CPU": plan.cpus_per_worker, **gpus}),
        run_config=ray.train.RunConfig(
            name=f"{plan.study}-{trial_id}",
            storage_path=plan.train_storage,
            failure_config=FailureConfig(max_failures=plan.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=plan.keep_checkpoints),
            callbacks=[TuneReportCallback()],
            # Train logs every report with all its metrics at INFO; the sweep prints its own lines.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    try:
        trainer.fit()
    except ray.train.TrainingFailedError as err:
        raise TrialError(failure_message(err)) from None


def failure_message(err: BaseException) -> str:
    """``Type: message`` of the root cause of a Train failure (rank 0's when several failed)."""
    failures = getattr(err, "worker_failures", None)
    if failures:
        err = failures[min(failures)]
    cause = getattr(err, "controller_failure", None) or err
    # Worker exceptions arrive wrapped (RayTaskError(...)); .cause is the user's exception.
    cause = getattr(cause, "cause", None) or cause
    text = str(cause).strip()
    # A wrapped exception's text starts with the remote traceback; its last line is the message.
    if "Traceback (most recent call last)" in text:
        text = text.strip().splitlines()[-1]
    name = type(cause).__name__
    return text if text.startswith(f"{name}:") else f"{name}: {text}"
