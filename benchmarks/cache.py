"""Benchmark: the teacher-logit cache (``switchkd.teacher_cache``): build time, bytes per token,
step speed-up and fidelity.

    python -m benchmarks.cache                       # default preset, 1 CPU thread, ~3 min
    python -m benchmarks.cache --quick               # tiny preset, random teacher, ~20 s
    python -m benchmarks.cache --build-rows 0        # cache the whole train split (~16 min)
    python -m benchmarks.cache --threads 2 --json /tmp/cache.json

What it measures:

* build: ``build_teacher_cache`` over the first ``--build-rows`` train rows (the whole split
  with 0) into a temporary folder (deleted afterwards; the run's own cache under
  ``run.cache_dir`` is never touched). Reports seconds, rows/s, answer positions per row,
  bytes on disk per supervised (answer) token, the bytes a top-``loss.window`` store (float16
  values + int16/int32 indices) would need instead, and the build time and size extrapolated
  to the whole train split.
* steps: one optimizer step (zero_grad, ``distill_step`` under the run's autocast, backward,
  grad clip, AdamW) for five cases on the same batches: ``sft`` (CE only), ``align_live`` and
  ``align_cached`` (``switch_ratio=0``: CE + Align), ``switchkd_live`` and ``switchkd_cached``
  (the preset's loss, ``switch_ratio=1``). Cached steps include reading the batch's rows from
  the memory-mapped cache (warm page cache). Collation is excluded (the same for every case).
  The cases run round-robin, one step each per batch, so drift on a shared machine hits all
  alike; times are the median after ``--warmup`` steps. Each case trains its own copy of the
  same initial student.
* fidelity: ``|cached - live|`` of ``align_loss`` and ``vsd_loss`` on the same batches with the
  same student, in fp32 and in the run's precision (bf16 autocast on the default preset). In
  fp32 the difference is the float16 rounding of the stored logits alone; under bf16 autocast
  the live teacher pass runs in bf16 while the cache was built in fp32, so the difference
  also holds the live pass's bf16 error; the last column (live loss vs the live fp32 loss)
  shows the size of that error.

``--quick`` uses the tiny preset with a randomly initialised frozen teacher in a temporary
``run.cache_dir`` (only the ``ci`` data is built there; nothing is trained). The full run uses
the default preset's data and trained teacher from ``--cache-dir`` (``prepare`` builds them if
missing, which takes an hour for the teacher).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import torch

from benchmarks import write_json
from switchkd.config import Config, LossConfig, with_overrides
from switchkd.data.source import DataBundle, load_data
from switchkd.data.tokenizer import image_token_id
from switchkd.models.build import build_vlm, copy_vision_encoder, freeze
from switchkd.models.vlm import VLM
from switchkd.presets import get_preset
from switchkd.step import distill_step
from switchkd.teacher_cache import TeacherCache, build_teacher_cache
from switchkd.train import (autocast, batch_indices, build_student, load_teacher,
                            make_collator, make_optimizer, prepare, resolve_device)


ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "cache.json"
DEFAULT_CACHE_DIR = ROOT / ".switchkd_cache"
# name -> (uses the teacher, reads the cache, switch_ratio or None for the preset's)
CASES = {
    "sft": (False, False, None),
    "align_live": (True, False, 0.0),
    "align_cached": (True, True, 0.0),
    "switchkd_live": (True, False, None),
    "switchkd_cached": (True, True, None),
}


# --------------------------------------------------------------------------------------------
# Set-up
# --------------------------------------------------------------------------------------------


def load_models(cfg: Config, random_teacher: bool) -> tuple[DataBundle, VLM, VLM]:
    """(data, frozen teacher, initial student) as ``switchkd.train.train`` builds them.

    ``random_teacher``: a seeded random teacher instead of the trained one (nothing trained).
    """
    if random_teacher:
        bundle = load_data(cfg.data, os.path.abspath(cfg.run.cache_dir))
        tok = bundle.tokenizer
        teacher = freeze(build_vlm(cfg.model.teacher, vocab_size=len(tok),
                                   image_token_id=image_token_id(tok),
                                   pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                   eos_token_id=tok.eos_token_id, seed=1))
    else:
        prepare(cfg)  # data + trained teacher (cached); never the run's logit cache
        bundle = load_data(cfg.data, os.path.abspath(cfg.run.cache_dir))
        teacher = load_teacher(cfg, bundle)
    student = build_student(cfg, bundle)
    if cfg.model.student_vision_init == "teacher":
        copy_vision_encoder(teacher, student)
    return bundle, teacher, student


def measure_build(cfg: Config, bundle: DataBundle, teacher: VLM, rows: int,
                  directory: str) -> tuple[TeacherCache, dict[str, Any]]:
    """Build the cache of the first ``rows`` train rows into ``directory``; size and speed."""
    subset = dataclasses.replace(bundle, train=bundle.train.select(range(rows)))
    collator = make_collator(teacher, bundle, cfg)
    cache = build_teacher_cache(teacher, subset, collator, directory, teacher_key="benchmark")
    positions = cache.meta["num_positions"]
    on_disk = sum(os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory))
    vocab, window = cache.vocab_size, min(cfg.loss.window, cache.vocab_size)
    index_bytes = 2 if vocab <= 2 ** 15 else 4  # int16 indices fit a vocabulary below 32,768
    full_rows = len(bundle.train)
    per_row = positions / rows
    return cache, dict(
        rows=rows, positions=positions, positions_per_row=per_row,
        vocab_size=vocab, build_s=cache.meta["build_s"], rows_per_s=rows / cache.meta["build_s"],
        logits_bytes=cache.meta["bytes"], bytes_on_disk=on_disk,
        bytes_per_token=cache.meta["bytes"] / positions,
        bytes_per_token_on_disk=on_disk / positions,
        top_window=dict(window=window, index_bytes=index_bytes,
                        bytes_per_token=window * (2 + index_bytes)),
        full_split=dict(rows=full_rows, positions_est=per_row * full_rows,
                        bytes_est=per_row * full_rows * vocab * 2,
                        build_s_est=cache.meta["build_s"] * full_rows / rows),
    )


def make_batches(cfg: Config, bundle: DataBundle, collator, num_rows: int, count: int,
                 device: torch.device) -> list[tuple[list[int], Any]]:
    """``count`` training batches of ``train.batch_size`` rows drawn from the first
    ``num_rows`` (the cached ones), as (row indices, collated batch on ``device``)."""
    batches = []
    for step in range(count):
        indices = batch_indices(num_rows, cfg.train.batch_size, step, cfg.run.seed, 0, 1)
        batches.append((indices, collator.train_batch([bundle.train[i] for i in indices])
                        .to(device)))
    return batches


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


def loss_config(cfg: Config, switch_ratio: Optional[float]) -> LossConfig:
    """The preset's loss, with ``switch_ratio`` replaced unless it is None."""
    return cfg.loss if switch_ratio is None else dataclasses.replace(cfg.loss,
                                                                     switch_ratio=switch_ratio)


