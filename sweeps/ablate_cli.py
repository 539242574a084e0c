"""``switchkd ablate ABLATION.yaml [...]``: run an ablation (variants x seeds) on Ray Tune.

    switchkd ablate search_spaces/ablations/components.yaml --results results/components
    switchkd ablate search_spaces/ablations/components.yaml --results results/components \
        --resume --seeds 5
    switchkd ablate search_spaces/ablations/losses.yaml --smoke --results /tmp/losses-smoke
    switchkd report results/components --out reports/components

Ray starts as for sweeps (``sweeps.cli``): an embedded local cluster, or ``RAY_ADDRESS``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from sweeps.cli import configure_environment, finished_or_interrupted, ray_connection


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="switchkd ablate",
                                description="run (or resume) an ablation: variants x seeds")
    p.add_argument("ablation",
                   help="an ablation YAML, e.g. search_spaces/ablations/components.yaml")
    p.add_argument("overrides", nargs="*",
                   help="dotted key=value overrides shared by every variant")
    p.add_argument("--seeds", type=int, help="number of seeds per variant (the file's seeds, "
                   "then the next integers)")
    p.add_argument("--results", help="results folder (default: results/<study>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the ablation in --results: run the cells still missing")
    p.add_argument("--smoke", action="store_true",
                   help="the file's smoke variant: tiny preset, one seed, a few steps")
    p.add_argument("--preset", help="base preset instead of the file's")
    p.add_argument("--workers", type=int, help="Ray Train workers per trial")
    p.add_argument("--max-concurrent", type=int, help="trials running at once")
    p.add_argument("--cache-dir", help="run.cache_dir for data and teacher caches "
                   "(default: the preset's, made absolute)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the embedded Ray (default: all cores)")
    return p


def ablate_main(argv: Optional[Sequence[str]] = None) -> int:
    """Validate the file, run its missing (variant, seed) cells, export Parquet, summarise.

    Returns 0 when every cell finished, 1 when interrupted (rerun with ``--resume``), 2 on an
    invalid file or results folder.
    """
    parser = build_parser()
    args = parser.parse_intermixed_args(list(sys.argv[1:] if argv is None else argv))
    worker_env = configure_environment()
    from switchkd.config import ConfigError, parse_override
    from switchkd.train import git_sha
    from sweeps.ablate import extend_seeds, load_ablation, run_ablation
    from sweeps.space import SpaceError
    from sweeps.tuner import SweepError

    try:
        ablation = load_ablation(args.ablation)
        if args.smoke:
            ablation = ablation.for_smoke()
        if args.seeds is not None and args.seeds < 1:
            raise SpaceError(f"{args.ablation}: command line: --seeds must be >= 1")
        ablation = ablation.with_changes(
            preset=args.preset, workers_per_trial=args.workers,
            max_concurrent_trials=args.max_concurrent,
            seeds=None if args.seeds is None else extend_seeds(ablation.seeds, args.seeds),
            overrides=dict(parse_override(o) for o in args.overrides))
    except (SpaceError, ConfigError) as err:
        print(f"ablate: {err}", file=sys.stderr)
        return 2
    results = os.path.abspath(args.results or os.path.join("results", ablation.study))
    cache_dir = os.path.abspath(args.cache_dir or ablation.base_config().run.cache_dir)
    print(f"[ablate] {ablation.study!r}: {len(ablation.variants)} variants x "
          f"{len(ablation.seeds)} seeds {list(ablation.seeds)} on preset {ablation.preset!r} "
          f"-> {results}", flush=True)
    try:
        with ray_connection(args.num_cpus, worker_env):
            outcome = run_ablation(ablation, results, cache_dir=cache_dir, resume=args.resume,
                                   git_sha=git_sha())
    except SweepError as err:
        print(f"ablate: {err}", file=sys.stderr)
        return 2
    summarize(outcome.trials_path, ablation.metric)
    print(f"[ablate] report: switchkd report {results} --out {os.path.join(results, 'report')}",
          flush=True)
    return finished_or_interrupted("ablate", outcome.unfinished)


def summarize(trials_path: str, metric: str) -> None:
    """One line per variant: seeds done, mean metric (test/* twin when scored), mean wall_s."""
    import pandas as pd

    trials = pd.read_parquet(trials_path)
    if not len(trials):
        print("[ablate] no finished trials", flush=True)
        return
    test = "test/" + metric.split("/", 1)[1]
    shown = test if test in trials.columns and trials[test].notna().any() else metric
    for variant, rows in trials.groupby("variant", sort=False):
        ok = rows[rows["status"] == "completed"]
        value = ok[shown].mean() if shown in ok.columns else float("nan")
        print(f"[ablate] {variant:<24} {len(ok)}/{len(rows)} completed  {shown}={value:.4g}  "
              f"wall_s={ok['wall_s'].mean():.1f}", flush=True)
