"""Pretrain a VLM's language model on text-only option lookup (the stand-in for a pretrained LLM).

In the paper, teacher and student language models are pretrained LLMs (Qwen2.5), which already
answer "Answer with the option's letter" prompts. Ours are built from config. Trained only on
the MiniVL-10 conversations, the default teacher answered the open-ended form of questions
(VQAv2 63.8) but stayed at chance on all four multiple-choice tasks, even on its own train
items (teacher 44195a6a43d48d88, issue #5): a multiple-choice answer composes perception with an
in-context lookup (find the option that holds the answer, copy its letter), and the lookup
never formed. Pilots on 2 cores: 900 lookup-only steps at lr 1e-3 stayed at chance; at lr 3e-4
accuracy rose from 35 % to 84 % in 900 steps.

Off in the presets (``tiny`` runs 10 steps and rehearses, to exercise both paths). Measured on
``default``: 1,500 steps reach 78.1 % lookup accuracy, but after the CE stage (peak lr 1e-3, or
3e-4) the skill is gone (2.5 %; docs/RESULTS.md section 8). Rehearsing it in every CE step
(``LookupLoss``, ``language_pretrain.rehearse_batch_size``) keeps it (87.3 % after CE), yet the
four multiple-choice tasks stay at chance and the other tasks lose 8 points (section 9): the
model does the lookup when the answer is written in the prompt, not when it has to perceive it.

``pretrain_language`` trains the language model (embeddings, blocks and head; no image) on
prompts ``Which option says {text}?`` over 2-5 lettered options, rendered exactly like the
suite's multiple-choice questions (``format_mc_question``), with the letter as the target. The
option texts are the short answers of the train split, so no val/test string is used.

Shapes: B prompts, P prompt length (left-padded), V vocabulary.
"""

from __future__ import annotations

import random
import re
from typing import Any, Sequence

import torch
from torch.nn import functional as F

from switchkd.config import LanguagePretrainConfig
from switchkd.data.format import OPTION_LETTERS, answer_text, format_mc_question, user_text
from switchkd.models.vlm import VLM
from switchkd.pretrain_loop import run_pretraining

PROBE_PROMPTS = 512  # held-out lookups (their own seed stream) for the reported accuracy
MAX_WORDS = 3  # option texts: train answers of at most this many words
_CJK = re.compile(r"[\u4e00-\u9fff]")


def lookup_question(text: str, *, chinese: bool = False) -> str:
    """Which option holds ``text``. ``text`` follows a space and is not quoted, so it tokenizes as
    in the option line (a quote fuses with the word into other tokens, and the match is no
    longer a token-level copy)."""
    return f"哪个选项是 {text}？" if chinese else f"Which option says {text}?"


def lookup_texts(answers: Sequence[str]) -> dict[str, list[str]]:
    """Option texts by language: the distinct short answers (not option letters), sorted."""
    texts = sorted({a.strip() for a in answers if a.strip() and "\n" not in a
                    and len(a.split()) <= MAX_WORDS and a.strip() not in OPTION_LETTERS})
    return {"en": [t for t in texts if not _CJK.search(t)],
            "cn": [t for t in texts if _CJK.search(t)]}


def lookup_prompts(texts: dict[str, list[str]], rng: random.Random,
                   n: int) -> tuple[list[str], list[str]]:
    """``n`` lookup prompts (unsupervised text of one first turn) and their answer letters.

    A quarter are Chinese (as ``mmbcn``) when Chinese option texts exist.
    """
    prompts, letters = [], []
    for _ in range(n):
        chinese = len(texts["cn"]) >= 5 and rng.random() < 0.25
        pool = texts["cn" if chinese else "en"]
        options = rng.sample(pool, rng.randint(2, min(5, len(pool))))
        target = rng.randrange(len(options))
        question = format_mc_question(lookup_question(options[target], chinese=chinese),
                                      options, chinese=chinese)
        prompts.append(user_text(question, first_turn=False))
        letters.append(OPTION_LETTERS[target])
    return prompts, letters