def measure_steps(cfg: Config, teacher: VLM, student: VLM, cache: TeacherCache, batches: list,
                  warmup: int, device: torch.device
                  ) -> tuple[dict[str, dict[str, float]], dict[str, VLM]]:
    """Median time of one optimizer step per case (see the module docstring).

    Returns (per-case times, per-case students after their steps).
    """
    runs = {}
    for name in CASES:
        model = copy.deepcopy(student).to(device)
        runs[name] = (model, make_optimizer(model, cfg.optim.lr, cfg), [], [])
    for r, (indices, batch) in enumerate(batches):
        for name, (uses_teacher, cached, ratio) in CASES.items():
            model, optimizer, times, read_times = runs[name]
            model.train()
            start = time.perf_counter()
            logits = None
            if cached:
                logits = cache.logits_for(indices).to(device)  # (n, V) float32
                read_s = time.perf_counter() - start
            optimizer.zero_grad(set_to_none=True)
            with autocast(cfg, device):
                out = distill_step(model, teacher if uses_teacher else None, batch,
                                   loss_config(cfg, ratio),
                                   generator=torch.Generator().manual_seed(r),
                                   teacher_answer_logits=logits)
            out.loss.backward()
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            if r >= warmup:
                times.append(time.perf_counter() - start)
                if cached:
                    read_times.append(read_s)
            if not torch.isfinite(out.loss):
                raise RuntimeError(f"{name}: non-finite loss at benchmark step {r}")
    sft_ms = 1e3 * statistics.median(runs["sft"][2])
    results = {}
    for name, (_, _, times, read_times) in runs.items():
        ms = 1e3 * statistics.median(times)
        results[name] = dict(ms=ms, vs_sft=ms / sft_ms, steps=len(times),
                             read_ms=1e3 * statistics.median(read_times) if read_times else 0.0)
    return results, {name: run[0] for name, run in runs.items()}


