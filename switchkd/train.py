"""Training: the teacher's CE stage and the student's SFT / Switch-KD stage.

``train(cfg, report=...)`` is launcher-agnostic: it runs in a plain process, under torchrun or
inside a Ray Train worker. It never imports Ray; when a ``torch.distributed`` process group
exists it shards the data by rank and wraps the student in DDP. Progress leaves the loop only
through the ``report(metrics, checkpoint_dir)`` callback and the files under ``out_dir``.

Everything random in a step (data order, switch rows) is a pure function of
``(run.seed, step)``, so a resumed run replays the uninterrupted run exactly.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any, Callable, Iterator, Optional

import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch.nn.parallel import DistributedDataParallel

from switchkd.checkpoint import TrainState, load_checkpoint, save_checkpoint
from switchkd.config import Config, to_flat_dict
from switchkd.data.assets import availability_tag
from switchkd.data.collate import Collator
from switchkd.data.source import DataBundle, load_data
from switchkd.data.tokenizer import image_token_id
from switchkd.evaluation.evaluate import evaluate
from switchkd.language_pretrain import (LookupLoss, lookup_accuracy, lookup_texts,
                                        pretrain_language)
from switchkd.losses import ce_loss
from switchkd.models.build import (build_vlm, check_pair, copy_vision_encoder, freeze, load_vlm)
from switchkd.models.export import save_hf_folder
from switchkd.models.vlm import VLM
from switchkd.presets import SHIPPED_TEACHERS
from switchkd.schedule import make_scheduler
from switchkd.step import distill_step
from switchkd.teacher_cache import build_teacher_cache, open_teacher_cache
from switchkd.vision_pretrain import pretrain_vision

Report = Callable[[dict[str, Any], Optional[str]], None]
TEACHER_META = "teacher.json"
RESULT_SCHEMA_VERSION = 1  # the Parquet/result.json column contract (analysis/schema.py)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the message names the step and the loss part."""


# --------------------------------------------------------------------------------------------
# Setup helpers
# --------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("run.device='cuda' but CUDA is not available")
    return torch.device(name)


def autocast(cfg: Config, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA by default (``run.precision=auto``), fp32 on CPU unless asked."""
    use_bf16 = cfg.run.precision == "bf16" or (cfg.run.precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def distributed_info() -> tuple[int, int]:
    """(rank, world size) of the current process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def batch_indices(num_rows: int, global_batch: int, step: int, seed: int, shard: int,
                  num_shards: int) -> list[int]:
    """Row indices of ``shard``'s part of global batch ``step`` in a seeded epoch stream.

    The stream concatenates one seeded permutation per epoch, so batch ``step`` depends only on
    ``(seed, step)``: resuming replays the same order, and shards never overlap.
    """
    start = step * global_batch
    picked: list[int] = []
    position = start
    while len(picked) < global_batch:
        epoch, offset = divmod(position, num_rows)
        generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(num_rows, generator=generator)
        take = min(global_batch - len(picked), num_rows - offset)
        picked.extend(order[offset:offset + take].tolist())
        position += take
    per_shard = global_batch // num_shards
    return picked[shard * per_shard:(shard + 1) * per_shard]


def make_optimizer(model: torch.nn.Module, lr: float, cfg: Config) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not on norms, biases)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.optim.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(cfg.optim.beta1, cfg.optim.beta2))


@contextlib.contextmanager
def _file_lock(path: str) -> Iterator[None]:
    """An inter-process lock, so concurrent trials/ranks build each cache exactly once."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def git_sha() -> str:
    """The source revision, or "unknown" outside a git checkout (e.g. in a Ray job package)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.abspath(__file__)), timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def build_student(cfg: Config, bundle: DataBundle) -> VLM:
    tok = bundle.tokenizer
    return build_vlm(cfg.model.student, vocab_size=len(tok), image_token_id=image_token_id(tok),
                     pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                     eos_token_id=tok.eos_token_id, seed=cfg.run.seed)


def make_collator(model: VLM, bundle: DataBundle, cfg: Config) -> Collator:
    """The collator that turns ``bundle`` rows into batches for ``model``."""
    return Collator(bundle.tokenizer, num_image_tokens=model.num_image_tokens,
                    image_size=model.image_size, max_length=cfg.data.max_length,
                    mc_response=cfg.data.mc_response)


