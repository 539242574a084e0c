"""Command line: ``switchkd <command> ...``.

    switchkd train   --preset tiny [--stage sft|distill] [--out DIR] [--resume CKPT] [key=value ...]
    switchkd teacher --preset default [--eval test [--blind|--vs-blind] [--out FILE]] [key=value ...]
    switchkd eval    RUN_DIR|CHECKPOINT_DIR [--split test] [--tasks mme pope] [--blind|--vs-blind]
                     [--out FILE]
    switchkd data build --profile ci|default|full [--seed N] [--out DIR]
    switchkd sweep   SPACE.yaml [...]        (Ray; see `switchkd sweep --help`)
    switchkd demo                            (the README's main job)
    switchkd ablate  ABLATION.yaml [...]     (Ray; variants x seeds, see `switchkd ablate --help`)
    switchkd report  RESULTS_DIR... --out DIR [--baseline VARIANT]   (tables + figures from Parquet)
    switchkd export  RESULTS_DIR --out DIR [--metric KEY]           (the best trial's student)

Overrides are dotted keys with YAML values: ``loss.temperature=2.5 loss.fixed_k=null``.
This module is the only place in ``switchkd`` that reads the environment, and the only one
that reaches into ``sweeps`` and ``analysis`` (lazily, for the Ray and report commands),
keeping the library free of Ray and pandas.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

import torch
from transformers.utils import logging as transformers_logging

from switchkd.config import Config, ConfigError, from_yaml, parse_override, to_yaml, with_overrides
from switchkd.presets import PRESETS, get_preset

# Commands served outside the library: name -> (module, function taking argv) imported lazily.
EXTERNAL_COMMANDS = {
    "sweep": ("sweeps.cli", "sweep_main"),
    "demo": ("sweeps.cli", "demo_main"),
    "ablate": ("sweeps.ablate_cli", "ablate_main"),
    "report": ("analysis.report", "report_main"),
    "export": ("sweeps.publish", "export_main"),
}


def resolve_config(preset: str, overrides: Sequence[str], stage: Optional[str] = None) -> Config:
    """A preset with ``key=value`` overrides (and ``--stage``) applied and validated."""
    pairs = dict(parse_override(text) for text in overrides)
    if stage is not None:
        pairs["train.stage"] = stage
    return with_overrides(get_preset(preset), pairs)


def _train(args: argparse.Namespace) -> int:
    from switchkd.train import train

    cfg = resolve_config(args.preset, args.overrides, args.stage)
    if not any(text.startswith("run.name=") for text in args.overrides):
        cfg = with_overrides(cfg, {"run.name": os.path.basename(os.path.normpath(args.out))})
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.yaml"), "w") as f:
        f.write(to_yaml(cfg))
    print(to_yaml(cfg), flush=True)

    def report(metrics: dict, checkpoint_dir: Optional[str]) -> None:
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()
                 if k in ("step", "train/loss", "val/avg10", "val/avg", "samples_per_s")}
        print(f"[train] {shown}", flush=True)

    result = train(cfg, out_dir=args.out, report=report, resume_from=args.resume)
    print(f"[train] done: {args.out}/result.json, HF student folder {args.out}/student", flush=True)
    return 0 if result["status"] == "completed" else 1


def _teacher(args: argparse.Namespace) -> int:
    from switchkd.models.build import load_vlm
    from switchkd.train import TEACHER_META, prepare, teacher_dir

    _check_blind_flags(args)
    cfg = resolve_config(args.preset, args.overrides, "distill")
    info = prepare(cfg)
    directory = teacher_dir(cfg, info["data_fingerprint"])
    with open(os.path.join(directory, TEACHER_META)) as f:
        record = json.load(f)
    print(json.dumps(record, indent=2))
    print(f"[teacher] {directory}")
    if args.eval:
        out = args.out or os.path.join(directory, f"eval_{args.eval}{_suffix(args)}.json")
        _score(load_vlm(directory), cfg, source=directory, split=args.eval, blind=args.blind,
               tasks=args.tasks, out=out, vs_blind=args.vs_blind,
               extra={"teacher_fingerprint": record["teacher_fingerprint"]})
    return 0


def _score(model, cfg: Config, *, source: str, split: str, blind: bool,
           tasks: Optional[Sequence[str]], out: str, extra: Optional[dict] = None,
           bundle=None, vs_blind: bool = False) -> dict:
    """Score ``model`` on the split of ``cfg``'s data and write the metrics JSON to ``out``.

    The JSON holds the flat ``<split>/<metric>`` keys of ``evaluate`` plus where they came
    from (``source``, ``split``, ``blind``, ``data_fingerprint``), which ``switchkd report
    --reference`` checks before it puts the scores next to a study's rows. ``vs_blind`` also
    scores the blind baseline on the same items and adds ``blind_metrics`` and ``versus_blind``
    (``switchkd.evaluation.compare.compare_runs`` against the blind run: per task, the
    difference and its paired bootstrap interval), printed as a table."""
    from switchkd.data.source import load_data
    from switchkd.evaluation.compare import compare_runs, format_comparison
    from switchkd.evaluation.evaluate import metrics_from_records, predict
    from switchkd.train import resolve_device

    bundle = bundle or load_data(cfg.data, os.path.abspath(cfg.run.cache_dir))
    rows = bundle.test if split == "test" else bundle.val
    if tasks:
        rows = rows.filter(lambda task: task in set(tasks), input_columns="task")
    device = resolve_device(cfg.run.device)
    model = model.to(device)

    def run(blind_run: bool) -> list[dict]:
        return predict(model, bundle.tokenizer, rows, device=str(device), blind=blind_run,
                       cloze=True, mc_response=cfg.data.mc_response)

    records = run(blind)
    record = {"source": os.path.abspath(source), "split": split, "blind": blind,
              "data_fingerprint": bundle.fingerprint, "mc_response": cfg.data.mc_response,
              **(extra or {}), **metrics_from_records(records, split=split)}
    if vs_blind:
        blind_records = run(True)
        record["blind_metrics"] = metrics_from_records(blind_records, split=split)
        record["versus_blind"] = compare_runs(records, blind_records)
    text = json.dumps(record, indent=2)
    print(text)
    if vs_blind:
        print(format_comparison(record["versus_blind"]))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    print(f"[eval] {out}", flush=True)
    return record


def _check_blind_flags(args: argparse.Namespace) -> None:
    if args.blind and args.vs_blind:
        raise SystemExit("--blind and --vs-blind exclude each other: --vs-blind scores the "
                         "model and its blind baseline")


def _suffix(args: argparse.Namespace) -> str:
    """The default output name's suffix for the blind flags."""
    return "_blind" if args.blind else "_vs_blind" if args.vs_blind else ""