def measure_fidelity(cfg: Config, teacher: VLM, student: VLM, cache: TeacherCache,
                     batches: list, device: torch.device) -> list[dict[str, Any]]:
    """|cached - live| of the Align and VSD losses on the same batches, per precision.

    Each row also has ``live_vs_fp32_max_abs``: how far the live loss in that precision is from
    the live fp32 loss (0 for fp32), the scale of the live pass's own rounding to compare with.

    ``student`` should have trained a few steps: a student whose vision encoder is still the
    teacher's copy makes the switch pass equal to the reference pass (VSD exactly 0 live).
    """
    model = copy.deepcopy(student).to(device).eval()
    precisions = {"fp32": dataclasses.replace(cfg, run=dataclasses.replace(cfg.run,
                                                                           precision="fp32"))}
    if isinstance(autocast(cfg, device), torch.autocast):  # the run's own precision too
        precisions["bf16"] = cfg
    terms = ("align_loss", "vsd_loss")
    # precision -> term -> per batch (live loss, cached loss)
    losses: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for precision, run_cfg in precisions.items():
        losses[precision] = {term: [] for term in terms}
        for r, (indices, batch) in enumerate(batches):
            parts = []
            with torch.no_grad(), autocast(run_cfg, device):
                for logits in (None, cache.logits_for(indices).to(device)):  # live, cached
                    out = distill_step(model, teacher, batch, cfg.loss,
                                       generator=torch.Generator().manual_seed(r),
                                       teacher_answer_logits=logits)
                    parts.append(out.parts)
            live, cached = parts
            for term in terms:
                losses[precision][term].append((float(live[term]), float(cached[term])))
    rows = []
    for precision, by_term in losses.items():
        for term, pairs in by_term.items():
            diffs = [abs(c - v) for v, c in pairs]
            rows.append(dict(
                precision=precision, term=term, batches=len(pairs),
                mean_loss=statistics.fmean(v for v, _ in pairs), max_abs=max(diffs),
                mean_abs=statistics.fmean(diffs),
                max_rel=max((d / abs(v) for (v, _), d in zip(pairs, diffs) if v), default=0.0),
                live_vs_fp32_max_abs=max(abs(v - v32) for (v, _), (v32, _)
                                         in zip(pairs, losses["fp32"][term]))))
    return rows


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def format_tables(result: dict[str, Any]) -> str:
    b = result["build"]
    full = b["full_split"]
    lines = [
        "| rows | positions | pos/row | build s | rows/s | B/token | B/token on disk | "
        f"B/token top-{b['top_window']['window']} | full split est. GiB | full build est. s |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {b['rows']} | {b['positions']} | {b['positions_per_row']:.2f} | {b['build_s']:.1f} | "
        f"{b['rows_per_s']:.1f} | {b['bytes_per_token']:.0f} | {b['bytes_per_token_on_disk']:.1f} "
        f"| {b['top_window']['bytes_per_token']} | {full['bytes_est'] / 2**30:.2f} | "
        f"{full['build_s_est']:.0f} |",
        "",
        "| step | ms | vs sft | cache read ms |",
        "|---|---|---|---|",
    ]
    for name, s in result["steps"].items():
        lines.append(f"| {name} | {s['ms']:.1f} | {s['vs_sft']:.3f} | {s['read_ms']:.2f} |")
    lines += ["", "| precision | term | batches | mean loss | max abs diff | mean abs diff | "
              "max rel diff | live vs fp32 live max abs |", "|---|---|---|---|---|---|---|---|"]
    for f in result["fidelity"]:
        lines.append(f"| {f['precision']} | {f['term']} | {f['batches']} | {f['mean_loss']:.4f} "
                     f"| {f['max_abs']:.2e} | {f['mean_abs']:.2e} | {f['max_rel']:.2e} | "
                     f"{f['live_vs_fp32_max_abs']:.2e} |")
    g = result["goals"]
    lines += ["", f"goal: align_cached / sft = {g['align_cached_vs_sft']:.3f} (target <= 1.10: "
              f"{'met' if g['align_cached_within_10pct_of_sft'] else 'not met'}); "
              f"align_live / align_cached = {g['align_speedup']:.2f}x; "
              f"switchkd_live / switchkd_cached = {g['switchkd_speedup']:.2f}x"]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny preset, random teacher, temporary cache dir")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help=f"run.cache_dir with the data and teacher (default {DEFAULT_CACHE_DIR}"
                             "; --quick: a temporary folder)")
    parser.add_argument("--build-rows", type=int, default=None,
                        help="train rows to cache, 0 = all (default 4096, quick 256)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per case (default 20, quick 3)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps (default 2, quick 1)")
    parser.add_argument("--fidelity-batches", type=int, default=None,
                        help="batches for the fidelity check (default 8, quick 4)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    steps = args.steps or (3 if args.quick else 20)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    fidelity_batches = args.fidelity_batches or (4 if args.quick else 8)

    scratch = tempfile.mkdtemp(prefix="switchkd-cache-bench-")
    try:
        cache_dir = args.cache_dir or (Path(scratch) / "run-cache" if args.quick
                                       else DEFAULT_CACHE_DIR)
        cfg = with_overrides(get_preset("tiny" if args.quick else "default"),
                             {"run.cache_dir": str(Path(cache_dir).resolve())})
        device = resolve_device(cfg.run.device)
        bundle, teacher, student = load_models(cfg, random_teacher=args.quick)
        teacher, student = teacher.to(device), student.to(device)
        rows = args.build_rows if args.build_rows is not None else (256 if args.quick else 4096)
        rows = min(rows or len(bundle.train), len(bundle.train))
        print(f"[cache bench] preset {cfg.preset}, {rows} of {len(bundle.train)} train rows, "
              f"vocab {teacher.vocab_size}, precision {cfg.run.precision}, "
              f"{args.threads} thread(s)", flush=True)
        cache, build = measure_build(cfg, bundle, teacher, rows, os.path.join(scratch, "logits"))
        collator = make_collator(student, bundle, cfg)
        batches = make_batches(cfg, bundle, collator, rows, warmup + steps, device)
        step_results, trained = measure_steps(cfg, teacher, student, cache, batches, warmup,
                                              device)
        # The Switch-KD student after its steps: its vision encoder has left the teacher's.
        fidelity = measure_fidelity(cfg, teacher, trained["switchkd_live"], cache,
                                    make_batches(cfg, bundle, collator, rows, fidelity_batches,
                                                 device), device)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    goals = dict(
        align_cached_vs_sft=step_results["align_cached"]["vs_sft"],
        align_cached_within_10pct_of_sft=step_results["align_cached"]["vs_sft"] <= 1.10,
        align_speedup=step_results["align_live"]["ms"] / step_results["align_cached"]["ms"],
        switchkd_speedup=(step_results["switchkd_live"]["ms"]
                          / step_results["switchkd_cached"]["ms"]),
    )
    result = dict(
        meta=dict(torch=torch.__version__, python=platform.python_version(),
                  machine=platform.machine(), threads=args.threads, preset=cfg.preset,
                  precision=cfg.run.precision, batch_size=cfg.train.batch_size,
                  loss_kind=cfg.loss.kind, window=cfg.loss.window, k_max=cfg.loss.k_max,
                  steps=steps, warmup=warmup, fidelity_batches=fidelity_batches,
                  quick=args.quick, random_teacher=args.quick),
        build=build, steps=step_results, fidelity=fidelity, goals=goals,
    )
    print(format_tables(result), flush=True)
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
