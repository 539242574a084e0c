"""Benchmark: what Ray costs a sweep: sweep wall time against the trials' own training time,
per-trial start-up, and the same trials run one after another without Ray.

    python -m benchmarks.ray_overhead --quick        # 2 tiny trials x 4 steps, ~1-2 min
    python -m benchmarks.ray_overhead                # 4 default trials x 50 steps, 2 at a time,
                                                     # then the same 4 without Ray; ~30 min
    python -m benchmarks.ray_overhead --trials 4 --steps 20 --val-items 10
    python -m benchmarks.ray_overhead --results results/demo     # analyse a finished sweep only
    python -m benchmarks.ray_overhead --results results/demo --json /tmp/demo_overhead.json

A run writes a generated search space (``scheduler: fifo``, so every trial runs all its steps;
one sampled ``loss.temperature``; one evaluation and one checkpoint at the last step) and runs
it with ``sweeps.tuner.run_sweep`` on the embedded Ray (``sweeps.cli.connect_ray``: a new
local cluster, or the one already initialised in this process, e.g. the tests' session
cluster). Then, unless ``--no-sequential``, the same trial configs run one after another with
``switchkd.train.train`` in one fresh Python process (no Ray).

What the table shows, per trial (from Tune's trial state and ``trials.parquet``):

* ``own wall``: the trial's ``wall_s``, measured inside ``train()`` (data, models, steps,
  evaluation, checkpoint); ``steps s``: its optimizer steps alone (``samples / samples_per_s``);
* ``span``: from Tune marking the trial RUNNING to its last report;
* ``start-up = span - own wall``: Ray's share of the trial's life (trial actor, Train
  controller, worker group, the worker importing torch and switchkd, ``prepare``);
* ``no-Ray wall``: the same config's ``train()`` in the sequential process.

And per sweep: ``fit wall`` (the experiment's start, just before ``Tuner.fit``, to the last
trial's end; summed over a resumed study's experiments), ``sweep wall`` (the whole
``run_sweep`` call, with ``prepare`` and the Parquet export; run mode only), the ``ideal``
wall (the trials' own walls list-scheduled on the sweep's ``max_concurrent_trials`` slots in
their start order: the sweep with no Ray cost at all), ``Ray overhead = fit wall - ideal`` and
its share of the fit wall (the goal: under 15% for the demo sweep), the slot utilisation
``sum(own wall) / (slots x fit wall)``, and the sequential process's total (interpreter start
and imports included). The own walls are measured while trials share the CPUs, so the ideal
wall keeps any slowdown from running trials side by side; only Ray's own time counts as
overhead. A trial resumed from a checkpoint spans its interruption too (its start-up is then
an upper bound).
"""

from __future__ import annotations

import argparse
import datetime
import heapq
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Optional

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "ray_overhead.json"
DEFAULT_CACHE_DIR = ROOT / ".switchkd_cache"
STUDY = "ray_overhead"


# --------------------------------------------------------------------------------------------
# Running a sweep
# --------------------------------------------------------------------------------------------


def space_yaml(preset: str, trials: int, steps: int, concurrent: int, val_items: int) -> str:
    """A search space like ``search_spaces/smoke.yaml``: FIFO (no early stopping), one
    evaluation and one checkpoint at the last step, ``val_items`` validation items per task."""
    return textwrap.dedent(f"""\
        study: {STUDY}
        question: how much of a sweep's wall time is Ray's own?
        preset: {preset}
        metric: val/avg10
        mode: max
        num_samples: {trials}
        max_concurrent_trials: {concurrent}
        seed: 0
        workers_per_trial: 1
        resources: {{cpus_per_worker: 1, gpus_per_worker: 0}}
        max_failures: 0
        keep_checkpoints: 1
        scheduler: {{kind: fifo}}
        overrides:
          train.max_steps: {steps}
          train.eval_every: {steps}
          train.checkpoint_every: {steps}
          train.log_every: {steps}
          data.val_items_per_task: {val_items}
        space:
          loss.temperature: {{type: float, low: 1.0, high: 5.0}}
        """)