def _encode(tokenizer, prompts: list[str], letters: list[str],
            device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded ``<bos> prompt`` ids (B, P), attention mask (B, P) and target ids (B,)."""
    rows = [[tokenizer.bos_token_id] + ids
            for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    targets = [tokenizer(answer_text(letter), add_special_tokens=False)["input_ids"][0]
               for letter in letters]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, ids in enumerate(rows):
        input_ids[b, width - len(ids):] = torch.tensor(ids)
        attention_mask[b, width - len(ids):] = 1
    return input_ids.to(device), attention_mask.to(device), torch.tensor(targets, device=device)


def _next_token_logits(vlm: VLM, input_ids: torch.Tensor,
                       attention_mask: torch.Tensor) -> torch.Tensor:
    """Text-only LM logits at the last position: (B, P) -> (B, V)."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, P)
    hidden = vlm.language_model(input_ids=input_ids, attention_mask=attention_mask,
                                position_ids=position_ids).last_hidden_state  # (B, P, D)
    return vlm.hf.get_output_embeddings()(hidden[:, -1])  # (B, V)


@torch.no_grad()
def lookup_accuracy(vlm: VLM, tokenizer, texts: dict[str, list[str]], *, seed: int,
                    device: torch.device, n: int = PROBE_PROMPTS) -> float:
    """Percent of held-out lookup prompts whose most likely next token is the right letter."""
    prompts, letters = lookup_prompts(texts, random.Random(f"lookup-probe-{seed}"), n)
    input_ids, attention_mask, targets = _encode(tokenizer, prompts, letters, device)
    was_training = vlm.training
    vlm.eval()
    logits = _next_token_logits(vlm, input_ids, attention_mask)  # (B, V)
    vlm.train(was_training)
    return 100.0 * float((logits.argmax(-1) == targets).float().mean())


class LookupLoss:
    """CE of the answer letter on fresh lookup prompts; one draw of ``batch_size`` per call.

    Shared by ``pretrain_language`` and the rehearsal inside the teacher's CE stage
    (``language_pretrain.rehearse_batch_size``). Deterministic in ``seed`` and ``stream``.
    """

    def __init__(self, tokenizer, answers: Sequence[str], *, batch_size: int, seed: int,
                 stream: str = "train"):
        self.texts = lookup_texts(answers)
        if len(self.texts["en"]) < 5:
            raise ValueError(f"lookup prompts need at least 5 distinct short train answers, "
                             f"got {len(self.texts['en'])}")
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.rng = random.Random(f"lookup-{stream}-{seed}")

    def __call__(self, vlm: VLM, device: torch.device) -> torch.Tensor:
        input_ids, attention_mask, targets = _encode(
            self.tokenizer, *lookup_prompts(self.texts, self.rng, self.batch_size), device)
        return F.cross_entropy(_next_token_logits(vlm, input_ids, attention_mask), targets)


def pretrain_language(vlm: VLM, cfg: LanguagePretrainConfig, tokenizer, answers: Sequence[str],
                      *, seed: int, device: torch.device, log_every: int = 0) -> dict[str, Any]:
    """Train ``vlm``'s language model in place for ``cfg.steps`` lookup steps; return a record.

    ``answers``: the train split's answer strings (the option texts are drawn from them). Fresh
    prompts every step, deterministic in ``seed``; AdamW with warmup and cosine decay; CE of the
    answer letter at the last prompt position.
    """
    lookup_loss = LookupLoss(tokenizer, answers, batch_size=cfg.batch_size, seed=seed)
    texts = lookup_loss.texts
    params = [p for p in vlm.language_parameters() if p.requires_grad]
    before = lookup_accuracy(vlm, tokenizer, texts, seed=seed, device=device)
    was_training = vlm.training
    vlm.train()
    final_loss, seconds = run_pretraining("language pretraining", params,
                                          lambda step: lookup_loss(vlm, device), steps=cfg.steps,
                                          lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                                          weight_decay=0.0, log_every=log_every)
    vlm.train(was_training)
    return {"language_pretrain/steps": cfg.steps,
            "language_pretrain/final_loss": final_loss,
            "language_pretrain/seconds": seconds,
            "language_pretrain/lookup_acc_before": before,
            "language_pretrain/lookup_acc": lookup_accuracy(vlm, tokenizer, texts, seed=seed,
                                                            device=device)}