def _eval(args: argparse.Namespace) -> int:
    from switchkd.models.build import load_vlm
    from switchkd.train import build_student

    _check_blind_flags(args)
    path = args.path
    if os.path.isfile(os.path.join(path, "state.json")):  # a training checkpoint
        from switchkd.checkpoint import load_checkpoint
        from switchkd.data.source import load_data

        with open(os.path.join(path, "state.json")) as f:
            cfg = with_overrides(Config(), json.load(f)["config"])
        bundle = load_data(cfg.data, os.path.abspath(cfg.run.cache_dir))
        model = build_student(cfg, bundle)
        load_checkpoint(path, model)
    elif os.path.isfile(os.path.join(path, "config.yaml")):  # a run folder
        with open(os.path.join(path, "config.yaml")) as f:
            cfg = from_yaml(f.read())
        bundle = None
        model = load_vlm(os.path.join(path, "student"))
    else:
        raise SystemExit(f"{path} is neither a run folder (config.yaml) nor a checkpoint "
                         f"(state.json); for a cached teacher use `switchkd teacher --preset P "
                         f"--eval test`")
    out = args.out or os.path.join(path, f"eval_{args.split}{_suffix(args)}.json")
    _score(model, cfg, source=path, split=args.split, blind=args.blind, tasks=args.tasks, out=out,
           bundle=bundle, vs_blind=args.vs_blind)
    return 0


def _data(args: argparse.Namespace) -> int:
    from switchkd.data.suite import build_suite, describe

    suite = build_suite(args.profile, args.seed, args.out, force=args.force)
    print(describe(suite))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchkd", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a student (sft or distill)")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    p.add_argument("--stage", choices=("sft", "distill"))
    p.add_argument("--out", default="runs/latest")
    p.add_argument("--resume", help="checkpoint folder to continue from")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides")
    p.set_defaults(func=_train)

    p = sub.add_parser("teacher", help="train (or find cached) the teacher of a preset")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    p.add_argument("--eval", choices=("val", "test"), help="also score the teacher on a split")
    p.add_argument("--tasks", nargs="*")
    p.add_argument("--blind", action="store_true", help="with --eval: zero the image")
    p.add_argument("--vs-blind", action="store_true",
                   help="with --eval: also score the blind baseline; per-task difference and "
                        "paired bootstrap CI")
    p.add_argument("--out", help="with --eval: JSON file (default: TEACHER_DIR/eval_<split>.json)")
    p.add_argument("overrides", nargs="*")
    p.set_defaults(func=_teacher)

    p = sub.add_parser("eval", help="score a run or checkpoint on MiniVL-10")
    p.add_argument("path")
    p.add_argument("--split", default="test", choices=("val", "test"))
    p.add_argument("--tasks", nargs="*")
    p.add_argument("--blind", action="store_true", help="zero the image (blind baseline)")
    p.add_argument("--vs-blind", action="store_true",
                   help="also score the blind baseline; per-task difference and paired "
                        "bootstrap CI")
    p.add_argument("--out", help="JSON file (default: PATH/eval_<split>.json)")
    p.set_defaults(func=_eval)

    p = sub.add_parser("data", help="build the MiniVL-10 suite")
    p.add_argument("action", choices=("build",))
    p.add_argument("--profile", default="ci", choices=("ci", "default", "full"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=".switchkd_cache")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=_data)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    transformers_logging.disable_progress_bar()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    if argv and argv[0] in EXTERNAL_COMMANDS:
        import importlib

        module, function = EXTERNAL_COMMANDS[argv[0]]
        return getattr(importlib.import_module(module), function)(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"switchkd: config error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