def run_sweep_timed(space_path: str, results_dir: str, cache_dir: str,
                    num_cpus: Optional[int]) -> float:
    """Run the space with ``sweeps.tuner.run_sweep`` on the embedded (or the already connected)
    Ray; return the ``run_sweep`` call's wall seconds. Shuts down only a Ray it started."""
    from sweeps.cli import configure_environment, connect_ray

    worker_env = configure_environment()
    import optuna

    from switchkd.train import git_sha
    from sweeps.space import load_space
    from sweeps.tuner import run_sweep

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(space_path)
    started = connect_ray(num_cpus, worker_env, log_to_driver=False)
    try:
        outcome = run_sweep(space, results_dir, cache_dir=cache_dir, git_sha=git_sha())
    finally:
        if started:
            import ray

            ray.shutdown()
    if outcome.unfinished:
        raise RuntimeError(f"{outcome.unfinished} trial(s) of {results_dir} did not finish")
    return outcome.wall_s


# --------------------------------------------------------------------------------------------
# Analysing a results folder
# --------------------------------------------------------------------------------------------


def ideal_wall(own_walls: list[float], slots: int) -> float:
    """Makespan of the given durations list-scheduled, in order, on ``slots`` parallel slots
    (each job starts on the first slot that frees up, as Tune starts queued trials)."""
    free_at = [0.0] * max(1, slots)  # a min-heap of the times the slots free up
    for duration in own_walls:
        heapq.heapreplace(free_at, free_at[0] + duration)
    return max(free_at)


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def _concurrency(manifest: dict[str, Any], intervals: list[tuple[float, float]]) -> tuple[int, str]:
    """The sweep's ``max_concurrent_trials`` from its space file, else the most trials seen
    running at once; and where it came from."""
    path = manifest.get("space_file")
    if path and os.path.isfile(path):
        from sweeps.space import SpaceError, load_space

        try:
            return load_space(path).max_concurrent_trials, "space file"
        except SpaceError:
            pass
    return max(1, _max_overlap(intervals)), "observed"


def analyse(results_dir: str) -> dict[str, Any]:
    """Per-trial and per-sweep timings of a finished sweep folder (see the module docstring).

    Raises:
        FileNotFoundError: the folder holds no sweep (no ``sweep.json`` / ``trials.parquet``).
    """
    from sweeps.export import TRIALS_FILE, experiment_trials, read_manifest

    manifest = read_manifest(results_dir)
    parquet = os.path.join(results_dir, TRIALS_FILE)
    if manifest is None or not os.path.isfile(parquet):
        raise FileNotFoundError(f"{results_dir}: no finished sweep (sweep.json and "
                                f"{TRIALS_FILE} expected)")
    frame = pd.read_parquet(parquet).set_index("trial_id")
    trials, fit_wall = [], 0.0
    for experiment in manifest["experiments"]:
        tune_trials = experiment_trials(results_dir, experiment["name"]) or []
        begin = datetime.datetime.fromisoformat(experiment["started"]).timestamp()
        end = begin
        state_files = list(Path(results_dir, "ray", experiment["name"]).glob(
            "experiment_state-*.json"))
        if state_files:  # rewritten when fit() ends
            end = max(end, max(p.stat().st_mtime for p in state_files))
        for trial in sorted(tune_trials, key=lambda t: t.run_metadata.start_time or 0.0):
            meta = trial.run_metadata
            if trial.trial_id not in frame.index or meta.start_time is None:
                continue  # unfinished, or never started
            row = frame.loc[trial.trial_id]
            last = meta.last_result_time or meta.start_time
            end = max(end, last)
            own = float(row["wall_s"]) if pd.notna(row["wall_s"]) else 0.0
            rate = row.get("samples_per_s")
            steps_s = (float(row["samples"]) / float(rate)
                       if pd.notna(rate) and rate and pd.notna(row["samples"]) else float("nan"))
            trials.append(dict(
                trial_id=trial.trial_id, experiment=experiment["name"], status=row["status"],
                steps=int(row["steps"]) if pd.notna(row["steps"]) else 0,
                config={k: v for k, v in trial.config.items()},
                start=meta.start_time, end=last, span_s=last - meta.start_time,
                own_wall_s=own, steps_s=steps_s, startup_s=last - meta.start_time - own))
        fit_wall += end - begin
    slots, slots_from = _concurrency(manifest, [(t["start"], t["end"]) for t in trials])
    own_sum = sum(t["own_wall_s"] for t in trials)
    ideal = ideal_wall([t["own_wall_s"] for t in trials], slots)
    overhead = fit_wall - ideal
    return dict(
        results_dir=os.path.abspath(results_dir), study=manifest["study"],
        preset=manifest["preset"], overrides=manifest["overrides"],
        experiments=[e["name"] for e in manifest["experiments"]], trials=trials,
        summary=dict(
            trials=len(trials), slots=slots, slots_from=slots_from, fit_wall_s=fit_wall,
            own_wall_sum_s=own_sum, steps_sum_s=sum(t["steps_s"] for t in trials),
            ideal_wall_s=ideal, ray_overhead_s=overhead,
            ray_overhead_share=overhead / fit_wall if fit_wall > 0 else float("nan"),
            slot_utilisation=own_sum / (slots * fit_wall) if fit_wall > 0 else float("nan"),
            startup_mean_s=(sum(t["startup_s"] for t in trials) / len(trials)
                            if trials else float("nan"))),
    )


