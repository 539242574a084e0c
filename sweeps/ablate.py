"""Ablations as data: named variants x seeds, run as a seeded Ray Tune grid.

An ablation file (``search_spaces/ablations/*.yaml``) names a study, a base preset, overrides
shared by every variant, and the variants, each a mapping of dotted overrides::

    study: components                   # results are named after it
    question: which Switch-KD component carries the gain over SFT?
    preset: default
    metric: val/avg10                   # printed while running; reports use test/* when present
    mode: max
    seeds: 3                            # a count (seeds 0, 1, 2) or a list [0, 1, 2]: run.seed
    baseline: sft_only                  # the report's reference row (default: the first variant)
    max_concurrent_trials: 1
    workers_per_trial: 1
    resources: {cpus_per_worker: 1, gpus_per_worker: 0}
    max_failures: 0
    keep_checkpoints: 1
    overrides: {train.max_steps: 1000}   # shared by every variant
    variants:
      sft_only: {train.stage: sft}
      full: {}                          # the preset + shared overrides as they are
    smoke: {preset: tiny, seeds: 1, variants: [sft_only, full], overrides: {train.max_steps: 8}}

Every trial is one (variant, seed) cell: ``run.seed`` is the seed, the config is the preset +
shared overrides + the variant's overrides. Everything is validated before any trial starts
(unknown keys with the closest valid key, values by building every variant's config), with
``file:line:`` errors as in ``sweeps.space``. There is no search algorithm and no early stopping:
the cells are ``BasicVariantGenerator`` points, one experiment per invocation, and ``--resume``
first finishes an interrupted experiment (``Tuner.restore``), then runs the cells still missing
(new seeds with ``--seeds N``, or variants added to the file).

After training, rank 0 scores the final student on the **test** split
(``switchkd.train.evaluate_run``): ``test/*`` metrics go into the trial's last report, and the
per-item scores are written into the final checkpoint (``test_items.json``), from where the
export gathers them into ``items.parquet`` for the report's paired tests.

Results folder: the sweep layout (``sweeps.tuner``) with ``sweep.json`` marked
``"kind": "ablation"``, and ``trials.parquet`` / ``history.parquet`` carrying a ``variant``
column, plus ``items.parquet`` (``analysis.schema.ITEM_COLUMNS``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import pandas as pd
from ray import tune
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import BasicVariantGenerator

from analysis.schema import ITEM_COLUMNS, to_frame, validate
from switchkd.config import Config, ConfigError, to_flat_dict, valid_keys, with_overrides
from switchkd.presets import PRESETS, get_preset
from sweeps.driver import TEST_ITEMS_FILE, TrialPlan, train_driver_fn
from sweeps.export import (FINAL_STATES, HISTORY_FILE, MANIFEST, REPORTS, TRIALS_FILE, _empty,
                           experiment_trials, read_manifest, read_reports, report_fields,
                           rows_for_trial, write_parquet)
from sweeps.space import (SMOKE_DEFAULTS, SpaceError, _check_key, _closest, _is_number,
                          _overrides, _Where, read_yaml_mapping)
from sweeps.tuner import (ProgressPrinter, ReportLog, SweepError, SweepOutcome, _comparable,
                          _count, _exclusive, driver_resources, interrupted_experiment,
                          run_experiment, trial_plan, write_json_atomic)

TOP_LEVEL = ("study", "question", "preset", "metric", "mode", "seeds", "baseline",
             "max_concurrent_trials", "workers_per_trial", "resources", "max_failures",
             "keep_checkpoints", "overrides", "variants", "smoke")
SMOKE_FIELDS = ("preset", "seeds", "variants", "max_concurrent_trials", "overrides")
# Set per cell by the grid: a variant or shared override may not fix them.
GRID_KEYS = ("run.seed",)
ITEMS_FILE = "items.parquet"
KIND = "ablation"


@dataclass(frozen=True)
class Ablation:
    """A validated ablation: base config, variants (in file order), seeds, budget, resources."""

    path: str
    study: str
    question: str
    preset: str
    metric: str
    mode: str
    seeds: tuple[int, ...]
    baseline: str
    variants: Mapping[str, Mapping[str, Any]]
    overrides: Mapping[str, Any] = field(default_factory=dict)
    max_concurrent_trials: int = 1
    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_failures: int = 0
    keep_checkpoints: int = 1
    smoke: Mapping[str, Any] = field(default_factory=dict)

    def variant_overrides(self, variant: str) -> dict[str, Any]:
        """Shared overrides, then the variant's own (the variant wins)."""
        return {**self.overrides, **self.variants[variant]}

    def trial_config(self, variant: str, seed: int) -> Config:
        """The config of cell (variant, seed)."""
        return with_overrides(get_preset(self.preset),
                              {**self.variant_overrides(variant), "run.seed": seed})

    def base_config(self) -> Config:
        """The preset with the shared overrides (what ``prepare`` builds the data for)."""
        return with_overrides(get_preset(self.preset), self.overrides)

    def cells(self) -> list[tuple[str, int]]:
        """Every (variant, seed) of the grid, seed by seed (variants in file order within a
        seed), so a study stopped part-way holds whole seeds: paired comparisons stay possible."""
        return [(v, s) for s in self.seeds for v in self.variants]

    def for_smoke(self) -> "Ablation":
        """The ``--smoke`` variant: the file's ``smoke:`` block (default: the tiny preset, one
        seed, every variant, a few steps)."""
        smoke = self.smoke
        overrides = {**SMOKE_DEFAULTS["overrides"], **smoke.get("overrides", {})}
        keep = smoke.get("variants") or list(self.variants)
        narrowed = dataclasses.replace(
            self, variants={v: self.variants[v] for v in keep},
            baseline=self.baseline if self.baseline in keep else keep[0])
        return narrowed.with_changes(preset=smoke.get("preset", "tiny"),
                                     seeds=_seed_list(smoke.get("seeds", 1)),
                                     max_concurrent_trials=smoke.get("max_concurrent_trials"),
                                     overrides=overrides)

    def with_changes(self, *, preset: Optional[str] = None,
                     seeds: Optional[Sequence[int]] = None,
                     workers_per_trial: Optional[int] = None,
                     max_concurrent_trials: Optional[int] = None,
                     overrides: Optional[Mapping[str, Any]] = None) -> "Ablation":
        """A copy with command-line changes; ``overrides`` add to the shared ones.

        Raises:
            SpaceError: a change is invalid (unknown preset or key, a key a variant sets, a
                value no variant can take, a count < 1).
        """
        where = f"{self.path}: command line"
        changes: dict[str, Any] = {}
        if preset is not None:
            if preset not in PRESETS:
                raise SpaceError(f"{where}: unknown preset {preset!r}; available: "
                                 f"{sorted(PRESETS)}")
            changes["preset"] = preset
        if seeds is not None:
            if not seeds:
                raise SpaceError(f"{where}: at least one seed is needed")
            changes["seeds"] = tuple(seeds)
        for name, value in (("workers_per_trial", workers_per_trial),
                            ("max_concurrent_trials", max_concurrent_trials)):
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise SpaceError(f"{where}: {name} must be an integer >= 1, got {value!r}")
                changes[name] = value
        if overrides:
            for key in overrides:
                _check_key(key, where)
                if key in GRID_KEYS:
                    raise SpaceError(f"{where}: {key!r} is the grid's seed axis; use --seeds")
                setters = [v for v, o in self.variants.items() if key in o]
                if setters:
                    raise SpaceError(f"{where}: {key!r} is set by variant(s) {setters}; it "
                                     f"cannot also be overridden for all")
            changes["overrides"] = {**self.overrides, **overrides}
        ablation = dataclasses.replace(self, **changes)
        for variant in ablation.variants:
            try:
                ablation.trial_config(variant, ablation.seeds[0])
            except ConfigError as err:
                raise SpaceError(f"{where}: variant {variant!r}: {err}") from None
        return ablation


