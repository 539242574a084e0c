"""Benchmark: one Switch-KD training step on CPU, pass by pass, against FLOPs and matmul peak.

    python -m benchmarks.step                        # default + large presets, fp32 + bf16,
                                                     # 2 threads, about 6 minutes
    python -m benchmarks.step --quick                # tiny preset, small batch, seconds (tested)
    python -m benchmarks.step --threads 1 --presets default --precisions bf16 --json /tmp/s.json

Methods (METHOD.md sections 2-3): ``sft`` (CE only, no teacher), ``kd`` (CE + Align: vanilla
KD, i.e. Switch-KD at ``switch_ratio`` 0) and ``switch-r`` (CE + Align + VSD with the switch
pass on ``round(r * B)`` samples) for r in 0.25, 0.5, 1. The loss is each preset's own
(``loss.kind``, DBiLD by default).

Presets: ``default`` is ``switchkd.presets.default()``; ``large`` is the same with both text
models twice as wide (teacher 512 wide, MLP 1536; student 256 wide, MLP 768), defined here
only; ``tiny`` (``--quick``) is ``switchkd.presets.tiny()``. Batches are synthetic, not the
data suite: B samples of T positions, ``<bos> <image>*N`` then random text, right-padded rows
of random length in [3T/4, T], the last ``answer_len`` real tokens of each row supervised,
random pixels; vocabulary 1024 (the ``default`` data profile's tokenizer size).

Passes, timed with the step split at detached leaves (student logits, switch logits,
``V_S(x)``) so that each backward runs on its own:

* ``teacher``: ``z_T`` under ``torch.no_grad()``;
* ``student``: ``z_S`` forward + its backward (which also carries the switch pass's gradient
  at ``V_S(x)`` through ``V_S``, so ``V_S`` is back-propagated once, as in the real step);
* ``switch``: ``L_T(P_T(V_S(x)))`` forward + backward down to ``V_S(x)``;
* ``loss``: CE + Align + VSD forward + backward on the logits;
* ``optimizer``: gradient clipping + AdamW step + zero_grad.

The real step (``switchkd.step.distill_step`` + one backward + clipping + AdamW) is timed too;
``sum/step`` compares the parts with it. Times are medians of ``--repeats`` steps after a
warm-up; forward passes run under bf16 autocast for ``bf16`` (weights and optimizer fp32, as
in ``switchkd.train``).

FLOPs (``benchmarks.gpu_step.step_flops``; matmuls only, 2 per multiply-add, over all T
padded positions since the kernels compute them): per token, LM ``2 L (2 D^2 + 2 D D_kv +
3 D I) + 2 D V`` plus attention ``4 L T D`` (full T x T square); vision per visual token
``2 L_v (4 D_v^2 + 2 D_v I_v) + 4 L_v N D_v`` + patch embedding ``6 p^2 D_v``; projector
``2 (D_v D + D^2)``. Backward = 2x forward for the student. The switch pass costs its forward
(teacher projector + LM, ``V_S(x)`` reused) plus a backward of input gradients only: 1x
forward for linear layers and head, 2x for attention. Teacher: 1x forward. Loss and optimizer:
0 (not matmuls). MFU = pass FLOPs / pass time / peak, where the peak is the best time of a
square (n x n) fp32 or bf16 matmul (best of 10; n = 2048, 256 with --quick) on the same
threads, in the run's precision, measured before and after the cases; the better is used (this
machine is shared and its matmul speed drifts; rows printed while running use the first, the
final table and the JSON the better one).

Each (preset, precision, method) runs in a freshly forked child (as ``benchmarks.losses``) so
its peak memory is its own: ``peak_mb`` is ``ru_maxrss`` after the steps minus ``ru_maxrss``
once the models, optimizer and batch exist; ``rss_mb`` is the child's high-water mark.
Linux only.
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import resource
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from benchmarks import write_json
from benchmarks.gpu_step import TextDims, VisionDims, matmul_peak, step_flops
from switchkd.config import Config, with_overrides
from switchkd.data.batch import Batch
from switchkd.losses import ce_loss
from switchkd.models.build import build_vlm, copy_vision_encoder, freeze
from switchkd.presets import default, tiny
from switchkd.step import (distill_step, distillation_loss, kd_positions, switch_logits,
                           switch_rows)
from switchkd.train import make_optimizer


VOCAB = 1024
IMAGE_TOKEN_ID = 4
PAD_ID, BOS_ID = 0, 2
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "step.json"
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
PASSES = ("teacher", "student", "switch", "loss", "optimizer")
METHODS: list[tuple[str, float | None]] = [
    ("sft", None), ("kd", 0.0), ("switch-0.25", 0.25), ("switch-0.5", 0.5), ("switch-1", 1.0)]


def large() -> Config:
    """``default`` with both text models twice as wide (a bigger CPU workload)."""
    return with_overrides(default(), {
        "model.teacher.text.hidden_size": 512, "model.teacher.text.intermediate_size": 1536,
        "model.student.text.hidden_size": 256, "model.student.text.intermediate_size": 768})


PRESETS: dict[str, Callable[[], Config]] = {"tiny": tiny, "default": default, "large": large}


def dims(cfg: Config, side: str) -> tuple[VisionDims, TextDims]:
    """The FLOP-relevant dimensions of ``cfg.model.<side>`` (vision layers actually run)."""
    m = getattr(cfg.model, side)
    v, t = m.vision, m.text
    used = m.vision_feature_layer % (v.num_layers + 1)  # hidden_states index = layers run
    return (VisionDims(hidden=v.hidden_size, layers=used, heads=v.num_heads,
                       intermediate=v.intermediate_size, image=v.image_size, patch=v.patch_size),
            TextDims(hidden=t.hidden_size, layers=t.num_layers, heads=t.num_heads,
                     kv_heads=t.num_kv_heads, intermediate=t.intermediate_size, vocab=VOCAB))


def preset_dims(preset: str) -> dict[str, dict]:
    """The dimensions FLOPs are counted from, for the JSON."""
    cfg = PRESETS[preset]()
    vision, student = dims(cfg, "student")
    return dict(vision=asdict(vision), student=asdict(student),
                teacher=asdict(dims(cfg, "teacher")[1]))


def synthetic_batch(cfg: Config, batch: int, seq: int, answer_len: int, seed: int = 0) -> Batch:
    """Random rows shaped like collated training rows (module docstring).

    Shapes: -> pixel_values (B, 3, H, W), input_ids / attention_mask / labels (B, T).
    """
    g = torch.Generator().manual_seed(seed)
    n = cfg.model.student.vision.num_image_tokens
    size = cfg.model.student.vision.image_size
    input_ids = torch.randint(IMAGE_TOKEN_ID + 1, VOCAB, (batch, seq), generator=g)  # (B, T)
    input_ids[:, 0] = BOS_ID
    input_ids[:, 1:1 + n] = IMAGE_TOKEN_ID
    lengths = torch.randint(max(n + 2 + answer_len, 3 * seq // 4), seq + 1, (batch,), generator=g)
    lengths[0] = seq  # the longest row sets T, as in the collator
    positions = torch.arange(seq).expand(batch, seq)  # (B, T)
    attention_mask = (positions < lengths[:, None]).long()  # (B, T)
    input_ids = input_ids.masked_fill(attention_mask == 0, PAD_ID)
    answer = (positions < lengths[:, None]) & (positions >= lengths[:, None] - answer_len)
    labels = input_ids.masked_fill(~answer, -100)  # (B, T)
    pixel_values = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    return Batch(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask,
                 labels=labels)


class Case:
    """Models, optimizer and batch for one (preset, precision, method)."""

    def __init__(self, preset: str, precision: str, ratio: float | None, batch: int, seq: int,
                 answer_len: int):
        overrides = {"run.precision": precision, "run.device": "cpu"}
        if ratio is not None:
            overrides["loss.switch_ratio"] = ratio
        self.cfg = with_overrides(PRESETS[preset](), overrides)
        self.sft = ratio is None
        self.student = build_vlm(self.cfg.model.student, vocab_size=VOCAB,
                                 image_token_id=IMAGE_TOKEN_ID, seed=1)
        self.teacher = None
        if not self.sft:
            self.teacher = freeze(build_vlm(self.cfg.model.teacher, vocab_size=VOCAB,
                                            image_token_id=IMAGE_TOKEN_ID, seed=0))
            copy_vision_encoder(self.teacher, self.student)
        self.student.train()
        self.optimizer = make_optimizer(self.student, self.cfg.optim.lr, self.cfg)
        self.batch = synthetic_batch(self.cfg, batch, seq, answer_len)
        self.generator = torch.Generator().manual_seed(0)

    def autocast(self):
        return torch.autocast("cpu", dtype=torch.bfloat16,
                              enabled=self.cfg.run.precision == "bf16")

    def use_vsd(self) -> bool:
        loss = self.cfg.loss
        return not self.sft and loss.vsd_weight > 0 and loss.switch_ratio > 0

    def switch_count(self) -> int:
        return len(switch_rows(len(self.batch), self.cfg.loss.switch_ratio, None)) \
            if self.use_vsd() else 0

    def parts_step(self) -> dict[str, float]:
        """One step split into passes (module docstring); seconds per pass."""
        b, cfg, t = self.batch, self.cfg.loss, {}
        start = time.perf_counter()
        with self.autocast():
            out = self.student(b.pixel_values, b.input_ids, b.attention_mask)
        s_logits = out.logits[:, :-1]  # (B, T-1, V)
        t["student"] = time.perf_counter() - start
        t_logits = sw_logits = vis_leaf = rows = None
        if not self.sft:
            start = time.perf_counter()
            with torch.no_grad(), self.autocast():
                t_logits = self.teacher(b.pixel_values, b.input_ids,
                                        b.attention_mask).logits[:, :-1]  # (B, T-1, V)
            t["teacher"] = time.perf_counter() - start
        if self.use_vsd():
            start = time.perf_counter()
            rows = switch_rows(len(b), cfg.switch_ratio, self.generator)  # (b,)
            vis_leaf = out.vision_features.detach().requires_grad_()  # (B, N, D_vis)
            with self.autocast():  # the switch pass of distill_step
                sw_logits = switch_logits(self.teacher, vis_leaf[rows], b.input_ids[rows],
                                          b.attention_mask[rows])  # (b, T, V)
            t["switch"] = time.perf_counter() - start

        start = time.perf_counter()
        s_leaf = s_logits.detach().requires_grad_()  # (B, T-1, V)
        sw_leaf = None if sw_logits is None else sw_logits.detach().requires_grad_()  # (b, T, V)
        with self.autocast():
            loss = ce_loss(s_leaf, b.labels[:, 1:])
            if not self.sft:
                mask = kd_positions(b, cfg)  # (B, T-1)
                if cfg.align_weight > 0:
                    loss = loss + cfg.align_weight * distillation_loss(s_leaf, t_logits, mask, cfg)
                if sw_leaf is not None:
                    loss = loss + cfg.vsd_weight * distillation_loss(
                        sw_leaf[:, :-1], t_logits[rows], mask[rows], cfg)
        loss.backward()
        t["loss"] = time.perf_counter() - start

        roots, grads = [s_logits], [s_leaf.grad]
        if sw_leaf is not None:
            start = time.perf_counter()
            sw_logits.backward(sw_leaf.grad)
            t["switch"] += time.perf_counter() - start
            roots.append(out.vision_features)
            grads.append(vis_leaf.grad)  # (B, N, D_vis), zero off the switch rows
        start = time.perf_counter()
        torch.autograd.backward(roots, grads)
        t["student"] += time.perf_counter() - start
        start = time.perf_counter()
        self.optimizer_step()
        t["optimizer"] = time.perf_counter() - start
        return {k: t.get(k, 0.0) for k in PASSES}

    def real_step(self) -> float:
        """One step as ``switchkd.train`` runs it (no grad accumulation); seconds."""
        start = time.perf_counter()
        with self.autocast():
            out = distill_step(self.student, self.teacher, self.batch, self.cfg.loss,
                               generator=self.generator)
        out.loss.backward()
        self.optimizer_step()
        return time.perf_counter() - start

    def optimizer_step(self) -> None:
        if self.cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def flops(self) -> dict[str, float]:
        vision, s_text = dims(self.cfg, "student")
        _, t_text = dims(self.cfg, "teacher")
        return step_flops(vision, s_text, t_text, batch=len(self.batch),
                          seq=self.batch.input_ids.shape[1], switch_rows=self.switch_count(),
                          use_teacher=not self.sft)


def measure(spec: dict, queue) -> None:
    """Child process: warm up, time the passes and the real step, report medians and memory."""
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    case = Case(spec["preset"], spec["precision"], spec["ratio"], spec["batch"], spec["seq"],
                spec["answer_len"])
    base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(spec["warmup"]):
        case.parts_step()
        case.real_step()
    parts = [case.parts_step() for _ in range(spec["repeats"])]
    steps = [case.real_step() for _ in range(spec["repeats"])]
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ms = {k: 1e3 * statistics.median(p[k] for p in parts) for k in PASSES}
    queue.put(dict(ms=ms, step_ms=1e3 * statistics.median(steps), flops=case.flops(),
                   switch_rows=case.switch_count(), peak_mb=(peak_kib - base_kib) / 1024,
                   rss_mb=peak_kib / 1024,
                   samples_ms=dict(step=[1e3 * x for x in steps],  # every timed step, for spread
                                   **{k: [1e3 * p[k] for p in parts] for k in PASSES})))


def measure_peak(spec: dict, queue) -> None:
    """Child process: the best FLOP/s of an (n x n) matmul in ``spec["dtype"]``."""
    torch.set_num_threads(spec["threads"])
    queue.put(matmul_peak(torch.device("cpu"), getattr(torch, spec["dtype"]), spec["n"],
                          repeats=10))


def in_child(target: Callable, spec: dict):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=target, args=(spec, queue))
    child.start()
    result = queue.get()  # before join: a large item would block the child's exit
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"{target.__name__} on {spec} failed (exit code {child.exitcode})")
    return result


def add_mfu(row: dict, peak: float) -> None:
    """Set ``row["mfu"]``: FLOPs / time / ``peak`` per pass that ran, and for the real step."""
    flops, ms = row["flops"], row["ms"]
    row["mfu"] = {k: flops[k] / (ms[k] / 1e3) / peak if ms[k] else 0.0
                  for k in ("teacher", "student", "switch")}
    row["mfu"]["step"] = flops["step"] / (row["step_ms"] / 1e3) / peak


def summarize(rows: list[dict]) -> list[dict]:
    """Per (preset, precision): each method's step time against SFT step x FLOP ratio."""
    out = []
    for r in rows:
        sft = next(s for s in rows if s["preset"] == r["preset"]
                   and s["precision"] == r["precision"] and s["method"] == "sft")
        predicted = sft["step_ms"] * r["flops"]["step"] / sft["flops"]["step"]
        out.append(dict(preset=r["preset"], precision=r["precision"], method=r["method"],
                        step_ms=r["step_ms"], predicted_ms=predicted,
                        measured_over_predicted=r["step_ms"] / predicted,
                        flops_over_sft=r["flops"]["step"] / sft["flops"]["step"],
                        time_over_sft=r["step_ms"] / sft["step_ms"],
                        mfu_student=r["mfu"]["student"], mfu_teacher=r["mfu"]["teacher"]))
    return out