def train_answers(train) -> list[str]:
    """Every answer (gpt turn) of the train split's conversations."""
    return [turn["value"] for conversation in train["conversations"] for turn in conversation
            if turn["from"] == "gpt"]


def _rows(dataset, indices: list[int]) -> list[dict]:
    return [dataset[i] for i in indices]


# --------------------------------------------------------------------------------------------
# Teacher stage (CE only), cached by (teacher config, teacher budget, data fingerprint)
# --------------------------------------------------------------------------------------------


def teacher_key(cfg: Config, data_fingerprint: str) -> str:
    """The teacher cache key: what determines the trained teacher's weights."""
    if cfg.model.teacher.path is not None:
        return _hash({"path": os.path.abspath(cfg.model.teacher.path)})
    flat = to_flat_dict(cfg)
    parts = {k: v for k, v in flat.items()
             if k.startswith(("model.teacher.", "train.teacher.", "data.max_length", "data.tasks",
                              "data.mc_response"))
             or k in ("optim.weight_decay", "optim.beta1", "optim.beta2", "optim.min_lr_ratio",
                      "optim.grad_clip", "run.precision")}
    # Settings added after teachers were shipped are hashed only when switched on, so the key
    # of a teacher trained without them (e.g. 181a167165ee47a9, the evidence study's) holds.
    budget = cfg.train.teacher
    for stage, on in (("vision_pretrain", budget.vision_pretrain.steps > 0),
                      ("language_pretrain", budget.language_pretrain.enabled)):
        if not on:
            parts = {k: v for k, v in parts.items() if not k.startswith(f"train.teacher.{stage}.")}
    if not budget.freeze_vision:
        parts.pop("train.teacher.freeze_vision")
    if budget.init_from is None:
        parts.pop("train.teacher.init_from")
    else:  # the starting teacher's own key (location-independent), else its path
        parts["train.teacher.init_from"] = _teacher_identity(budget.init_from)
    if cfg.data.mc_response == "letter":
        parts.pop("data.mc_response")
    return _hash({"cfg": parts, "data": data_fingerprint})


def _is_teacher_key(text: str) -> bool:
    return len(text) == 16 and all(c in "0123456789abcdef" for c in text)


def _teacher_identity(init_from: str) -> str:
    """A teacher key as given, else the key recorded in the folder, else its absolute path."""
    if _is_teacher_key(init_from):
        return init_from
    try:
        with open(os.path.join(init_from, TEACHER_META)) as f:
            return json.load(f)["teacher_fingerprint"]
    except (OSError, KeyError, ValueError):
        return os.path.abspath(init_from)


def _init_teacher_folder(cfg: Config) -> str:
    """The folder ``train.teacher.init_from`` names: a path, or a teacher key looked up in the
    cache and then among the shipped teachers."""
    init_from = cfg.train.teacher.init_from
    if not _is_teacher_key(init_from):
        return init_from
    for root in (os.path.join(os.path.abspath(cfg.run.cache_dir), "teachers"), SHIPPED_TEACHERS):
        if os.path.isfile(os.path.join(root, init_from, TEACHER_META)):
            return os.path.join(root, init_from)
    raise ValueError(f"train.teacher.init_from={init_from!r}: no teacher with that key in "
                     f"{cfg.run.cache_dir}/teachers or {SHIPPED_TEACHERS}; train it first "
                     "(switchkd teacher) or give its folder")


def teacher_dir(cfg: Config, data_fingerprint: str) -> str:
    if cfg.model.teacher.path is not None:
        return cfg.model.teacher.path
    return os.path.join(os.path.abspath(cfg.run.cache_dir), "teachers",
                        teacher_key(cfg, data_fingerprint))


def teacher_cache_dir(cfg: Config, bundle: DataBundle) -> str:
    """Where the teacher-logit cache of (teacher, train split, ``data.max_length``) lives.

    The split fingerprint adds ``data.tasks`` to the suite fingerprint: the cache is indexed
    by train row, and the rows depend on which tasks are kept.
    """
    split = _hash({"data": bundle.fingerprint, "tasks": list(bundle.tasks)})
    return os.path.join(os.path.abspath(cfg.run.cache_dir), "teacher_logits",
                        f"{teacher_key(cfg, bundle.fingerprint)}-{split}-L{cfg.data.max_length}")