def _seed_list(seeds: Any) -> list[int]:
    """A count n -> [0, ..., n-1]; a list stays."""
    return list(range(seeds)) if isinstance(seeds, int) else list(seeds)


def extend_seeds(seeds: Sequence[int], count: int) -> list[int]:
    """The first ``count`` seeds: the file's, then the next unused integers after them.

    ``--seeds 5`` on a file with ``seeds: [0, 1, 2]`` gives ``[0, 1, 2, 3, 4]``; ``--seeds 2``
    gives ``[0, 1]``.
    """
    out = list(seeds[:count])
    candidate = max(seeds, default=-1) + 1
    while len(out) < count:
        if candidate not in out:
            out.append(candidate)
        candidate += 1
    return out


# ------------------------------------------------------------------------------------------
# Loading and validation
# ------------------------------------------------------------------------------------------


def load_ablation(path: str) -> Ablation:
    """Read and validate an ablation YAML.

    Raises:
        SpaceError: with ``file:line:`` and what is wrong (unknown field or key with a
            suggestion, a value no config accepts, two variants with the same config, ...).
            Nothing is started.
        FileNotFoundError: ``path`` does not exist.
    """
    data, where = read_yaml_mapping(path, "an ablation")
    return _parse(data, where, os.path.abspath(path))


