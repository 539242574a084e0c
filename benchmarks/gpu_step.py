"""Switch-KD step benchmark at paper size on one GPU: time per pass, MFU, peak memory.

    benchmarks/gpu.sh                          # H200: paper-size pair, bf16, a few minutes
    benchmarks/gpu.sh --checkpointing          # recompute the teacher LM in the switch backward
    benchmarks/gpu.sh --tiny                   # shrunk dims, runs on CPU in seconds (tested)
    python benchmarks/gpu_step.py --batch 16 --json /tmp/gpu.json

Needs only ``torch`` and ``transformers`` (this file can be copied alone to a GPU box). It
builds, from config and with random weights, a TinyLLaVA-style pair (METHOD.md section 1):

* vision: SigLIP-so400m dimensions (1152 wide, 27 layers, 16 heads, MLP 4304, 384 px images,
  14 px patches: 729 visual tokens), shared architecture for teacher and student;
* student LM: Qwen2-0.5B dimensions (896 wide, 24 layers, 14 heads, 2 KV heads, MLP 4864);
* teacher LM: Qwen2.5-3B dimensions (2048 wide, 36 layers, 16 heads, 2 KV heads, MLP 11008);
* vocabulary 151936, tied embeddings, 2-layer GELU MLP projectors.

One training step mirrors ``switchkd/step.py`` (METHOD.md sections 2-3)::

    z_T      = L_T(P_T(V_T(x)))   teacher pass, no grad                       -> "teacher"
    z_S      = L_S(P_S(V_S(x)))   student pass, forward + backward            -> "student"
    z_Switch = L_T(P_T(V_S(x)))   switch pass: frozen teacher, gradients flow
                                  only into V_S (input grads through P_T, L_T) -> "switch"
    L = CE(z_S, y) + KL_tau(z_T || z_S) + KL_tau(z_T || z_Switch)            -> "loss"
    clip_grad_norm + AdamW on the student                                     -> "optimizer"

The divergence is the full-vocabulary forward KL at temperature ``tau`` (times ``tau**2``) on
the answer positions only (the last ``--answer-len`` text positions of each row), in float32;
the repo's default DBiLD loss is top-k and cheaper, and its cost is not what this measures.

Per-pass times come from a step split at detached leaves (student logits, switch logits,
``V_S(x)``) so each backward can be timed on its own; the student's backward receives the
switch pass's gradient at ``V_S(x)``, so ``V_S`` is back-propagated once, as in the real step.
The real step (one combined backward) is timed separately; ``parts/step`` compares the two.

FLOPs are counted from the dimensions (``step_flops``): matmuls only, 2 FLOPs per
multiply-add. Per token of a sequence of T positions, an LM of width D, L layers, KV width
D_kv, MLP width I, vocabulary V costs ``2 * L * (2 D^2 + 2 D D_kv + 3 D I) + 2 D V`` (linear
layers and head) plus ``4 * L * T * D`` (scores and values over the full T x T square, the
PaLM convention, even though attention is causal). The vision tower costs per visual token
``2 * L_v * (4 D_v^2 + 2 D_v I_v) + 4 * L_v * N * D_v`` plus the patch embedding
``2 * 3 p^2 D_v``; the projector ``2 * (D_v D + D^2)``. Backward is 2x forward for trained
stacks. The switch backward computes input gradients only (the teacher is frozen): 1x forward
for its linear layers and head, 2x for its attention matmuls (both operands are activations);
with ``--checkpointing`` the switch forward is paid twice. The loss, the optimizer and
elementwise work count 0 FLOPs. MFU = FLOPs / time / peak, the peak being the best of several
large square matmuls in the run's dtype on this device.

Writes JSON (``--json``, default ``benchmarks/results/gpu.json`` next to this file when that
folder exists, else ``./gpu.json``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from torch.utils.checkpoint import checkpoint
from transformers import (LlavaConfig, LlavaForConditionalGeneration, Qwen2Config,
                          SiglipVisionConfig)


# --- dimensions and FLOP counts (plain numbers; benchmarks/step.py uses these too) ---------

@dataclass(frozen=True)
class VisionDims:
    """A SigLIP-style ViT. Visual tokens N = (image / patch) ** 2; ``layers`` = layers run."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    image: int
    patch: int

    @property
    def tokens(self) -> int:
        return (self.image // self.patch) ** 2


@dataclass(frozen=True)
class TextDims:
    """A Qwen2-style decoder with a tied head."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int


PAPER_VISION = VisionDims(hidden=1152, layers=27, heads=16, intermediate=4304, image=384, patch=14)
PAPER_STUDENT = TextDims(hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864,
                         vocab=151936)  # Qwen2-0.5B
PAPER_TEACHER = TextDims(hidden=2048, layers=36, heads=16, kv_heads=2, intermediate=11008,
                         vocab=151936)  # Qwen2.5-3B
TINY_VISION = VisionDims(hidden=32, layers=2, heads=2, intermediate=64, image=32, patch=8)
TINY_STUDENT = TextDims(hidden=32, layers=2, heads=2, kv_heads=1, intermediate=64, vocab=512)
TINY_TEACHER = TextDims(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128, vocab=512)


@dataclass(frozen=True)
class Flops:
    """Forward matmul FLOPs of one sample, split where backward rules differ."""

    linear: float  # weight matmuls (input grad 1x + weight grad 1x in backward)
    attention: float  # activation-activation matmuls (2x in any backward)

    @property
    def total(self) -> float:
        return self.linear + self.attention

    def __add__(self, other: "Flops") -> "Flops":
        return Flops(self.linear + other.linear, self.attention + other.attention)


def lm_flops(t: TextDims, seq: int) -> Flops:
    """One sample of ``seq`` positions through the decoder and the head (forward)."""
    d = t.hidden
    d_kv = t.kv_heads * (d // t.heads)
    per_token = 2 * t.layers * (2 * d * d + 2 * d * d_kv + 3 * d * t.intermediate) + 2 * d * t.vocab
    return Flops(linear=seq * per_token, attention=seq * 4 * t.layers * seq * d)


def vision_flops(v: VisionDims) -> Flops:
    """One image through the patch embedding and ``v.layers`` encoder layers (forward)."""
    n, d = v.tokens, v.hidden
    linear = n * (2 * v.layers * (4 * d * d + 2 * d * v.intermediate) + 2 * 3 * v.patch ** 2 * d)
    return Flops(linear=linear, attention=n * 4 * v.layers * n * d)


def projector_flops(v: VisionDims, t: TextDims) -> Flops:
    """One image's visual tokens through the 2-layer MLP projector (forward)."""
    return Flops(linear=v.tokens * 2 * (v.hidden * t.hidden + t.hidden * t.hidden), attention=0)


def step_flops(vision: VisionDims, student: TextDims, teacher: TextDims, *, batch: int,
               seq: int, switch_rows: int, use_teacher: bool,
               checkpointing: bool = False) -> dict[str, float]:
    """Matmul FLOPs of each pass of one step (the module docstring states the rules).

    ``seq`` counts all positions (visual ones included); ``switch_rows`` samples take the
    switch pass; ``use_teacher`` is False for SFT. Keys: teacher, student, switch, step.
    """
    s_fwd = vision_flops(vision) + projector_flops(vision, student) + lm_flops(student, seq)
    t_fwd = vision_flops(vision) + projector_flops(vision, teacher) + lm_flops(teacher, seq)
    sw_fwd = projector_flops(vision, teacher) + lm_flops(teacher, seq)  # V_S(x) is reused
    student_f = batch * 3 * s_fwd.total
    teacher_f = batch * t_fwd.total if use_teacher else 0.0
    sw_bwd = sw_fwd.linear + 2 * sw_fwd.attention  # input grads only
    recompute = sw_fwd.total if checkpointing else 0.0
    switch_f = switch_rows * (sw_fwd.total + sw_bwd + recompute)
    return dict(teacher=float(teacher_f), student=float(student_f), switch=float(switch_f),
                step=float(teacher_f + student_f + switch_f))


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 5) -> float:
    """Best measured FLOP/s of an (n, n) @ (n, n) matmul in ``dtype`` on ``device``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    inner = max(1, int(1e13 // (2 * n ** 3))) if device.type == "cuda" else 1  # ~10 ms
    best = math.inf
    for rep in range(repeats + 1):  # rep 0 warms up
        start = now(device)
        for _ in range(inner):
            torch.mm(a, b)
        elapsed = (now(device) - start) / inner
        if rep:
            best = min(best, elapsed)
    return 2 * n ** 3 / best


def now(device: torch.device) -> float:
    """``perf_counter`` after the device's queued work has finished."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