def _build_teacher_cache(cfg: Config, bundle: DataBundle) -> None:
    device = resolve_device(cfg.run.device)
    teacher = load_teacher(cfg, bundle).to(device)
    cache = build_teacher_cache(teacher, bundle, make_collator(teacher, bundle, cfg),
                                teacher_cache_dir(cfg, bundle),
                                teacher_key=teacher_key(cfg, bundle.fingerprint), device=device)
    print(f"[teacher cache] {cache.meta['num_positions']} answer positions x "
          f"{cache.vocab_size} vocab ({cache.meta['bytes'] / 2**20:.1f} MiB) in "
          f"{cache.meta['build_s']:.1f}s: {cache.directory}", flush=True)


def vision_key(cfg: Config, vocab_size: int) -> str:
    """The key of a pretrained teacher vision encoder: what determines its weights.

    The teacher architecture and vocabulary size (the whole VLM is initialised from one seed),
    the pretraining settings and seed, and the available image assets; not the conversation
    data, so a teacher retrained on new data reuses the encoder.
    """
    flat = to_flat_dict(cfg)
    parts = {k: v for k, v in flat.items()
             if k.startswith(("model.teacher.", "train.teacher.vision_pretrain."))
             or k == "train.teacher.seed"}
    return _hash({"cfg": parts, "vocab_size": vocab_size, "assets": availability_tag()})


