"""Sweeps on a real local Ray: smoke + resume, a non-finite trial, ``ray job submit``.

The Ray tests share one local cluster (``ray_session``, session-scoped) and one data/teacher
cache; each sweep runs the real ``switchkd.train.train`` on the tiny preset.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request

import optuna
import pandas as pd
import pytest

from analysis.load import load_results
from analysis.schema import COST_COLUMNS, PROVENANCE_COLUMNS, validate
from switchkd.config import valid_keys
from sweeps.driver import TrialError, failure_message
from sweeps.export import error_text, trial_status, write_parquet
from tests.ray_fixtures import ray_session  # noqa: F401  (also loadable as a pytest plugin)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "search_spaces", "smoke.yaml")
VENV_BIN = os.path.dirname(sys.executable)


# ------------------------------------------------------------------------------------------
# Pure helpers (no Ray)
# ------------------------------------------------------------------------------------------


def test_trial_status_from_tune_status_and_last_step():
    assert trial_status("TERMINATED", 8.0, 8) == "completed"
    assert trial_status("TERMINATED", 4.0, 8) == "stopped_early"
    assert trial_status("ERROR", 4.0, 8) == "errored"
    assert trial_status("TERMINATED", None, 8) == "errored"


def test_error_text_is_the_workers_message():
    message = "NonFiniteLossError: non-finite loss at step 2: align_loss=nan"
    assert error_text(TrialError(message)) == message
    assert error_text("Traceback (most recent call last):\n  ...\nValueError: bad\n") == \
        "ValueError: bad"

    class Failure(Exception):
        def __init__(self):
            super().__init__("Training failed due to worker errors")
            self.worker_failures = {1: KeyError("x"), 0: RuntimeError("step 3: loss is nan")}

    assert failure_message(Failure()) == "RuntimeError: step 3: loss is nan"


def test_a_resumed_trials_wall_time_adds_its_segments():
    from sweeps.export import _total_wall

    assert _total_wall([{"wall_s": 1.0}, {"wall_s": 2.0}, {"wall_s": 0.5}, {"wall_s": 1.5}]) == 3.5
    assert _total_wall([]) == 0.0


def test_parquet_writes_are_atomic(tmp_path):
    path = str(tmp_path / "trials.parquet")
    write_parquet(pd.DataFrame({"a": [1, 2]}), path)
    write_parquet(pd.DataFrame({"a": [3]}), path)
    assert pd.read_parquet(path)["a"].tolist() == [3]
    assert os.listdir(tmp_path) == ["trials.parquet"]


# ------------------------------------------------------------------------------------------
# Real sweeps on the shared local Ray
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One data suite and tiny teacher for every sweep of this module."""
    return str(tmp_path_factory.mktemp("sweep-cache"))


def _trials(results):
    return pd.read_parquet(os.path.join(results, "trials.parquet"))


def _history(results):
    return pd.read_parquet(os.path.join(results, "history.parquet"))