# --- the models -----------------------------------------------------------------------------

def build_model(vision: VisionDims, text: TextDims, image_token_id: int, seed: int,
                device: torch.device) -> LlavaForConditionalGeneration:
    """A random-init LLaVA (SigLIP tower + MLP projector + Qwen2 LM) with these dimensions."""
    config = LlavaConfig(
        vision_config=SiglipVisionConfig(
            hidden_size=vision.hidden, intermediate_size=vision.intermediate,
            num_hidden_layers=vision.layers, num_attention_heads=vision.heads,
            image_size=vision.image, patch_size=vision.patch, num_channels=3,
            vision_use_head=False),
        text_config=Qwen2Config(
            vocab_size=text.vocab, hidden_size=text.hidden, intermediate_size=text.intermediate,
            num_hidden_layers=text.layers, num_attention_heads=text.heads,
            num_key_value_heads=text.kv_heads, max_position_embeddings=4096,
            tie_word_embeddings=True),
        image_token_index=image_token_id, vision_feature_select_strategy="full",
        vision_feature_layer=-1, projector_hidden_act="gelu",
        image_seq_length=vision.tokens, tie_word_embeddings=True)
    torch.manual_seed(seed)
    with device:  # initialise on the device: a 3B CPU init alone would take about a minute
        return LlavaForConditionalGeneration(config)