def pretrained_vision(teacher: VLM, cfg: Config, device: torch.device) -> dict[str, Any]:
    """Pretrain ``teacher``'s vision encoder in place (``switchkd.vision_pretrain``), or load it
    from ``{run.cache_dir}/vision/{vision_key}`` where an earlier teacher left it; return the
    pretraining record (probe accuracies)."""
    budget = cfg.train.teacher
    directory = os.path.join(os.path.abspath(cfg.run.cache_dir), "vision",
                             vision_key(cfg, teacher.vocab_size))
    weights, meta = (os.path.join(directory, name)
                     for name in ("vision_tower.safetensors", "vision_pretrain.json"))
    if os.path.isfile(meta):
        try:
            load_model(teacher.vision_tower, weights)
            with open(meta) as f:
                record = json.load(f)
        except (OSError, SafetensorError, RuntimeError, ValueError) as err:
            raise RuntimeError(f"the cached pretrained vision encoder in {directory} cannot be "
                               f"read ({err}); delete that folder to pretrain it again") from err
        print(f"[teacher] vision encoder: pretrained one read from {directory}", flush=True)
        return record
    record = pretrain_vision(teacher, budget.vision_pretrain, seed=budget.seed, device=device,
                             log_every=max(1, budget.vision_pretrain.steps // 10))
    print("[teacher] vision encoder pretrained: " + ", ".join(
        f"{k.split('/')[1]}={v:.1f}" for k, v in record.items()), flush=True)
    os.makedirs(os.path.dirname(directory), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".vision.tmp-", dir=os.path.dirname(directory))
    save_model(teacher.vision_tower, os.path.join(tmp, os.path.basename(weights)))
    with open(os.path.join(tmp, os.path.basename(meta)), "w") as f:
        json.dump(record, f, indent=2)
    if os.path.isdir(directory):  # another process finished the same pretraining first
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, directory)
    return record


def _init_from(teacher: VLM, path: str) -> dict[str, Any]:
    """Copy the weights of the teacher folder ``path`` into ``teacher`` (``init_from``)."""
    try:
        start = load_vlm(path)
    except (OSError, ValueError, SafetensorError) as err:
        raise ValueError(f"train.teacher.init_from={path!r} is not a readable teacher folder "
                         f"({err})") from err
    mine, theirs = teacher.state_dict(), start.state_dict()
    mismatched = sorted(k for k in set(mine) | set(theirs)
                        if k not in mine or k not in theirs or mine[k].shape != theirs[k].shape)
    if mismatched:
        raise ValueError(f"train.teacher.init_from={path!r} does not match model.teacher and "
                         f"the tokenizer: {len(mismatched)} parameters differ, e.g. "
                         f"{mismatched[:3]}")
    teacher.load_state_dict(theirs)
    print(f"[teacher] CE stage starts from the teacher in {path}", flush=True)
    return {"init_from": _teacher_identity(path)}


def train_teacher(cfg: Config, bundle: DataBundle, directory: str) -> dict[str, Any]:
    """Train the teacher with next-token CE on the train split; save it as an HF folder.

    Returns the teacher's record (also written to ``directory/teacher.json``).
    """
    device = resolve_device(cfg.run.device)
    budget = cfg.train.teacher
    tok = bundle.tokenizer
    teacher = build_vlm(cfg.model.teacher, vocab_size=len(tok), image_token_id=image_token_id(tok),
                        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                        eos_token_id=tok.eos_token_id, seed=budget.seed).to(device)
    pretrain_record = {}
    # the option texts of every lookup prompt (pretraining, rehearsal, after-CE probe)
    answers = train_answers(bundle.train) if budget.language_pretrain.enabled else []
    if budget.init_from is not None:
        pretrain_record.update(_init_from(teacher, _init_teacher_folder(cfg)))
    elif budget.vision_pretrain.steps > 0:
        pretrain_record.update(pretrained_vision(teacher, cfg, device))
    if budget.language_pretrain.steps > 0 and budget.init_from is None:
        pretrain_record.update(pretrain_language(
            teacher, budget.language_pretrain, tok, answers, seed=budget.seed,
            device=device, log_every=max(1, budget.language_pretrain.steps // 10)))
        print(f"[teacher] language model pretrained: lookup accuracy "
              f"{pretrain_record['language_pretrain/lookup_acc_before']:.1f} -> "
              f"{pretrain_record['language_pretrain/lookup_acc']:.1f} %", flush=True)
    if budget.freeze_vision:
        teacher.vision_tower.requires_grad_(False)
    rehearsal = None
    if budget.language_pretrain.rehearse_batch_size > 0:
        rehearsal = LookupLoss(tok, answers, seed=budget.seed,
                               batch_size=budget.language_pretrain.rehearse_batch_size,
                               stream="rehearse")
    collator = make_collator(teacher, bundle, cfg)
    optimizer = make_optimizer(teacher, budget.lr, cfg)
    scheduler = make_scheduler(optimizer, budget.warmup_steps, budget.max_steps,
                               cfg.optim.min_lr_ratio)
    start = time.perf_counter()
    teacher.train()
    for step in range(budget.max_steps):
        rows = _rows(bundle.train, batch_indices(len(bundle.train), budget.batch_size, step,
                                                 budget.seed, 0, 1))
        batch = collator.train_batch(rows).to(device)
        with autocast(cfg, device):
            logits = teacher(batch.pixel_values, batch.input_ids, batch.attention_mask).logits
            loss = ce_loss(logits[:, :-1], batch.labels[:, 1:])
            if rehearsal is not None:
                loss = loss + rehearsal(teacher, device)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"teacher training: non-finite loss={loss.item()} at "
                                     f"step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(teacher.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        if step % max(1, budget.max_steps // 20) == 0 or step == budget.max_steps - 1:
            print(f"[teacher] step {step + 1}/{budget.max_steps} "
                  f"{'ce+lookup' if rehearsal else 'ce'}_loss {loss.item():.4f} "
                  f"({time.perf_counter() - start:.0f}s)", flush=True)
    wall = time.perf_counter() - start
    if budget.language_pretrain.enabled:  # did the skill survive the CE stage?
        pretrain_record["language_pretrain/lookup_acc_after_ce"] = lookup_accuracy(
            teacher, tok, lookup_texts(answers), seed=budget.seed, device=device)
    metrics = evaluate(teacher, tok, bundle.val, device=str(device), split="val",
                       mc_response=cfg.data.mc_response)
    record = {"teacher_fingerprint": os.path.basename(directory), "steps": budget.max_steps,
              "train_s": wall, "data_fingerprint": bundle.fingerprint,
              "params": sum(p.numel() for p in teacher.parameters()), **pretrain_record,
              **metrics}
    tmp = f"{directory}.tmp-{os.getpid()}"
    save_hf_folder(teacher, tok, tmp)
    with open(os.path.join(tmp, TEACHER_META), "w") as f:
        json.dump(record, f, indent=2)
    os.replace(tmp, directory)
    print(f"[teacher] saved to {directory} after {wall:.0f}s: "
          + ", ".join(f"{k}={v:.1f}" for k, v in metrics.items() if k.count("/") == 1
                      and "_" not in k.split("/")[1]), flush=True)
    return record


def _install_shipped_teacher(cfg: Config, bundle: DataBundle, directory: str) -> bool:
    """Copy a teacher shipped with the package (``switchkd/teachers/<key>``) into the cache.

    The key hashes the teacher config, its budget and the data fingerprint, so a shipped
    teacher is used only for exactly the data it was trained on; ``teacher.json`` is checked
    too. Retrain instead with ``switchkd teacher --preset P`` after deleting the cache entry.
    """
    shipped = os.path.join(SHIPPED_TEACHERS, teacher_key(cfg, bundle.fingerprint))
    if cfg.model.teacher.path is not None or not os.path.isdir(shipped):
        return False
    with open(os.path.join(shipped, TEACHER_META)) as f:
        recorded = json.load(f)["data_fingerprint"]
    if recorded != bundle.fingerprint:
        raise RuntimeError(f"shipped teacher {shipped} was trained on data {recorded}, "
                           f"but this data is {bundle.fingerprint}")
    tmp = f"{directory}.tmp-{os.getpid()}"
    shutil.copytree(shipped, tmp)
    os.replace(tmp, directory)
    print(f"[teacher] using the shipped teacher {shipped} (data fingerprint "
          f"{bundle.fingerprint} verified)", flush=True)
    return True


def needs_teacher(cfg: Config) -> bool:
    """Distillation needs the teacher, and so does any student whose vision encoder starts as
    the teacher's (``model.student_vision_init=teacher``, SFT included)."""
    return cfg.train.stage == "distill" or cfg.model.student_vision_init == "teacher"


def prepare(cfg: Config) -> dict[str, Any]:
    """Build (or find cached) data and, when ``needs_teacher(cfg)``, the trained teacher.

    Idempotent and safe to call from several processes at once (a file lock for the data, one
    per teacher). Sweeps call it once before launching trials so trials never race to build the
    same cache.
    """
    cache_dir = os.path.abspath(cfg.run.cache_dir)
    with _file_lock(os.path.join(cache_dir, ".prepare.lock")):  # data: one build per cache
        bundle = load_data(cfg.data, cache_dir)
    result = {"data_fingerprint": bundle.fingerprint, "teacher_fingerprint": None}
    if needs_teacher(cfg):
        directory = teacher_dir(cfg, bundle.fingerprint)
        # One lock per teacher: training one (most of an hour on `default`) does not hold up
        # runs whose teacher is already cached.
        lock = os.path.join(os.path.dirname(directory), f".{os.path.basename(directory)}.lock")
        with _file_lock(lock):
            if not os.path.isdir(directory) and not _install_shipped_teacher(cfg, bundle, directory):
                train_teacher(cfg, bundle, directory)
            if cfg.train.stage == "distill" and cfg.train.use_teacher_cache and \
                    not os.path.isdir(teacher_cache_dir(cfg, bundle)):
                _build_teacher_cache(cfg, bundle)
        result["teacher_fingerprint"] = teacher_key(cfg, bundle.fingerprint)
    return result


def load_teacher(cfg: Config, bundle: DataBundle) -> VLM:
    directory = teacher_dir(cfg, bundle.fingerprint)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no trained teacher at {directory}; run "
                                f"`switchkd teacher --preset {cfg.preset}` or call prepare(cfg)")
    return freeze(load_vlm(directory))


# --------------------------------------------------------------------------------------------
# Student stage
# --------------------------------------------------------------------------------------------


def init_models(cfg: Config, bundle: DataBundle,
                device: torch.device) -> tuple[VLM, Optional[VLM]]:
    """The student at step 0, and the frozen teacher for ``train.stage=distill`` (else None).

    With ``model.student_vision_init=teacher`` the student's vision encoder starts as a copy of
    the teacher's in both stages: the SFT baseline then differs from Switch-KD only in its loss,
    as in the paper (one SigLIP shared by teacher, baseline and distilled student).
    """
    student = build_student(cfg, bundle).to(device)
    if not needs_teacher(cfg):
        return student, None
    teacher = load_teacher(cfg, bundle).to(device)
    check_pair(teacher, student)
    if cfg.model.student_vision_init == "teacher":
        copy_vision_encoder(teacher, student)
    return student, (teacher if cfg.train.stage == "distill" else None)


def train(cfg: Config, *, out_dir: Optional[str] = None, report: Optional[Report] = None,
          resume_from: Optional[str] = None) -> dict[str, Any]:
    """Train the student (``train.stage``: ``sft`` = CE only, ``distill`` = Switch-KD).

    Args:
        cfg: the resolved config.
        out_dir: where rank 0 writes ``metrics.jsonl``, ``checkpoint/``, ``student/`` (HF
            folder) and ``result.json``; ``None`` writes nothing but checkpoints for ``report``
            (into a temporary folder).
        report: called on every rank after each evaluation and at the end with
            ``(metrics, checkpoint_dir)``; ``checkpoint_dir`` is set on rank 0 only and is
            valid until ``report`` returns.
        resume_from: a checkpoint folder to continue from.

    Returns:
        The final result: ``cfg.*`` keys, fingerprints, final ``train/*`` and ``val/*``
        metrics and cost counters.

    Raises:
        NonFiniteLossError: the loss became NaN/inf (names the step and the part).
    """
    t0 = time.perf_counter()
    torch.manual_seed(cfg.run.seed)
    rank, world = distributed_info()
    device = resolve_device(cfg.run.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", torch.cuda.current_device())
    if cfg.train.batch_size % (world * cfg.train.grad_accum_steps):
        raise ValueError(f"train.batch_size={cfg.train.batch_size} is not divisible by "
                         f"{world} workers x train.grad_accum_steps={cfg.train.grad_accum_steps}")
    provenance = prepare(cfg)
    bundle = load_data(cfg.data, os.path.abspath(cfg.run.cache_dir))
    student, teacher = init_models(cfg, bundle, device)
    cache = None
    if teacher is not None and cfg.train.use_teacher_cache:
        cache = open_teacher_cache(teacher_cache_dir(cfg, bundle))
        cache.check_matches(num_rows=len(bundle.train), vocab_size=teacher.vocab_size)
    model = DistributedDataParallel(student) if world > 1 else student
    collator = make_collator(student, bundle, cfg)
    optimizer = make_optimizer(student, cfg.optim.lr, cfg)
    scheduler = make_scheduler(optimizer, cfg.optim.warmup_steps, cfg.train.max_steps,
                               cfg.optim.min_lr_ratio)
    state = TrainState(step=0, samples=0, counters={"teacher_forward_passes": 0,
                                                    "teacher_backward_passes": 0, "train_s": 0.0})
    if resume_from is not None:
        state, _ = load_checkpoint(resume_from, student, optimizer, scheduler)
    writer = _RunWriter(out_dir if rank == 0 else None)
    accum = cfg.train.grad_accum_steps
    # Per-part sums and counts over the log window: diagnostics (Kneedle k, top-1 agreement)
    # exist only on the window's last step, so each part is averaged over its own count.
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    last_train: dict[str, float] = {}
    metrics: dict[str, Any] = {}

    # --- loop: one optimizer step per iteration ---
    while state.step < cfg.train.max_steps:
        step_start = time.perf_counter()
        model.train()
        optimizer.zero_grad(set_to_none=True)
        for micro in range(accum):
            shard = rank * accum + micro
            indices = batch_indices(len(bundle.train), cfg.train.batch_size, state.step,
                                    cfg.run.seed, shard, world * accum)
            rows = _rows(bundle.train, indices)
            batch = collator.train_batch(rows).to(device)
            cached = None if cache is None else cache.logits_for(indices).to(device)  # (n, V)
            generator = torch.Generator().manual_seed(cfg.run.seed * 1_000_003 + state.step * 97 + shard)
            sync = contextlib.nullcontext() if micro == accum - 1 or world == 1 else model.no_sync()
            with sync:
                with autocast(cfg, device):
                    error = None
                    try:
                        out = distill_step(model, teacher, batch, cfg.loss, generator=generator,
                                           teacher_checkpointing=cfg.train.teacher_activation_checkpointing,
                                           diagnostics=_logs_after(state.step + 1, cfg),
                                           teacher_answer_logits=cached)
                    except ValueError as err:  # the losses reject non-finite logits
                        if "non-finite" not in str(err):
                            raise
                        error = f"step {state.step}: {err}"
                # A NaN must stop the run at the step it appears, so this syncs every step.
                if error is None and not torch.isfinite(out.loss):
                    error = f"non-finite loss at step {state.step}: " + ", ".join(
                        f"{k}={v.item()}" for k, v in out.parts.items() if not torch.isfinite(v))
                if _on_any_rank(error is not None, world, device):
                    raise writer.failed(
                        NonFiniteLossError(error or f"step {state.step}: non-finite loss on "
                                                    f"another rank"),
                        _result(cfg, provenance, metrics, time.perf_counter() - t0))
                (out.loss / accum).backward()
            for name, value in out.parts.items():
                sums[name] = sums.get(name, 0) + value.float()
                counts[name] = counts.get(name, 0) + 1
            state.counters["teacher_forward_passes"] += out.teacher_forward_passes
            state.counters["teacher_backward_passes"] += out.teacher_backward_passes
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        state.step += 1
        state.samples += cfg.train.batch_size
        state.counters["train_s"] += time.perf_counter() - step_start

        # --- logging (the only .item() calls) ---
        if _logs_after(state.step, cfg):
            last_train = {f"train/{k}": (v / counts[k]).item() for k, v in sums.items()}
            last_train["train/lr"] = scheduler.get_last_lr()[0]
            sums, counts = {}, {}
            writer.log({"step": state.step, **last_train, **_cost(state, t0)})
            if rank == 0:  # progress on stdout (Ray forwards workers' stdout to the driver)
                print(f"[train {cfg.run.name}] step {state.step}/{cfg.train.max_steps} "
                      f"loss {last_train['train/loss']:.4f} "
                      f"({_cost(state, t0)['samples_per_s']:.1f} samples/s)", flush=True)

        # --- evaluation, checkpoint, report ---
        last = state.step == cfg.train.max_steps
        if state.step % cfg.train.eval_every == 0 or last:
            val = _evaluate_on_rank0(student, bundle, device, rank, world,
                                     mc_response=cfg.data.mc_response)
            metrics = {"step": state.step, **last_train, **val, **_cost(state, t0)}
            writer.log(metrics)
            ckpt = None
            if rank == 0 and (state.step % cfg.train.checkpoint_every == 0 or last):
                ckpt = save_checkpoint(writer.checkpoint_dir(), student, optimizer, scheduler,
                                       state, cfg)
            if report is not None:
                report(metrics, ckpt)

    # --- final artefacts ---
    result = _result(cfg, provenance, metrics, time.perf_counter() - t0)
    if rank == 0 and out_dir is not None:
        save_hf_folder(student, bundle.tokenizer, os.path.join(out_dir, "student"))
        writer.write_result(result)
    return result


def _result(cfg: Config, provenance: dict[str, Any], metrics: dict[str, Any],
            wall_s: float) -> dict[str, Any]:
    """The flat result record (``result.json``; the same columns as a sweep's Parquet row).

    A failed run's record is rewritten by ``_RunWriter.failed`` with status ``errored``."""
    return {
        "study": "single", "trial_id": cfg.run.name, "schema_version": RESULT_SCHEMA_VERSION,
        "status": "completed", "error": None,
        "seed": cfg.run.seed, "git_sha": git_sha(), **provenance,
        **{f"cfg.{k}": v for k, v in to_flat_dict(cfg).items()},
        **metrics, "wall_s": wall_s,
    }


def _logs_after(step: int, cfg: Config) -> bool:
    """Whether training logs after ``step`` (1-based): every ``log_every`` steps and at the end."""
    return step % cfg.train.log_every == 0 or step == cfg.train.max_steps


def _on_any_rank(flag: bool, world: int, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any (ranks must stop together, or the others
    would wait forever in the next gradient all-reduce)."""
    if world == 1:
        return flag
    value = torch.tensor(float(flag), device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _cost(state: TrainState, t0: float) -> dict[str, float]:
    train_s = state.counters["train_s"]
    return {"steps": state.step, "samples": state.samples, "train_s": train_s,
            "wall_s": time.perf_counter() - t0,
            "samples_per_s": state.samples / train_s if train_s > 0 else 0.0,
            "teacher_forward_passes": state.counters["teacher_forward_passes"],
            "teacher_backward_passes": state.counters["teacher_backward_passes"]}


def _evaluate_on_rank0(student: VLM, bundle: DataBundle, device: torch.device, rank: int,
                       world: int, *, mc_response: str) -> dict[str, float]:
    """Validation on rank 0, broadcast to the other ranks (they must report the same keys)."""
    metrics = [evaluate(student, bundle.tokenizer, bundle.val, device=str(device), split="val",
                        mc_response=mc_response) if rank == 0 else None]
    if world > 1:
        dist.broadcast_object_list(metrics, src=0)
    return metrics[0]


class _RunWriter:
    """Rank 0's files under ``out_dir``: metrics.jsonl (appended), checkpoint/, result.json."""

    def __init__(self, out_dir: Optional[str]):
        self.out_dir = out_dir
        if out_dir is None:  # checkpoints only live until report() has persisted them
            self._scratch = tempfile.TemporaryDirectory(prefix="switchkd-ckpt-")
        else:
            os.makedirs(out_dir, exist_ok=True)

    def checkpoint_dir(self) -> str:
        root = self.out_dir if self.out_dir is not None else self._scratch.name
        return os.path.join(root, "checkpoint")

    def log(self, record: dict[str, Any]) -> None:
        if self.out_dir is None:
            return
        with open(os.path.join(self.out_dir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")

    def failed(self, error: Exception, result: dict[str, Any]) -> Exception:
        """Record a failed run (metrics.jsonl line + result.json with status errored)."""
        self.log({"error": str(error)})
        if self.out_dir is not None:
            self.write_result({**result, "status": "errored", "error": str(error)})
        return error

    def write_result(self, result: dict[str, Any]) -> None:
        path = os.path.join(self.out_dir, "result.json")
        with open(f"{path}.tmp", "w") as f:
            json.dump(result, f, indent=2)
        os.replace(f"{path}.tmp", path)


# --------------------------------------------------------------------------------------------
# Finished runs: test scores and export (for sweeps, which see only this module's surface)
# --------------------------------------------------------------------------------------------


def _trained_student(cfg: Config, checkpoint_dir: str) -> tuple[VLM, DataBundle]:
    """The student of ``cfg`` with the weights of ``checkpoint_dir``, and the run's data."""
    bundle = load_data(cfg.data, os.path.abspath(cfg.run.cache_dir))
    student = build_student(cfg, bundle)
    load_checkpoint(checkpoint_dir, student)
    return student, bundle


def evaluate_run(cfg: Config, checkpoint_dir: str, *,
                 split: str = "test") -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Score a checkpoint's student on ``split`` (``test`` or ``val``) of the run's data.

    Returns:
        ``({split}/... metrics as evaluation.evaluate returns them, with the multiple-choice
        tasks' cloze accuracy ``{split}/{task}_cloze``, per-item records)``; each
        record has ``task``, ``index`` (row in the split), ``prediction`` and ``score`` (0-1),
        the inputs of paired tests over items.

    Raises:
        ValueError: ``split`` is not ``test`` or ``val``, or the data has no such split (LLaVA).
        CheckpointError: the checkpoint does not fit ``cfg``'s student.
    """
    from switchkd.evaluation.evaluate import metrics_from_records, predict

    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    student, bundle = _trained_student(cfg, checkpoint_dir)
    rows = bundle.test if split == "test" else bundle.val
    if rows is None:
        raise ValueError(f"data.kind={cfg.data.kind!r} has no {split} split")
    device = resolve_device(cfg.run.device)
    records = predict(student.to(device), bundle.tokenizer, rows, device=str(device), cloze=True,
                      mc_response=cfg.data.mc_response)
    return metrics_from_records(records, split=split), records


def export_student(cfg: Config, checkpoint_dir: str, out_dir: str) -> str:
    """Write a checkpoint's student as a Hugging Face folder (weights, tokenizer, processor)
    that ``LlavaForConditionalGeneration.from_pretrained`` loads without switchkd."""
    student, bundle = _trained_student(cfg, checkpoint_dir)
    return save_hf_folder(student, bundle.tokenizer, out_dir)
