"""Command line for sweeps: ``python -m sweeps sweep|demo ...`` (also ``switchkd sweep|demo``).

    python -m sweeps sweep search_spaces/smoke.yaml --results /abs/results/smoke
    python -m sweeps sweep search_spaces/dbild.yaml --results results/dbild --resume --num-samples 32
    python -m sweeps sweep search_spaces/dbild.yaml --smoke --results /tmp/dbild-smoke
    python -m sweeps demo

Runs on an embedded local Ray (``ray.init(num_cpus=<cores>)``) by default and joins an
existing cluster when ``RAY_ADDRESS`` is set (as inside ``ray job submit``). This module and
``sweeps/__main__.py`` are the only places in ``sweeps`` that read or set the environment.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import time
from typing import Any, Iterator, Optional, Sequence

# Read by Ray/torch when their processes start: set before anything imports ray or torch.
ENV_DEFAULTS = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",   # ray.train.report blocks ~2 s per call otherwise
    "RAY_USAGE_STATS_ENABLED": "0",
    "OMP_NUM_THREADS": "1",                       # torch threads oversubscribe 2-core machines
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
}
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_SPACE = os.path.join(REPO_ROOT, "search_spaces", "default.yaml")


def configure_environment() -> dict[str, str]:
    """Defaults for Ray and torch here and in the Ray processes started from here.

    Returns the variables Ray's workers need (passed as ``runtime_env`` when joining a cluster,
    whose processes did not inherit this environment).
    """
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if not os.environ.get("RAY_ADDRESS"):
        # Our own embedded cluster: no token auth (its CLI clients would need the token file).
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # The embedded cluster's workers inherit this and can import switchkd and sweeps.
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if REPO_ROOT not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([REPO_ROOT, *paths])
    return {key: os.environ[key] for key in ENV_DEFAULTS}


def connect_ray(num_cpus: Optional[int], worker_env: dict[str, str], *,
                log_to_driver: bool = True, object_store_memory: Optional[int] = None) -> bool:
    """Start an embedded Ray, join ``RAY_ADDRESS``, or reuse a connection (tests).

    Both ways, this cluster's state API address goes to every Ray process as
    ``RAY_API_SERVER_ADDRESS``: Ray Train's ``PlacementGroupCleaner`` asks the state API whether
    a trial's Train controller is still alive, and frees the trial's CPUs when ASHA has stopped
    it. Without a reachable state API (no dashboard, or several Ray instances on the machine and
    no address) it never sees the controller die, the CPUs stay reserved, and later trials wait
    forever for workers (``WorkerGroupStartupTimeoutError`` in a loop).

    Returns True when this call connected (and so must ``ray.shutdown()``).
    """
    import ray

    from sweeps.tuner import TRIAL_RESOURCE, TRIAL_RESOURCE_SLOTS

    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        # An existing cluster: num_cpus must not be given; our env goes to its workers.
        ray.init(runtime_env={"env_vars": {**worker_env, **state_api_env()}},
                 log_to_driver=log_to_driver)
    else:
        # The embedded cluster's processes inherit this environment, so set it first. The
        # dashboard (which serves the state API) listens on loopback only.
        port = free_loopback_port()
        os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
        # address="local": always a new cluster, even when `ray start` runs on this machine.
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(),
                 resources={TRIAL_RESOURCE: TRIAL_RESOURCE_SLOTS}, include_dashboard=True,
                 dashboard_host="127.0.0.1", dashboard_port=port,
                 object_store_memory=object_store_memory, log_to_driver=log_to_driver)
    return True


def state_api_env() -> dict[str, str]:
    """``RAY_API_SERVER_ADDRESS`` of the cluster at ``RAY_ADDRESS`` (empty if it has none).

    Looked up from that cluster's GCS, never taken from an inherited ``RAY_API_SERVER_ADDRESS``
    (which may name another cluster on the same machine).
    """
    from ray.dashboard.utils import ray_address_to_api_server_url

    address = os.environ["RAY_ADDRESS"]
    try:
        url = address if address.startswith("http") else ray_address_to_api_server_url(address)
    except Exception as err:  # noqa: BLE001 (a cluster without a dashboard still runs trials)
        print(f"[sweep] warning: no Ray state API found for {address} ({err}); trials stopped "
              f"early may keep their CPUs reserved", file=sys.stderr, flush=True)
        return {}
    return {"RAY_API_SERVER_ADDRESS": url}


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sweeps", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sweep", help="run (or resume) a search space on Ray Tune")
    _sweep_arguments(p)
    p = sub.add_parser("demo", help="prepare the default preset and run search_spaces/default.yaml")
    _demo_arguments(p)
    return parser


def _sweep_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("space", help="a YAML search space, e.g. search_spaces/smoke.yaml")
    p.add_argument("overrides", nargs="*", help="fixed dotted key=value overrides for all trials")
    p.add_argument("--preset", help="base preset instead of the file's")
    p.add_argument("--num-samples", type=int, help="total number of trials in the study")
    p.add_argument("--results", help="results folder (default: results/<study>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the study in --results up to --num-samples trials")
    p.add_argument("--smoke", action="store_true",
                   help="the file's smoke variant: tiny preset, 2 trials, a few steps")
    p.add_argument("--workers", type=int, help="Ray Train workers per trial")
    p.add_argument("--max-concurrent", type=int, help="trials running at once")
    p.add_argument("--cache-dir", help="run.cache_dir for data and teacher caches "
                   "(default: the preset's, made absolute)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the embedded Ray (default: all cores)")


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default=os.path.join("results", "demo"))
    p.add_argument("--num-samples", type=int)
    p.add_argument("--smoke", action="store_true", help="the demo on the tiny preset")
    p.add_argument("--cache-dir")
    p.add_argument("--num-cpus", type=int)


def run(args: argparse.Namespace, *, space_path: str) -> int:
    """Resolve the space, connect Ray, run the sweep, print where the results are."""
    worker_env = configure_environment()
    import optuna

    from switchkd.config import ConfigError, parse_override
    from switchkd.train import git_sha
    from sweeps.space import SpaceError, load_space
    from sweeps.tuner import SweepError, run_sweep

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        space = load_space(space_path)
        if args.smoke:
            space = space.for_smoke()
        space = space.with_changes(
            preset=getattr(args, "preset", None), num_samples=args.num_samples,
            workers_per_trial=getattr(args, "workers", None),
            max_concurrent_trials=getattr(args, "max_concurrent", None),
            overrides=dict(parse_override(o) for o in getattr(args, "overrides", []) or []))
    except (SpaceError, ConfigError) as err:
        print(f"sweeps: {err}", file=sys.stderr)
        return 2
    results = os.path.abspath(args.results or os.path.join("results", space.study))
    cache_dir = os.path.abspath(args.cache_dir or space.base_config().run.cache_dir)
    print(f"[sweep] study {space.study!r} ({space.num_samples} trials, preset {space.preset!r}, "
          f"{space.workers_per_trial} worker(s) per trial) -> {results}", flush=True)
    try:
        with ray_connection(args.num_cpus, worker_env):
            outcome = run_sweep(space, results, cache_dir=cache_dir, resume=args.resume,
                                git_sha=git_sha())
    except SweepError as err:
        print(f"sweeps: {err}", file=sys.stderr)
        return 2
    summarize(outcome, space.metric, space.mode)
    return finished_or_interrupted("sweep", outcome.unfinished)


@contextlib.contextmanager
def ray_connection(num_cpus: Optional[int], worker_env: dict[str, str]) -> Iterator[None]:
    """``connect_ray`` for the block; shuts Ray down after it if this call connected."""
    started = connect_ray(num_cpus, worker_env)
    try:
        yield
    finally:
        if started:
            import ray

            ray.shutdown()


def finished_or_interrupted(tag: str, unfinished: int) -> int:
    """0 when every trial finished; else say how to continue and return 1."""
    if not unfinished:
        return 0
    print(f"[{tag}] interrupted: {unfinished} trial(s) unfinished; continue with the same "
          f"command plus --resume", flush=True)
    return 1


def summarize(outcome: Any, metric: str, mode: str) -> Optional[dict[str, Any]]:
    """Print the trial counts, the best trial's settings and the Ray overhead; return the best
    row (None when no trial reported the metric)."""
    import pandas as pd

    trials = pd.read_parquet(outcome.trials_path)
    counts = trials["status"].value_counts().to_dict() if len(trials) else {}
    own = float(trials["wall_s"].fillna(0).sum()) if len(trials) else 0.0
    print(f"[sweep] {len(trials)} trials {counts}; sweep wall {outcome.wall_s:.1f} s, trials' own "
          f"wall_s sum {own:.1f} s", flush=True)
    print(f"[sweep] results: {outcome.trials_path}\n[sweep]          {outcome.history_path}",
          flush=True)
    scored = trials[trials["status"] != "errored"]
    if metric not in scored.columns or scored[metric].isna().all():
        print("[sweep] no trial reported the metric", flush=True)
        return None
    best = scored.loc[scored[metric].idxmax() if mode == "max" else scored[metric].idxmin()]
    shown = {k[4:]: best[k] for k in trials.columns if k.startswith("cfg.loss.")
             or k in ("cfg.optim.lr", "cfg.run.seed", "cfg.train.max_steps", "cfg.preset")}
    print(f"[sweep] best trial {best['trial_id']} ({best['status']}): {metric}={best[metric]:.4g}",
          flush=True)
    print(json.dumps({k: (v.item() if hasattr(v, "item") else v) for k, v in shown.items()},
                     indent=2, default=str), flush=True)
    return best.to_dict()


def sweep_main(argv: Optional[Sequence[str]] = None) -> int:
    """``switchkd sweep SPACE.yaml [options]`` / ``python -m sweeps sweep ...``."""
    parser = argparse.ArgumentParser(prog="switchkd sweep", description="run a search space")
    _sweep_arguments(parser)
    # Intermixed: `SPACE --results DIR key=value` as well as `SPACE key=value --results DIR`.
    args = parser.parse_intermixed_args(list(sys.argv[1:] if argv is None else argv))
    return run(args, space_path=args.space)


def demo_main(argv: Optional[Sequence[str]] = None) -> int:
    """``make demo``: prepare the default preset's data and teacher (with progress), run
    ``search_spaces/default.yaml``, print the best trial, then write the report (tables and
    figures) and export the best student as a Hugging Face folder.

    Idempotent: a second run finds the finished study in ``--results`` and only reports it."""
    parser = argparse.ArgumentParser(prog="switchkd demo", description=demo_main.__doc__)
    _demo_arguments(parser)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    # Rerunning the demo continues (or just reports) the study already in --results.
    args.resume = True
    start = time.perf_counter()
    code = run(args, space_path=DEMO_SPACE)
    if code == 0:
        code = publish_demo(os.path.abspath(args.results))
    print(f"[demo] finished in {time.perf_counter() - start:.0f} s", flush=True)
    return code


def publish_demo(results: str) -> int:
    """``switchkd report`` and ``switchkd export`` on the demo's results folder."""
    from analysis.report import report_main
    from sweeps.publish import export_main

    report, student = os.path.join(results, "report"), os.path.join(results, "best_student")
    code = report_main([results, "--out", report]) or export_main([results, "--out", student])
    if code == 0:
        print(f"[demo] report: {report}/report.md (and report.html, figures)\n"
              f"[demo] best student (transformers from_pretrained folder): {student}", flush=True)
    return code


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sweep":
        return sweep_main(argv[1:])
    if argv and argv[0] == "demo":
        return demo_main(argv[1:])
    build_parser().parse_args(argv)  # prints usage / errors
    return 2