def _parse(data: dict, where: _Where, path: str) -> Ablation:
    at, at_key, shown = where.at, where.at_key, where.shown
    for key in data:
        if key not in TOP_LEVEL:
            raise SpaceError(f"{at_key(key)}: unknown field {key!r}{_closest(str(key), TOP_LEVEL)}"
                             f" (valid: {', '.join(TOP_LEVEL)})")
    for key in ("study", "metric", "mode", "seeds", "variants"):
        if key not in data:
            raise SpaceError(f"{shown}:1: missing required field {key!r}")

    def integer(key: str, default: int, minimum: int = 1) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise SpaceError(f"{at(key)}: {key} must be an integer >= {minimum}, got {value!r}")
        return value

    study = data["study"]
    if not isinstance(study, str) or not study or not all(c.isalnum() or c in "-_" for c in study):
        raise SpaceError(f"{at('study')}: study must be a name of letters, digits, '-' or '_'")
    preset = data.get("preset", "default")
    if preset not in PRESETS:
        raise SpaceError(f"{at('preset')}: unknown preset {preset!r}"
                         f"{_closest(str(preset), PRESETS)}")
    metric, mode = data["metric"], data["mode"]
    if not isinstance(metric, str) or not metric.startswith(("val/", "train/")):
        raise SpaceError(f"{at('metric')}: metric must be a reported train/* or val/* key "
                         f"(reports use its test/* twin), got {metric!r}")
    if mode not in ("min", "max"):
        raise SpaceError(f"{at('mode')}: mode must be 'min' or 'max', got {mode!r}")
    seeds = _seeds(data["seeds"], ("seeds",), where)

    resources = data.get("resources") or {}
    if not isinstance(resources, dict):
        raise SpaceError(f"{at('resources')}: resources must be a mapping")
    for key in resources:
        if key not in ("cpus_per_worker", "gpus_per_worker"):
            raise SpaceError(f"{at_key('resources', key)}: unknown resource {key!r} "
                             f"(valid: cpus_per_worker, gpus_per_worker)")
    cpus = resources.get("cpus_per_worker", 1)
    gpus = resources.get("gpus_per_worker", 0)
    for key, value in (("cpus_per_worker", cpus), ("gpus_per_worker", gpus)):
        if not _is_number(value) or value < 0:
            raise SpaceError(f"{at('resources', key)}: {key} must be a number >= 0")

    overrides = _overrides(data.get("overrides"), ("overrides",), where)
    for key in overrides:
        if key in GRID_KEYS:
            raise SpaceError(f"{at_key('overrides', key)}: {key!r} is set per trial from "
                             f"'seeds'; list the seeds there instead")
    try:
        with_overrides(get_preset(preset), overrides)
    except ConfigError as err:
        raise SpaceError(f"{_line_of(err, overrides, ('overrides',), where)}: {err}") from None

    variants = _variants(data["variants"], preset, overrides, seeds[0], where)
    baseline = data.get("baseline", next(iter(variants)))
    if baseline not in variants:
        raise SpaceError(f"{at('baseline')}: baseline {baseline!r} is not a variant"
                         f"{_closest(str(baseline), variants)} (variants: {', '.join(variants)})")
    smoke = _smoke(data.get("smoke"), variants, where)

    ablation = Ablation(
        path=path, study=study, question=str(data.get("question", "")), preset=preset,
        metric=metric, mode=mode, seeds=tuple(seeds), baseline=baseline, variants=variants,
        overrides=overrides, max_concurrent_trials=integer("max_concurrent_trials", 1),
        workers_per_trial=integer("workers_per_trial", 1), cpus_per_worker=float(cpus),
        gpus_per_worker=float(gpus), max_failures=integer("max_failures", 0, minimum=-1),
        keep_checkpoints=integer("keep_checkpoints", 1), smoke=smoke)
    try:
        ablation.for_smoke()
    except SpaceError as err:
        raise SpaceError(f"{at('smoke')}: smoke variant: {str(err).split(': ', 2)[-1]}") from None
    return ablation