def encode_image(model: LlavaForConditionalGeneration, pixels: torch.Tensor) -> torch.Tensor:
    """V(x): the last encoder layer's hidden states, before post-layernorm.

    Shapes: pixels (B, 3, H, W) -> (B, N, D_vis).
    """
    out = model.model.vision_tower(pixels, output_hidden_states=True, return_dict=True)
    return out.hidden_states[-1]


def lm_logits(model: LlavaForConditionalGeneration, input_ids: torch.Tensor,
              vision_features: torch.Tensor) -> torch.Tensor:
    """L(P(v), x_txt) with the N visual tokens at positions 1..N of every row (the layout of
    ``synthetic_batch``; the repo splices at ``<image>`` ids, which is the same here).

    Shapes: input_ids (B, T), vision_features (B, N, D_vis) -> logits (B, T, V).
    """
    image_embeds = model.model.multi_modal_projector(vision_features)  # (B, N, D)
    text_embeds = model.get_input_embeddings()(input_ids)  # (B, T, D)
    n = image_embeds.shape[1]
    embeds = torch.cat([text_embeds[:, :1], image_embeds.to(text_embeds.dtype),
                        text_embeds[:, 1 + n:]], dim=1)  # (B, T, D)
    hidden = model.model.language_model(inputs_embeds=embeds,
                                        use_cache=False).last_hidden_state  # (B, T, D)
    return model.get_output_embeddings()(hidden)  # (B, T, V)


def synthetic_batch(vision: VisionDims, vocab: int, batch: int, text_len: int, answer_len: int,
                    image_token_id: int, device: torch.device, seed: int = 0):
    """Random pixels and tokens: ``<bos> <image>*N text*text_len``; the last ``answer_len``
    positions are the answer (supervised) tokens.

    Shapes: -> pixels (B, 3, H, W), input_ids (B, T), labels (B, T) with -100 off-answer,
    T = 1 + N + text_len.
    """
    g = torch.Generator().manual_seed(seed)
    n = vision.tokens
    text = torch.randint(image_token_id + 1, vocab, (batch, text_len), generator=g)
    input_ids = torch.cat([torch.full((batch, 1), 2), torch.full((batch, n), image_token_id),
                           text], dim=1)  # (B, T)
    labels = torch.full_like(input_ids, -100)
    labels[:, -answer_len:] = input_ids[:, -answer_len:]
    pixels = torch.rand(batch, 3, vision.image, vision.image, generator=g) * 2 - 1
    return pixels.to(device), input_ids.to(device), labels.to(device)