@pytest.mark.ray
def test_smoke_sweep_resumed_to_two_trials(ray_session, tmp_path, cache_dir):
    """smoke.yaml run for 1 trial, then resumed to 2: exactly 2 distinct trials, each once,
    in Parquet with the schema's columns, readable by analysis.load."""
    from sweeps.cli import sweep_main

    results = str(tmp_path / "smoke")
    args = [SMOKE, "--results", results, "--cache-dir", cache_dir]
    start = time.perf_counter()
    assert sweep_main([*args, "--num-samples", "1"]) == 0
    first = _trials(results)
    assert len(first) == 1
    assert sweep_main(args) == 2                       # the folder holds a study: needs --resume
    assert sweep_main([*args, "--num-samples", "2", "--resume"]) == 0
    assert sweep_main([*args, "--num-samples", "2", "--resume"]) == 0   # nothing left to run
    elapsed = time.perf_counter() - start

    trials = _trials(results)
    assert sorted(trials["trial_id"]) == sorted(set(trials["trial_id"])) and len(trials) == 2
    assert first["trial_id"][0] in set(trials["trial_id"])
    assert set(trials["status"]) <= {"completed", "stopped_early"}
    assert trials["error"].isna().all()
    # The second trial is a new TPE draw, not a replay of the first one's seed.
    assert trials["cfg.loss.temperature"].nunique() == 2
    validate(trials, cfg_keys=valid_keys())
    for column in (*PROVENANCE_COLUMNS, *COST_COLUMNS, "train/loss", "train/ce_loss",
                   "val/avg10", "cfg.loss.temperature", "cfg.run.cache_dir"):
        assert column in trials.columns, column
    assert (trials["cfg.run.cache_dir"] == cache_dir).all()
    assert trials["data_fingerprint"].notna().all() and trials["teacher_fingerprint"].notna().all()

    history = _history(results)
    validate(history, cfg_keys=valid_keys(), history=True)
    assert set(history["trial_id"]) == set(trials["trial_id"])
    assert not history.duplicated(["trial_id", "step"]).any()
    assert set(history["step"]) <= {4.0, 8.0}

    loaded = load_results(results)
    assert sorted(loaded["trial_id"]) == sorted(trials["trial_id"])

    with open(os.path.join(results, "sweep.json")) as f:
        experiments = json.load(f)["experiments"]
    assert [e["num_samples"] for e in experiments] == [1, 1]  # the second resume ran nothing
    for experiment in experiments:
        assert experiment["max_concurrent_trials"] >= 1
        assert experiment["started"] < experiment["ended"] and experiment["wall_s"] > 0

    study = optuna.load_study(study_name="smoke", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(os.path.join(results, "optuna.journal"))))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    print(f"\nsmoke 1+1 trials with resume: {elapsed:.1f} s wall, trials' own wall_s "
          f"{trials['wall_s'].sum():.1f} s")


@pytest.mark.ray
def test_non_finite_trial_is_recorded_as_errored(ray_session, tmp_path, cache_dir):
    """optim.lr=1e30 without clipping NaNs in the real train; the other trial completes."""
    from sweeps.cli import sweep_main

    space = tmp_path / "nan.yaml"
    space.write_text(textwrap.dedent("""
        study: nan
        preset: tiny
        metric: val/avg10
        mode: max
        num_samples: 2
        max_concurrent_trials: 2
        scheduler: {kind: fifo}
        overrides: {train.max_steps: 4, train.eval_every: 2, train.checkpoint_every: 2,
                    train.log_every: 1, data.val_items_per_task: 1, optim.grad_clip: 0.0,
                    optim.warmup_steps: 0}
        space:
          optim.lr: {type: categorical, choices: [0.003, 1.0e+30]}
        points_to_evaluate: [{optim.lr: 1.0e+30}, {optim.lr: 0.003}]
    """))
    results = str(tmp_path / "nan")
    assert sweep_main([str(space), "--results", results, "--cache-dir", cache_dir]) == 0
    trials = _trials(results).set_index("cfg.optim.lr")
    assert sorted(trials.index) == [0.003, 1e30]
    bad, good = trials.loc[1e30], trials.loc[0.003]
    assert bad["status"] == "errored", bad["error"]
    assert bad["error"].startswith("NonFiniteLossError") and "step" in bad["error"], bad["error"]
    assert good["status"] == "completed" and pd.isna(good["error"])
    assert good["steps"] == 4.0
    validate(_trials(results), cfg_keys=valid_keys())


@pytest.mark.ray
def test_trials_stopped_by_the_scheduler_free_their_cpus(ray_session, tmp_path, cache_dir):
    """ASHA stops every trial at max_t=2 of 4 steps; 4 trials on 2 CPUs, 2 at a time.

    Each stopped trial's Train controller dies with its driver; Ray Train frees its workers'
    CPUs only if it can reach the state API. Before the fix, trials 3 and 4 waited forever
    for a CPU (WorkerGroupStartupTimeoutError in a loop)."""
    from sweeps.cli import sweep_main

    space = tmp_path / "stops.yaml"
    space.write_text(textwrap.dedent("""
        study: stops
        preset: tiny
        metric: val/avg10
        mode: max
        num_samples: 4
        max_concurrent_trials: 2
        scheduler: {kind: asha, grace_period: 2, max_t: 2, reduction_factor: 2}
        overrides: {train.max_steps: 4, train.eval_every: 2, train.checkpoint_every: 2,
                    data.val_items_per_task: 1}
        space:
          loss.temperature: {type: float, low: 1.0, high: 4.0}
    """))
    results = str(tmp_path / "stops")
    assert sweep_main([str(space), "--results", results, "--cache-dir", cache_dir]) == 0
    trials = _trials(results)
    assert len(trials) == 4 and (trials["status"] == "stopped_early").all(), trials["status"]
    assert (trials["steps"] == 2.0).all()
    deadline = time.time() + 60      # the placement groups are removed asynchronously
    while ray_session.available_resources().get("CPU", 0) < 2 and time.time() < deadline:
        time.sleep(1)
    assert ray_session.available_resources().get("CPU", 0) == 2