def _seeds(value: Any, path: tuple, where: _Where) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise SpaceError(f"{where.at(*path)}: seeds must be a count >= 1 or a list of seeds, "
                             f"got {value}")
        return list(range(value))
    if not isinstance(value, list) or not value:
        raise SpaceError(f"{where.at(*path)}: seeds must be a count >= 1 or a non-empty list of "
                         f"integers, got {value!r}")
    for i, seed in enumerate(value):
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SpaceError(f"{where.at(*path, i)}: a seed must be an integer >= 0, got {seed!r}")
    if len(set(value)) != len(value):
        raise SpaceError(f"{where.at(*path)}: duplicate seeds in {value}")
    return list(value)


def _variants(value: Any, preset: str, overrides: dict, seed: int,
              where: _Where) -> dict[str, dict[str, Any]]:
    at, at_key = where.at, where.at_key
    if not isinstance(value, dict) or not value:
        raise SpaceError(f"{at('variants')}: variants must be a non-empty mapping of names to "
                         f"dotted overrides, e.g. {{sft_only: {{train.stage: sft}}, full: {{}}}}")
    variants: dict[str, dict[str, Any]] = {}
    seen: dict[str, str] = {}  # resolved config -> the variant that has it
    for name, spec in value.items():
        if not isinstance(name, str) or not name or \
                not all(c.isalnum() or c in "-_" for c in name):
            raise SpaceError(f"{at_key('variants', name)}: variant name {name!r} must be letters, "
                             f"digits, '-' or '_'")
        spec = {} if spec is None else spec
        own = _overrides(spec, ("variants", name), where)
        for key in own:
            if key in GRID_KEYS:
                raise SpaceError(f"{at_key('variants', name, key)}: {key!r} is set per trial "
                                 f"from 'seeds'; a variant cannot fix it")
        try:
            cfg = with_overrides(get_preset(preset), {**overrides, **own, "run.seed": seed})
        except ConfigError as err:
            raise SpaceError(f"{_line_of(err, own, ('variants', name), where)}: variant "
                             f"{name!r}: {err}") from None
        resolved = json.dumps(to_flat_dict(cfg), sort_keys=True, default=str)
        if resolved in seen:
            raise SpaceError(f"{at_key('variants', name)}: variant {name!r} has the same config "
                             f"as {seen[resolved]!r}; drop one (a grid cell would run twice)")
        seen[resolved] = name
        variants[name] = own
    return variants


def _smoke(value: Any, variants: Mapping[str, Any], where: _Where) -> dict[str, Any]:
    at, at_key = where.at, where.at_key
    smoke = value or {}
    if not isinstance(smoke, dict):
        raise SpaceError(f"{at('smoke')}: smoke must be a mapping")
    for key in smoke:
        if key not in SMOKE_FIELDS:
            raise SpaceError(f"{at_key('smoke', key)}: unknown smoke field {key!r}"
                             f"{_closest(str(key), SMOKE_FIELDS)} (valid: "
                             f"{', '.join(SMOKE_FIELDS)})")
    smoke = dict(smoke)
    if "preset" in smoke and smoke["preset"] not in PRESETS:
        raise SpaceError(f"{at('smoke', 'preset')}: unknown preset {smoke['preset']!r}"
                         f"{_closest(str(smoke['preset']), PRESETS)}")
    if "seeds" in smoke:
        smoke["seeds"] = _seeds(smoke["seeds"], ("smoke", "seeds"), where)
    if "variants" in smoke:
        names = smoke["variants"]
        if not isinstance(names, list) or not names:
            raise SpaceError(f"{at('smoke', 'variants')}: smoke variants must be a non-empty "
                             f"list of variant names")
        for i, name in enumerate(names):
            if name not in variants:
                raise SpaceError(f"{at('smoke', 'variants', i)}: unknown variant {name!r}"
                                 f"{_closest(str(name), variants)}")
    if "overrides" in smoke:
        smoke["overrides"] = _overrides(smoke["overrides"], ("smoke", "overrides"), where)
    return smoke