def kl(student: torch.Tensor, teacher: torch.Tensor, tau: float) -> torch.Tensor:
    """Forward KL(p_T || p_S) at temperature ``tau``, times tau^2, mean over rows, float32.

    Shapes: student, teacher (n, V) -> scalar.
    """
    s = F.log_softmax(student.float() / tau, dim=-1)  # (n, V)
    t = F.log_softmax(teacher.float() / tau, dim=-1)  # (n, V)
    return (t.exp() * (t - s)).sum(-1).mean() * tau ** 2


# --- one step -------------------------------------------------------------------------------

class Bench:
    """Student, frozen teacher, optimizer and one synthetic batch; times steps on ``device``."""

    def __init__(self, args: argparse.Namespace, device: torch.device):
        self.args, self.device = args, device
        self.vision, self.s_dims, self.t_dims = ((TINY_VISION, TINY_STUDENT, TINY_TEACHER)
                                                 if args.tiny else
                                                 (PAPER_VISION, PAPER_STUDENT, PAPER_TEACHER))
        image_id = 4
        self.dtype = getattr(torch, args.dtype)
        self.student = build_model(self.vision, self.s_dims, image_id, seed=1, device=device)
        self.teacher = build_model(self.vision, self.t_dims, image_id, seed=0, device=device)
        self.teacher.to(device=device, dtype=self.dtype).requires_grad_(False).eval()
        # The student's vision tower starts as the teacher's (the paper's shared SigLIP).
        self.student.model.vision_tower.load_state_dict(
            {k: v.float() for k, v in self.teacher.model.vision_tower.state_dict().items()})
        for name, param in self.student.model.vision_tower.named_parameters():
            if "post_layernorm" in name or ".head." in name:  # never reached by V(x)
                param.requires_grad_(False)
        self.student.train()
        self.params = [p for p in self.student.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-5,
                                           fused=device.type == "cuda")
        self.pixels, self.input_ids, self.labels = synthetic_batch(
            self.vision, self.s_dims.vocab, args.batch, args.text_len, args.answer_len, image_id,
            device)
        self.answer = self.labels[:, 1:] != -100  # (B, T-1): logits at t predict t+1
        self.targets = self.labels[:, 1:][self.answer]  # (n,)

    @property
    def seq(self) -> int:
        return self.input_ids.shape[1]

    def autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=self.dtype,
                              enabled=self.dtype != torch.float32)

    def switch_logits(self, features: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The switch pass on ``rows``. Shapes: features (B, N, D_vis) -> (b, T, V)."""
        ids = self.input_ids[rows]  # (b, T)

        def run(f: torch.Tensor) -> torch.Tensor:
            return lm_logits(self.teacher, ids, f.to(self.dtype))

        if self.args.checkpointing:
            return checkpoint(run, features[rows], use_reentrant=False)
        return run(features[rows])

    def parts_step(self, method: str) -> dict[str, float]:
        """One step split at detached leaves; returns ms per pass."""
        dev, t = self.device, {}
        rows = self.switch_rows(method)
        start = now(dev)
        with self.autocast():
            vis = encode_image(self.student, self.pixels)  # (B, N, D_vis)
            s_logits = lm_logits(self.student, self.input_ids, vis)[:, :-1][self.answer]  # (n, V)
        t["student"] = now(dev) - start
        t_logits = sw_logits = vis_leaf = None
        if method != "sft":
            start = now(dev)
            with torch.no_grad(), self.autocast():
                t_vis = encode_image(self.teacher, self.pixels.to(self.dtype))
                t_logits = lm_logits(self.teacher, self.input_ids, t_vis)[:, :-1][self.answer]
            t["teacher"] = now(dev) - start
            start = now(dev)
            vis_leaf = vis.detach().requires_grad_()  # (B, N, D_vis): the switch stops here
            with self.autocast():
                sw_logits = self.switch_logits(vis_leaf, rows)[:, :-1][self.answer[rows]]
            t["switch"] = now(dev) - start
        start = now(dev)
        s_leaf = s_logits.detach().requires_grad_()  # (n, V)
        sw_leaf = None if sw_logits is None else sw_logits.detach().requires_grad_()
        loss = self.loss(s_leaf, t_logits, sw_leaf, rows)
        loss.backward()
        t["loss"] = now(dev) - start
        vis_grad = None
        if sw_leaf is not None:
            start = now(dev)
            sw_logits.backward(sw_leaf.grad)
            vis_grad = vis_leaf.grad
            t["switch"] += now(dev) - start
        start = now(dev)
        if vis_grad is None:
            s_logits.backward(s_leaf.grad)
        else:
            torch.autograd.backward([s_logits, vis], [s_leaf.grad, vis_grad])
        t["student"] += now(dev) - start
        start = now(dev)
        self.optimizer_step()
        t["optimizer"] = now(dev) - start
        return {k: 1e3 * v for k, v in t.items()}

    def real_step(self, method: str) -> float:
        """One step as ``switchkd/step.py`` runs it: one combined backward. Returns ms."""
        dev = self.device
        rows = self.switch_rows(method)
        start = now(dev)
        with self.autocast():
            vis = encode_image(self.student, self.pixels)  # (B, N, D_vis)
            s_logits = lm_logits(self.student, self.input_ids, vis)[:, :-1][self.answer]
            t_logits = sw_logits = None
            if method != "sft":
                with torch.no_grad():
                    t_vis = encode_image(self.teacher, self.pixels.to(self.dtype))
                    t_logits = lm_logits(self.teacher, self.input_ids,
                                         t_vis)[:, :-1][self.answer]
                sw_logits = self.switch_logits(vis, rows)[:, :-1][self.answer[rows]]
        self.loss(s_logits, t_logits, sw_logits, rows).backward()
        self.optimizer_step()
        return 1e3 * (now(dev) - start)

    def switch_rows(self, method: str) -> torch.Tensor:
        count = 0 if method == "sft" else max(1, round(self.args.switch_ratio * self.args.batch))
        return torch.arange(count, device=self.device)

    def loss(self, s_logits, t_logits, sw_logits, rows) -> torch.Tensor:
        """CE + KL(z_T || z_S) + KL(z_T || z_Switch) on answer rows (n, V) / (n_rows, V)."""
        loss = F.cross_entropy(s_logits.float(), self.targets)
        if t_logits is not None:
            loss = loss + kl(s_logits, t_logits, self.args.temperature)
            per_row = int(self.answer[0].sum())  # every row has answer_len answer positions
            t_rows = t_logits.view(self.args.batch, per_row, -1)[rows].flatten(0, 1)
            loss = loss + kl(sw_logits, t_rows, self.args.temperature)
        return loss

    def optimizer_step(self) -> None:
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def median_dict(samples: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(s[k] for s in samples) for k in samples[0]}


def measure(bench: Bench, method: str, warmup: int, repeats: int, peak: float) -> dict:
    """Median per-pass and real-step times of ``method`` ("sft" or "switchkd"), FLOPs, MFU."""
    dev = bench.device
    for _ in range(warmup):
        bench.parts_step(method)
        bench.real_step(method)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    parts = median_dict([bench.parts_step(method) for _ in range(repeats)])
    step_ms = statistics.median(bench.real_step(method) for _ in range(repeats))
    if dev.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(dev) / 2 ** 20
        step_extra_mb = peak_mb - base / 2 ** 20
    else:  # whole-process high-water mark (this process measures every method in turn)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        step_extra_mb = float("nan")
    parts = {k: parts.get(k, 0.0) for k in ("teacher", "student", "switch", "loss", "optimizer")}
    n_rows = len(bench.switch_rows(method))
    flops = step_flops(bench.vision, bench.s_dims, bench.t_dims, batch=bench.args.batch,
                       seq=bench.seq, switch_rows=n_rows, use_teacher=method != "sft",
                       checkpointing=bench.args.checkpointing)
    mfu = {k: flops[k] / (parts[k] / 1e3) / peak if parts[k] else 0.0
           for k in ("teacher", "student", "switch")}
    mfu["step"] = flops["step"] / (step_ms / 1e3) / peak
    return dict(method=method, switch_rows=n_rows, ms=parts, parts_sum_ms=sum(parts.values()),
                step_ms=step_ms, samples_per_s=bench.args.batch / (step_ms / 1e3),
                flops=flops, mfu=mfu, peak_mem_mb=peak_mb, step_extra_mem_mb=step_extra_mb)


def format_table(rows: list[dict]) -> str:
    header = ("method", "teacher ms", "student ms", "switch ms", "loss ms", "optim ms",
              "sum ms", "step ms", "samples/s", "MFU T", "MFU S", "MFU Sw", "MFU step",
              "peak MB")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        ms, mfu = r["ms"], r["mfu"]
        cells = (r["method"], *(f"{ms[k]:.1f}" for k in ("teacher", "student", "switch", "loss",
                                                          "optimizer")),
                 f"{r['parts_sum_ms']:.1f}", f"{r['step_ms']:.1f}", f"{r['samples_per_s']:.2f}",
                 *(f"{100 * mfu[k]:.1f}%" for k in ("teacher", "student", "switch", "step")),
                 f"{r['peak_mem_mb']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def default_json() -> Path:
    results = Path(__file__).resolve().parent / "results"
    return results / "gpu.json" if results.is_dir() and os.access(results, os.W_OK) else Path(
        "gpu.json")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="shrunk dims, runs on CPU")
    parser.add_argument("--checkpointing", action="store_true",
                        help="activation checkpointing of the teacher in the switch pass")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16",
                        help="autocast dtype, teacher weight dtype and matmul-peak dtype")
    parser.add_argument("--batch", type=int, default=None, help="samples (default 8, tiny 2)")
    parser.add_argument("--text-len", type=int, default=None,
                        help="text positions after the image (default 128, tiny 16)")
    parser.add_argument("--answer-len", type=int, default=None,
                        help="answer positions per row (default 32, tiny 4)")
    parser.add_argument("--switch-ratio", type=float, default=1.0)
    parser.add_argument("--temperature", type=float, default=3.0)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None, help="timed steps (default 5, tiny 2)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (CPU runs)")
    parser.add_argument("--json", type=Path, default=None, help="where to write results")
    args = parser.parse_args(argv)
    args.batch = args.batch or (2 if args.tiny else 8)
    args.text_len = args.text_len or (16 if args.tiny else 128)
    args.answer_len = args.answer_len or (4 if args.tiny else 32)
    repeats = args.repeats or (2 if args.tiny else 5)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    dtype = getattr(torch, args.dtype)
    peak_n = 8192 if device.type == "cuda" else (256 if args.tiny else 2048)
    peak = matmul_peak(device, dtype, peak_n)
    print(f"{device} {args.dtype} matmul peak ({peak_n}^3): {peak / 1e12:.3f} TFLOP/s", flush=True)

    bench = Bench(args, device)
    print(f"batch {args.batch} x {bench.seq} positions ({bench.vision.tokens} visual), "
          f"checkpointing={args.checkpointing}", flush=True)
    rows = []
    print("\n".join(format_table([]).splitlines()[:2]), flush=True)
    for method in ("sft", "switchkd"):
        rows.append(measure(bench, method, args.warmup, repeats, peak))
        print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    sft, sw = rows
    predicted = sft["step_ms"] * sw["flops"]["step"] / sft["flops"]["step"]
    summary = dict(switch_vs_flop_prediction=sw["step_ms"] / predicted,
                   switch_over_sft_time=sw["step_ms"] / sft["step_ms"],
                   switch_over_sft_flops=sw["flops"]["step"] / sft["flops"]["step"])
    print(f"Switch-KD step / (SFT step x FLOP ratio) = {summary['switch_vs_flop_prediction']:.3f}")

    result = dict(
        meta=dict(device=(torch.cuda.get_device_name(device) if device.type == "cuda"
                          else platform.processor() or platform.machine()),
                  torch=torch.__version__, transformers=transformers.__version__,
                  python=platform.python_version(), dtype=args.dtype, tiny=args.tiny,
                  checkpointing=args.checkpointing, batch=args.batch, seq=bench.seq,
                  visual_tokens=bench.vision.tokens, answer_len=args.answer_len,
                  switch_ratio=args.switch_ratio, repeats=repeats, warmup=args.warmup,
                  threads=torch.get_num_threads(), loss="full-vocab forward KL + CE",
                  matmul_peak_flops=peak, matmul_peak_n=peak_n,
                  vision=asdict(bench.vision), student=asdict(bench.s_dims),
                  teacher=asdict(bench.t_dims)),
        rows=rows, summary=summary)
    path = args.json or default_json()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