# --------------------------------------------------------------------------------------------
# The same trials without Ray
# --------------------------------------------------------------------------------------------


def sequential_child(plan_path: str, out_path: str) -> None:
    """Runs in a fresh process: ``train()`` each planned config in turn; writes the times.

    ``plan``: ``{"preset", "overrides", "trials": [{"trial_id", "config"}]}``.
    """
    start = time.perf_counter()
    from switchkd.config import with_overrides
    from switchkd.presets import get_preset
    from switchkd.train import train

    imported = time.perf_counter()
    with open(plan_path) as f:
        plan = json.load(f)
    walls = {}
    for trial in plan["trials"]:
        cfg = with_overrides(get_preset(plan["preset"]),
                             {**plan["overrides"], **trial["config"],
                              "run.name": f"seq-{trial['trial_id']}"})
        begin = time.perf_counter()
        train(cfg)
        walls[trial["trial_id"]] = time.perf_counter() - begin
    with open(out_path, "w") as f:
        json.dump({"import_s": imported - start, "walls": walls}, f)


def run_sequential(analysis: dict[str, Any], scratch: str) -> dict[str, Any]:
    """The analysed sweep's trial configs run one after another in a new Python process."""
    plan = {"preset": analysis["preset"], "overrides": analysis["overrides"],
            "trials": [{"trial_id": t["trial_id"], "config": t["config"]}
                       for t in analysis["trials"]]}
    plan_path, out_path = os.path.join(scratch, "plan.json"), os.path.join(scratch, "seq.json")
    with open(plan_path, "w") as f:
        json.dump(plan, f)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])}
    env.setdefault("OMP_NUM_THREADS", "1")  # as in the Ray workers (1 CPU each)
    code = (f"from benchmarks.ray_overhead import sequential_child; "
            f"sequential_child({plan_path!r}, {out_path!r})")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(ROOT), env=env)
    total = time.perf_counter() - start
    with open(out_path) as f:
        child = json.load(f)
    return dict(total_s=total, import_s=child["import_s"], walls=child["walls"],
                walls_sum_s=sum(child["walls"].values()))


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def format_tables(result: dict[str, Any]) -> str:
    a, s = result["analysis"], result["analysis"]["summary"]
    seq = result.get("sequential")
    lines = ["| trial | status | steps | own wall s | steps s | span s | start-up s | "
             "no-Ray wall s |", "|---|---|---|---|---|---|---|---|"]
    for t in a["trials"]:
        no_ray = f"{seq['walls'][t['trial_id']]:.1f}" if seq else "-"
        lines.append(f"| {t['trial_id']} | {t['status']} | {t['steps']} | {t['own_wall_s']:.1f} "
                     f"| {t['steps_s']:.1f} | {t['span_s']:.1f} | {t['startup_s']:.1f} | "
                     f"{no_ray} |")
    sweep_wall = result.get("sweep_wall_s")
    sweep_cell = "-" if sweep_wall is None else f"{sweep_wall:.1f}"
    seq_cell = f"{seq['total_s']:.1f}" if seq else "-"
    lines += ["", "| sweep wall s | fit wall s | slots | sum own wall s | ideal wall s | "
              "Ray overhead s | overhead % of fit wall | slot utilisation | mean start-up s | "
              "no-Ray total s |", "|---|---|---|---|---|---|---|---|---|---|",
              f"| {sweep_cell} | "
              f"{s['fit_wall_s']:.1f} | {s['slots']} | {s['own_wall_sum_s']:.1f} | "
              f"{s['ideal_wall_s']:.1f} | {s['ray_overhead_s']:.1f} | "
              f"{100 * s['ray_overhead_share']:.1f} | {s['slot_utilisation']:.2f} | "
              f"{s['startup_mean_s']:.1f} | {seq_cell} |"]
    if seq:
        lines.append(f"\nno-Ray process: {seq['import_s']:.1f} s of imports, "
                     f"{seq['walls_sum_s']:.1f} s in train(); "
                     f"Ray sweep / no-Ray process = "
                     f"{(sweep_wall or s['fit_wall_s']) / seq['total_s']:.2f}")
    lines.append(f"goal: Ray overhead {100 * s['ray_overhead_share']:.1f}% of the fit wall "
                 f"(target < 15%: {'met' if s['ray_overhead_share'] < 0.15 else 'not met'}) "
                 f"for {a['study']} ({a['preset']}) in {a['results_dir']}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 tiny trials x 4 steps (temporary cache unless --cache-dir)")
    parser.add_argument("--results", type=Path,
                        help="analyse this finished sweep folder; run nothing")
    parser.add_argument("--json", type=Path, default=None,
                        help=f"where to write results (default {DEFAULT_JSON}; with --results "
                             "ray_overhead_<study>.json next to it)")
    parser.add_argument("--trials", type=int, help="trials (default 4, quick 2)")
    parser.add_argument("--steps", type=int, help="steps per trial (default 50, quick 4)")
    parser.add_argument("--concurrent", type=int, default=2, help="trials at once (default 2)")
    parser.add_argument("--val-items", type=int,
                        help="validation items per task (default 20, quick 2)")
    parser.add_argument("--cache-dir", type=Path,
                        help=f"run.cache_dir (default {DEFAULT_CACHE_DIR}; quick: temporary)")
    parser.add_argument("--out", type=Path, help="results folder of the sweep (default: temporary,"
                        " deleted afterwards)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the embedded Ray (default: all)")
    parser.add_argument("--no-sequential", action="store_true",
                        help="skip the same trials without Ray")
    args = parser.parse_args(argv)

    result: dict[str, Any] = dict(meta=dict(python=platform.python_version(),
                                            machine=platform.machine(), cpus=os.cpu_count(),
                                            quick=args.quick))
    if args.results is not None:
        result["analysis"] = analyse(str(args.results))
        json_path = args.json or DEFAULT_JSON.with_name(
            f"ray_overhead_{result['analysis']['study']}.json")
    else:
        json_path = args.json or DEFAULT_JSON
        trials = args.trials or (2 if args.quick else 4)
        steps = args.steps or (4 if args.quick else 50)
        val_items = args.val_items or (2 if args.quick else 20)
        preset = "tiny" if args.quick else "default"
        scratch = tempfile.mkdtemp(prefix="switchkd-ray-bench-")
        try:
            cache_dir = args.cache_dir or (Path(scratch) / "cache" if args.quick
                                           else DEFAULT_CACHE_DIR)
            results_dir = str((args.out or Path(scratch) / "results").resolve())
            # Inside the results folder, so a later --results analysis finds its settings.
            os.makedirs(results_dir, exist_ok=True)
            space_path = os.path.join(results_dir, f"{STUDY}.yaml")
            Path(space_path).write_text(space_yaml(preset, trials, steps, args.concurrent,
                                                   val_items))
            print(f"[ray overhead] {trials} {preset} trials x {steps} steps, {args.concurrent} "
                  f"at a time -> {results_dir}", flush=True)
            result["sweep_wall_s"] = run_sweep_timed(space_path, results_dir,
                                                     str(Path(cache_dir).resolve()), args.num_cpus)
            result["analysis"] = analyse(results_dir)
            if not args.no_sequential:
                print(f"[ray overhead] the same {trials} trials without Ray", flush=True)
                result["sequential"] = run_sequential(result["analysis"], scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        result["meta"].update(trials=trials, steps=steps, concurrent=args.concurrent,
                              val_items_per_task=val_items, preset=preset)
    print(format_tables(result), flush=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {json_path}")
    return result


if __name__ == "__main__":
    main()