def _line_of(err: ConfigError, keys: Mapping[str, Any], path: tuple, where: _Where) -> str:
    """``file:line`` of the key a ConfigError names when the mapping sets it, else of the
    mapping itself (a cross-field error names a key the mapping may not set)."""
    key = str(err).split(":")[0].strip("'")
    return where.at(*path, key) if key in keys else where.at(*path)


# ------------------------------------------------------------------------------------------
# Running (Ray)
# ------------------------------------------------------------------------------------------


def run_ablation(ablation: Ablation, results_dir: str, *, cache_dir: str, resume: bool = False,
                 git_sha: str = "unknown", verbose: int = 0) -> SweepOutcome:
    """Run the ablation's missing cells on the connected Ray cluster, then export.

    Args:
        ablation: the validated ablation (command-line changes applied).
        results_dir: the study's folder (created); must not hold a study unless ``resume``.
        cache_dir: absolute ``run.cache_dir`` of every trial (data + teacher caches).
        resume: continue the ablation in ``results_dir``: finish an interrupted experiment,
            then run the (variant, seed) cells no finished trial covers.
        git_sha: recorded in every row.

    Returns:
        Where the Parquet files are and how many trials they hold.

    Raises:
        SweepError: the folder holds another study or a sweep, different shared settings, a
            variant whose overrides changed, or a study while ``resume`` is not set.
    """
    from switchkd.train import prepare  # torch: imported only when an ablation really runs

    start = time.perf_counter()
    results_dir = os.path.abspath(results_dir)
    os.makedirs(results_dir, exist_ok=True)
    if not os.path.isabs(cache_dir):
        raise SweepError(f"cache_dir must be absolute, got {cache_dir!r}")
    ablation = ablation.with_changes(overrides={"run.cache_dir": cache_dir})
    overrides = dict(ablation.overrides)
    with _exclusive(results_dir):
        manifest = read_manifest(results_dir)
        if manifest is not None and not resume:
            raise SweepError(f"{results_dir} already holds study {manifest['study']!r}; pass "
                             f"--resume to continue it, or choose another --results folder")
        if manifest is not None:
            _check_resumable(manifest, ablation, overrides, results_dir)
        else:
            manifest = {"kind": KIND, "study": ablation.study, "question": ablation.question,
                        "space_file": ablation.path, "preset": ablation.preset,
                        "overrides": overrides, "metric": ablation.metric,
                        "mode": ablation.mode, "schema": "analysis.schema", "variants": {},
                        "variant_order": [], "provenance": {}, "experiments": []}
        manifest["variants"] = {**manifest["variants"], **ablation.variants}
        # Report order: the baseline, the file's variants, then variants of earlier runs.
        manifest["variant_order"] = list(dict.fromkeys(
            [ablation.baseline, *ablation.variants, *manifest["variant_order"]]))
        manifest["baseline"] = ablation.baseline
        manifest["seeds"] = list(ablation.seeds)

        # Data and teachers once per variant before any trial exists (trials would race).
        for variant in ablation.variants:
            print(f"[ablate] preparing data and teacher for variant {variant!r} in {cache_dir}",
                  flush=True)
            manifest["provenance"][variant] = prepare(
                ablation.trial_config(variant, ablation.seeds[0]))
        write_json_atomic(manifest, os.path.join(results_dir, MANIFEST))
        plan = trial_plan(ablation, overrides, results_dir, score_test=True)
        variants = dict(manifest["variants"])

        # 1. An interrupted experiment: finish its cells (same trial ids, from checkpoints).
        names = [e["name"] for e in manifest["experiments"]]
        interrupted_name = interrupted_experiment(results_dir, manifest) if resume else None
        if interrupted_name:
            print(f"[ablate] restoring interrupted experiment {interrupted_name}", flush=True)
            restore_ablation_tuner(plan, variants, results_dir=results_dir,
                                   experiment=interrupted_name).fit()

        # 2. The cells no finished trial covers, unless step 1 was interrupted.
        done = finished_cells(results_dir, names)
        missing = [cell for cell in ablation.cells() if cell not in done]
        interrupted = _count(results_dir, names, finished=False) > 0
        if missing and not interrupted:
            name = f"{ablation.study}-{len(names) + 1:03d}"
            names.append(name)
            print(f"[ablate] {ablation.study}: {len(ablation.cells()) - len(missing)} of "
                  f"{len(ablation.cells())} cells done, running {len(missing)} ({name})",
                  flush=True)
            run_experiment(results_dir, manifest, {
                "name": name, "num_samples": len(missing), "cells": missing, "git_sha": git_sha,
                "preset": ablation.preset, "overrides": overrides,
                "max_concurrent_trials": ablation.max_concurrent_trials},
                build_ablation_tuner(ablation, plan, variants, results_dir=results_dir,
                                     experiment=name, cells=missing, verbose=verbose).fit)
        elif not interrupted:
            print(f"[ablate] {ablation.study}: all {len(ablation.cells())} cells done; nothing "
                  f"to run", flush=True)
        trials_path, history_path, _, num_trials = export_ablation(results_dir)
        unfinished = _count(results_dir, names, finished=False)
    return SweepOutcome(results_dir, trials_path, history_path, num_trials, unfinished,
                        time.perf_counter() - start)