def goals(rows: list[dict], summary: list[dict]) -> dict:
    """The issue's targets, reported (never asserted) per (preset, precision).

    ``switch_time_vs_flops``: the largest |measured / predicted - 1| over the ``switch-r``
    methods (goal: <= 0.15); ``min_mfu_student`` / ``min_mfu_teacher``: the lowest MFU of the
    student and teacher passes over all methods that run them (goal on ``large``: >= 0.40).
    """
    out = {}
    for key in dict.fromkeys((r["preset"], r["precision"]) for r in rows):
        mine = [r for r in rows if (r["preset"], r["precision"]) == key]
        switch = [s for s in summary if (s["preset"], s["precision"]) == key
                  and s["method"].startswith("switch-")]
        out["/".join(key)] = dict(
            switch_time_vs_flops=max((abs(s["measured_over_predicted"] - 1) for s in switch),
                                     default=None),
            min_mfu_student=min(r["mfu"]["student"] for r in mine),
            min_mfu_teacher=min((r["mfu"]["teacher"] for r in mine if r["method"] != "sft"),
                                default=None))
    return out


def format_table(rows: list[dict]) -> str:
    header = ("preset", "prec", "method", "rows", *(f"{p} ms" for p in PASSES), "sum ms",
              "step ms", "samples/s", "GFLOP", "MFU T", "MFU S", "MFU Sw", "MFU step", "peak MB")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        ms, mfu = r["ms"], r["mfu"]
        cells = (r["preset"], r["precision"], r["method"], r["switch_rows"],
                 *(f"{ms[p]:.1f}" for p in PASSES), f"{r['parts_sum_ms']:.1f}",
                 f"{r['step_ms']:.1f}", f"{r['samples_per_s']:.1f}",
                 f"{r['flops']['step'] / 1e9:.1f}",
                 *(f"{100 * mfu[k]:.1f}%" for k in ("teacher", "student", "switch", "step")),
                 f"{r['peak_mb']:.0f}")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def format_summary(summary: list[dict]) -> str:
    header = ("preset", "prec", "method", "FLOPs/SFT", "time/SFT", "step ms", "predicted ms",
              "measured/predicted")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in summary:
        cells = (s["preset"], s["precision"], s["method"], f"{s['flops_over_sft']:.2f}",
                 f"{s['time_over_sft']:.2f}", f"{s['step_ms']:.1f}", f"{s['predicted_ms']:.1f}",
                 f"{s['measured_over_predicted']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny preset, batch 4 x 40 positions, 1 repeat, fp32 + bf16")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--presets", default=None, help="comma list (default 'default,large')")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16")
    parser.add_argument("--batch", type=int, default=None, help="samples (default 32, quick 4)")
    parser.add_argument("--seq", type=int, default=None, help="positions T (default 128, quick 40)")
    parser.add_argument("--answer-len", type=int, default=None,
                        help="answer tokens per row (default 16, quick 4)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed steps (default 5, quick 1)")
    parser.add_argument("--peak-n", type=int, default=None, help="matmul side (2048, quick 256)")
    args = parser.parse_args(argv)
    presets = (args.presets or ("tiny" if args.quick else "default,large")).split(",")
    precisions = args.precisions.split(",")
    shape = dict(batch=args.batch or (4 if args.quick else 32),
                 seq=args.seq or (40 if args.quick else 128),
                 answer_len=args.answer_len or (4 if args.quick else 16))
    repeats = args.repeats or (1 if args.quick else 5)
    peak_n = args.peak_n or (256 if args.quick else 2048)

    def measure_peaks(when: str) -> dict[str, float]:
        got = {p: in_child(measure_peak, dict(threads=args.threads, dtype=DTYPES[p], n=peak_n))
               for p in precisions}
        print(f"matmul peak {when} ({peak_n}^3, {args.threads} threads): "
              + ", ".join(f"{p} {v / 1e9:.1f} GFLOP/s" for p, v in got.items()), flush=True)
        return got

    first = measure_peaks("before")
    print("\n".join(format_table([]).splitlines()[:2]), flush=True)
    rows = []
    for preset in presets:
        for precision in precisions:
            for method, ratio in METHODS:
                spec = dict(shape, preset=preset, precision=precision, ratio=ratio,
                            threads=args.threads, warmup=args.warmup, repeats=repeats)
                got = in_child(measure, spec)
                rows.append(dict(preset=preset, precision=precision, method=method,
                                 switch_ratio=ratio, **got,
                                 parts_sum_ms=sum(got["ms"].values()),
                                 samples_per_s=shape["batch"] / (got["step_ms"] / 1e3)))
                add_mfu(rows[-1], first[precision])
                print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    last = measure_peaks("after")
    peaks = {p: max(first[p], last[p]) for p in precisions}
    for row in rows:
        add_mfu(row, peaks[row["precision"]])
    print("\nfinal table, MFU against the better peak measurement (" + ", ".join(
        f"{p} {v / 1e9:.1f} GFLOP/s" for p, v in peaks.items()) + "):")
    print(format_table(rows))
    summary = summarize(rows)
    print("\nstep time against the SFT step scaled by FLOPs:")
    print(format_summary(summary))
    targets = goals(rows, summary)
    print("\ngoals (reported, not asserted): switch |measured/predicted - 1| <= 0.15; "
          "student/teacher MFU >= 40% on large")
    for key, g in targets.items():
        print(f"  {key}: " + ", ".join(f"{k}={v:.3f}" for k, v in g.items() if v is not None))

    result = dict(
        meta=dict(torch=torch.__version__, python=platform.python_version(),
                  machine=platform.machine(), threads=args.threads, repeats=repeats,
                  warmup=args.warmup, quick=args.quick, vocab=VOCAB, batch_source="synthetic",
                  matmul_peak_n=peak_n, matmul_peak_flops=peaks,
                  matmul_peak_samples={p: [first[p], last[p]] for p in precisions}, **shape,
                  presets={p: preset_dims(p) for p in presets}),
        rows=rows, summary=summary, goals=targets)
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