@pytest.mark.ray
def test_demo_smoke_reports_and_exports_the_best_student(ray_session, tmp_path, cache_dir):
    """`switchkd demo --smoke`: the demo's sweep on tiny, then its report and exported student;
    a second call only reports the finished study."""
    from transformers import LlavaForConditionalGeneration

    from sweeps.cli import demo_main

    results = tmp_path / "demo"
    args = ["--smoke", "--results", str(results), "--cache-dir", cache_dir]
    assert demo_main(args) == 0
    assert len(_trials(str(results))) == 2
    assert "| " in (results / "report" / "report.md").read_text()
    assert any(p.suffix == ".png" and p.stat().st_size > 0 for p in (results / "report").iterdir())
    student = LlavaForConditionalGeneration.from_pretrained(results / "best_student")
    assert student.config.text_config.vocab_size > 0
    assert demo_main(args) == 0                        # nothing left to run
    assert len(_trials(str(results))) == 2


# ------------------------------------------------------------------------------------------
# ray start + ray job submit (a second, separate cluster in subprocesses)
# ------------------------------------------------------------------------------------------


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _pids_mentioning(text):
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        pids.append(int(pid))
            except OSError:
                continue
    return pids


@pytest.mark.ray
@pytest.mark.slow
def test_ray_job_submit_runs_the_smoke_sweep(tmp_path):
    """`ray start --head` + `ray job submit ... python -m sweeps sweep smoke.yaml` on a cluster
    of its own (own ports and temp dir), stopped by its own process ids only: `ray stop` would
    kill every Ray on the machine, including the session cluster of the other tests."""
    ray_bin = os.path.join(VENV_BIN, "ray")
    gcs, dashboard, agent, agent_grpc, metrics, env_agent, client, node, objects = _free_ports(9)
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths are long
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "")}
    for key in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):   # both name the session cluster
        env.pop(key, None)
    log = open(tmp_path / "ray_start.log", "w")
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", f"--port={gcs}", "--num-cpus=2",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
         f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
         f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={env_agent}",
         f"--ray-client-server-port={client}", f"--node-manager-port={node}",
         f"--object-manager-port={objects}", f"--temp-dir={temp_dir}", "--disable-usage-stats"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    results = str(tmp_path / "results")
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                break
            except OSError:
                assert head.poll() is None, (tmp_path / "ray_start.log").read_text()
                assert time.time() < deadline, "the dashboard did not come up"
                time.sleep(1)
        start = time.perf_counter()
        deadline = time.time() + 120
        # On a loaded machine the dashboard answers before its job agent is ready, or drops the
        # working-dir upload; neither creates a job, so submitting again is safe.
        transient = ("No available agent", "RemoteDisconnected", "Connection aborted")
        while True:
            job = subprocess.run(
                [ray_bin, "job", "submit", "--address", address, "--working-dir", ROOT, "--",
                 "python", "-m", "sweeps", "sweep", "search_spaces/smoke.yaml", "--results",
                 results, "--cache-dir", str(tmp_path / "cache")],
                env=env, capture_output=True, text=True, timeout=540)
            output = job.stdout + job.stderr
            if job.returncode == 0 or not any(t in output for t in transient) \
                    or time.time() > deadline:
                break
            time.sleep(2)
        elapsed = time.perf_counter() - start
        assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-2000:]
        assert "succeeded" in job.stdout
        trials = _trials(results)
        assert len(trials) == 2 and set(trials["status"]) <= {"completed", "stopped_early"}
        validate(trials, cfg_keys=valid_keys())
        print(f"\nray job submit smoke sweep: {elapsed:.1f} s wall, trials' own wall_s "
              f"{trials['wall_s'].sum():.1f} s")
    finally:
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGTERM)
            try:
                head.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
                head.wait()
        # Ray processes that left the process group still name their temp dir on the command line.
        deadline = time.time() + 20
        while _pids_mentioning(temp_dir) and time.time() < deadline:
            time.sleep(1)
        for pid in _pids_mentioning(temp_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