def _check_resumable(manifest: dict, ablation: Ablation, overrides: dict,
                     results_dir: str) -> None:
    if manifest.get("kind") != KIND:
        raise SweepError(f"{results_dir} holds a sweep ({manifest['study']!r}), not an ablation")
    if manifest["study"] != ablation.study:
        raise SweepError(f"{results_dir} holds ablation {manifest['study']!r}, not "
                         f"{ablation.study!r}")
    if (manifest["preset"], _comparable(manifest["overrides"])) != \
            (ablation.preset, _comparable(overrides)):
        raise SweepError(f"{results_dir} was run with preset {manifest['preset']!r} and shared "
                         f"overrides {_comparable(manifest['overrides'])}; resuming needs the "
                         f"same (got {ablation.preset!r}, {_comparable(overrides)})")
    for name, own in ablation.variants.items():
        if name in manifest["variants"] and manifest["variants"][name] != dict(own):
            raise SweepError(f"{results_dir}: variant {name!r} was run with "
                             f"{manifest['variants'][name]}, the file now says {dict(own)}; "
                             f"rename the changed variant")


def finished_cells(results_dir: str, experiments: Sequence[str]) -> set[tuple[str, int]]:
    """(variant, seed) of every finished (completed or errored) trial of the experiments."""
    return {(t.config["variant"], t.config["run.seed"])
            for name in experiments for t in (experiment_trials(results_dir, name) or [])
            if t.status in FINAL_STATES}


def _trainable(plan: TrialPlan, variants: Mapping[str, Mapping[str, Any]]):
    return tune.with_resources(
        tune.with_parameters(train_driver_fn, plan=plan, variants=dict(variants)),
        driver_resources())


def build_ablation_tuner(ablation: Ablation, plan: TrialPlan,
                         variants: Mapping[str, Mapping[str, Any]], *, results_dir: str,
                         experiment: str, cells: Sequence[tuple[str, int]],
                         verbose: int = 0) -> tune.Tuner:
    """The Tuner of one experiment: exactly ``cells``, as ``BasicVariantGenerator`` points
    (no search, no early stopping), at most ``max_concurrent_trials`` at once."""
    points = [{"variant": variant, "run.seed": seed} for variant, seed in cells]
    return tune.Tuner(
        _trainable(plan, variants),
        # Points fill in these two keys; with num_samples = len(points) nothing is sampled.
        param_space={"variant": tune.choice(sorted({v for v, _ in cells})),
                     "run.seed": tune.choice(sorted({s for _, s in cells}))},
        tune_config=tune.TuneConfig(
            metric=ablation.metric, mode=ablation.mode, num_samples=len(points),
            # The generator limits concurrency itself (TuneConfig's limit needs a Searcher).
            search_alg=BasicVariantGenerator(points_to_evaluate=points,
                                             max_concurrent=ablation.max_concurrent_trials),
            scheduler=FIFOScheduler(), reuse_actors=False),
        run_config=tune.RunConfig(
            name=experiment, storage_path=os.path.join(results_dir, "ray"), verbose=verbose,
            callbacks=[ProgressPrinter(ablation.metric, len(points)),
                       ReportLog(os.path.join(results_dir, REPORTS))],
            failure_config=tune.FailureConfig(max_failures=0)),
    )


def restore_ablation_tuner(plan: TrialPlan, variants: Mapping[str, Mapping[str, Any]], *,
                           results_dir: str, experiment: str) -> tune.Tuner:
    """Tuner.restore of an interrupted experiment; unfinished cells continue from their last
    Train checkpoint, errored ones stay errored."""
    return tune.Tuner.restore(os.path.join(results_dir, "ray", experiment),
                              _trainable(plan, variants),
                              resume_unfinished=True, resume_errored=False,
                              restart_errored=False)


# ------------------------------------------------------------------------------------------
# Export: trials.parquet + history.parquet (with ``variant``) + items.parquet
# ------------------------------------------------------------------------------------------


class _CellTrial:
    """A Tune trial as ``sweeps.export.rows_for_trial`` sees it: its config holds dotted keys
    only (the variant's overrides are passed in with the experiment)."""

    def __init__(self, trial: Any):
        self._trial = trial
        self.config = {"run.seed": trial.config["run.seed"]}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)


def collect_ablation(results_dir: str) -> tuple[list[dict], list[dict], list[dict]]:
    """(trial rows, history rows, item rows) of every finished cell, variants in report order
    (baseline first, then file order) and seeds ascending."""
    manifest = read_manifest(results_dir)
    if manifest is None or manifest.get("kind") != KIND:
        raise FileNotFoundError(f"no ablation manifest in {results_dir}")
    reports = read_reports(results_dir)
    finals, history, items, seen = [], [], [], set()
    for experiment in manifest["experiments"]:
        for trial in experiment_trials(results_dir, experiment["name"]) or []:
            if trial.trial_id in seen:
                continue
            variant = trial.config["variant"]
            own = reports.get(trial.trial_id) or (
                [report_fields(trial.last_result)] if trial.last_result else [])
            cell = {**experiment, "overrides": {**experiment["overrides"],
                                                **manifest["variants"][variant]}}
            final, rows = rows_for_trial(_CellTrial(trial), own, study=manifest["study"],
                                         experiment=cell,
                                         provenance=manifest["provenance"].get(variant, {}))
            if final is None:
                continue
            seen.add(trial.trial_id)
            finals.append({**final, "variant": variant})
            history.extend({**row, "variant": variant} for row in rows)
            items.extend(_test_items(finals[-1]))
    order = {v: i for i, v in enumerate(manifest["variant_order"])}
    finals.sort(key=lambda r: (order.get(r["variant"], len(order)), r["seed"]))
    rank = {r["trial_id"]: i for i, r in enumerate(finals)}
    history.sort(key=lambda r: (rank[r["trial_id"]], r.get("step") or 0))
    items.sort(key=lambda r: (rank[r["trial_id"]], r["index"]))
    return finals, history, items


def _test_items(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The per-item test scores a completed trial left in its final checkpoint."""
    path = row.get("checkpoint_path")
    if row["status"] != "completed" or not path or \
            not os.path.isfile(os.path.join(path, TEST_ITEMS_FILE)):
        return []
    with open(os.path.join(path, TEST_ITEMS_FILE)) as f:
        records = json.load(f)
    return [{"study": row["study"], "trial_id": row["trial_id"], "variant": row["variant"],
             "seed": row["seed"], "task": r["task"], "index": r["index"],
             "score": float(r["score"])} for r in records]


def export_ablation(results_dir: str) -> tuple[str, str, str, int]:
    """Write ``trials.parquet``, ``history.parquet`` and ``items.parquet`` (atomically).

    Returns:
        (trials path, history path, items path, number of trials).
    """
    finals, history, items = collect_ablation(results_dir)
    keys = valid_keys()
    trials = validate(to_frame(finals), cfg_keys=keys) if finals else _empty(keys)
    steps = validate(to_frame(history, history=True), cfg_keys=keys, history=True) if history \
        else _empty(keys, history=True)
    scores = pd.DataFrame.from_records(items, columns=list(ITEM_COLUMNS)).astype(
        {"study": object, "trial_id": object, "variant": object, "seed": "int64",
         "task": object, "index": "int64", "score": "float64"})
    paths = [os.path.join(results_dir, name) for name in (TRIALS_FILE, HISTORY_FILE, ITEMS_FILE)]
    for frame, path in zip((trials, steps, scores), paths):
        write_parquet(frame, path)
    return paths[0], paths[1], paths[2], len(trials)
