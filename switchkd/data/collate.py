"""Collate rows of the item schema (``switchkd.data.format``) into model-ready ``Batch`` es.

Every text segment (the user part and the answer part of each turn) is tokenized on its own and
the ids are concatenated, so the boundary between prompt and supervised answer is exact: the
labels are the answer tokens and their ``<eos>`` and nothing else. The single ``<image>``
placeholder of the first turn becomes ``num_image_tokens`` consecutive image-token ids, and a
sequence always starts with ``<bos>``::

    <bos> <image>*N \\nUSER: q1 ASSISTANT: [ a1 <eos>] USER: q2 ASSISTANT: [ a2 <eos>] <pad>...
                                           ^^^^^^^^^ labels            ^^^^^^^^^ labels

Shapes: B rows, T text positions (the N image positions included), H = W = ``image_size``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from switchkd.data.batch import Batch
from switchkd.data.format import (IMAGE_TOKEN, MC_RESPONSES, OPTION_LETTERS, answer_text,
                                  format_mc_question, mc_answer, parse_mc_question,
                                  strip_image_placeholder, user_text)

IGNORE_INDEX = -100

Row = Mapping[str, Any]


def image_to_tensor(image: Image.Image, image_size: int) -> torch.Tensor:
    """A PIL image as a SigLIP-normalised tensor.

    The image is converted to RGB, resized to ``image_size`` x ``image_size`` with BICUBIC
    resampling when its size differs (no crop: the aspect ratio is not kept, as in the SigLIP
    processor), scaled by 1/255 and normalised with mean 0.5 and std 0.5 per channel.

    Shapes:
        returns (3, image_size, image_size) float32 in [-1, 1].
    """
    image = image.convert("RGB")
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.float32)  # (H, W, 3) in [0, 255]
    return normalize_pixels(torch.from_numpy(array).permute(2, 0, 1))  # (3, H, W)


def normalize_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """Float pixels in [0, 255], channels first, scaled by 1/255 and normalised with mean 0.5
    and std 0.5 (SigLIP). Shapes: (..., 3, H, W) -> the same, in [-1, 1]."""
    return (pixels / 255.0 - 0.5) / 0.5


def rotate_options(num_options: int, shift: int) -> list[int]:
    """The CircularEval option order for one rotation.

    Position ``j`` of the rotated question shows original option ``order[j]``; ``shift=0`` is
    the original order.
    """
    return [(j + shift) % num_options for j in range(num_options)]


class Collator:
    """Turns rows into ``Batch`` es for training, teacher-forced evaluation and generation.

    Args:
        tokenizer: the shared tokenizer (needs ``<bos>``, ``<eos>``, ``<pad>`` and ``<image>``).
        num_image_tokens: N, the model's number of visual tokens (the image block length).
        image_size: side of the square model input in pixels.
        max_length: the longest sequence ``train_batch`` / ``eval_batch`` emit and the longest
            prompt ``prompt_batch`` accepts.
        mc_response: how multiple-choice questions are answered (``data.mc_response``):
            ``"letter"`` (the stored form: the option's letter) or ``"text_letter"`` (the
            option's text, then its letter, ``"blue (B)"``). With ``"text_letter"`` the train
            rows' letter-answered MC turns are rewritten to it and prompts ask for it.

    Raises:
        ValueError: a special token is missing, or ``max_length`` cannot hold ``<bos>``, the
            image block and at least one more token, or ``mc_response`` is unknown.
    """

    def __init__(self, tokenizer, *, num_image_tokens: int, image_size: int, max_length: int,
                 mc_response: str = "letter"):
        if num_image_tokens < 1 or image_size < 1:
            raise ValueError(f"num_image_tokens ({num_image_tokens}) and image_size "
                             f"({image_size}) must be >= 1")
        if max_length < num_image_tokens + 2:
            raise ValueError(f"max_length={max_length} cannot hold <bos>, the {num_image_tokens} "
                             "image tokens and any text; raise data.max_length")
        if mc_response not in MC_RESPONSES:
            raise ValueError(f"mc_response={mc_response!r}; valid: {list(MC_RESPONSES)}")
        self.tokenizer = tokenizer
        self.mc_response = mc_response
        self.num_image_tokens = num_image_tokens
        self.image_size = image_size
        self.max_length = max_length
        self.bos_id = _special_id(tokenizer, tokenizer.bos_token_id, "bos")
        self.eos_id = _special_id(tokenizer, tokenizer.eos_token_id, "eos")
        self.pad_id = _special_id(tokenizer, tokenizer.pad_token_id, "pad")
        self.image_id = _special_id(tokenizer, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                                    "image")

    # --- public batches -------------------------------------------------------------------

    def train_batch(self, rows: Sequence[Row]) -> Batch:
        """Right-padded batch of multi-turn train rows (``conversations``).

        Human turns must alternate with gpt turns, starting with a human turn; a leading
        ``<image>`` in a human value is stripped (the image block always comes first). Rows
        longer than ``max_length`` lose whole trailing turns; if even the first turn does not
        fit, its text is cut at ``max_length`` (never inside the image block).

        Shapes:
            pixel_values (B, 3, H, W) float32; input_ids, attention_mask, labels (B, T) int64,
            T <= max_length.

        Raises:
            ValueError: malformed conversations, or an ``<image>`` placeholder that is not the
                leading one of a human turn.
        """
        turns = [_conversation_turns(row) for row in rows]
        if self.mc_response != "letter":
            turns = [[self._respond(question, answer) for question, answer in row_turns]
                     for row_turns in turns]
        return self._batch(rows, turns)

    def eval_batch(self, rows: Sequence[Row]) -> Batch:
        """Right-padded batch of single-turn val/test rows: ``question`` -> ``answer`` as one turn.

        Multiple-choice rows (non-empty ``options``) render the options with
        ``format_mc_question`` (Chinese instructions for ``mmbcn``) and their ``answer`` is the
        correct letter (``mc_answer`` of the correct option). Shapes as in ``train_batch``.
        """
        turns = [[(self.question_text(row), self.answer(row))] for row in rows]
        return self._batch(rows, turns)

    def prompt_batch(self, rows: Sequence[Row],
                     options_order: Sequence[Sequence[int] | None] | None = None) -> Batch:
        """LEFT-padded prompts without answers, for generation and option scoring.

        Each row is ``<bos> <image>*N \\nUSER: {question} ASSISTANT:`` and the last position of
        every row is the last prompt token, so ``logits[:, -1]`` predicts the first answer
        token. ``options_order[b]`` reorders row b's options (see ``rotate_options``); ``None``
        keeps the stored order. ``labels`` is all -100.

        Shapes:
            pixel_values (B, 3, H, W) float32; input_ids, attention_mask, labels (B, P) int64.

        Raises:
            ValueError: a prompt is longer than ``max_length`` (prompts are never truncated).
        """
        if options_order is None:
            options_order = [None] * len(rows)
        if len(options_order) != len(rows):
            raise ValueError(f"options_order has {len(options_order)} entries for "
                             f"{len(rows)} rows")
        texts = [user_text(self.question_text(row, order), first_turn=True)
                 for row, order in zip(rows, options_order)]
        sequences = []
        for row, ids in zip(rows, self._tokenize(texts)):
            ids = [self.bos_id] + self._expand_image(ids, row)
            if len(ids) > self.max_length:
                raise ValueError(f"{row.get('task', '?')} prompt has {len(ids)} tokens, more than "
                                 f"max_length={self.max_length}: {row.get('question', '')[:80]!r}")
            sequences.append(ids)
        width = max(len(ids) for ids in sequences)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)  # (B, P)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, P)
        for b, ids in enumerate(sequences):
            input_ids[b, width - len(ids):] = torch.tensor(ids)
            attention_mask[b, width - len(ids):] = 1
        return Batch(pixel_values=self.pixel_values(rows), input_ids=input_ids,
                     attention_mask=attention_mask,
                     labels=torch.full_like(input_ids, IGNORE_INDEX))

    # --- helpers shared with evaluation ----------------------------------------------------

    def question_text(self, row: Row, order: Sequence[int] | None = None) -> str:
        """The question as the model sees it: options rendered for multiple-choice rows.

        ``order`` lists original option indices in display order (``None``: stored order).
        """
        options = list(row.get("options") or [])
        if not options:
            return str(row["question"])
        if len(options) > len(OPTION_LETTERS):
            raise ValueError(f"{row.get('task', '?')} item has {len(options)} options; at most "
                             f"{len(OPTION_LETTERS)} letters exist")
        if order is not None:
            if sorted(order) != list(range(len(options))):
                raise ValueError(f"options order {list(order)} is not a permutation of "
                                 f"{len(options)} options")
            options = [options[i] for i in order]
        return format_mc_question(str(row["question"]), options,
                                  chinese=row.get("task") == "mmbcn", response=self.mc_response)

    def answer(self, row: Row) -> str:
        """The reference answer of a val/test row in this collator's response format."""
        options = list(row.get("options") or [])
        if not options or self.mc_response == "letter":
            return str(row["answer"])
        return mc_answer(options, OPTION_LETTERS.index(str(row["answer"]).strip().upper()),
                         response=self.mc_response)

    def answer_ids(self, answers: Sequence[str]) -> list[list[int]]:
        """Token ids of ``answer_text(a)`` for each answer (no ``<eos>``)."""
        return self._tokenize([answer_text(a) for a in answers])

    def pixel_values(self, rows: Sequence[Row]) -> torch.Tensor:
        """Shapes: returns (B, 3, H, W) float32."""
        return torch.stack([image_to_tensor(row["image"], self.image_size) for row in rows])

    # --- internals ------------------------------------------------------------------------

    def _respond(self, question: str, answer: str) -> tuple[str, str]:
        """A train turn in this collator's MC response format (non-MC turns unchanged)."""
        parsed = parse_mc_question(question)
        if parsed is None or answer.strip() not in OPTION_LETTERS[:len(parsed[1])]:
            return question, answer
        stem, options, chinese = parsed
        return (format_mc_question(stem, options, chinese=chinese, response=self.mc_response),
                mc_answer(options, OPTION_LETTERS.index(answer.strip()),
                          response=self.mc_response))

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]

    def _expand_image(self, ids: list[int], row: Row) -> list[int]:
        """Replace the single ``<image>`` id of a first user segment by the N-token block."""
        where = [i for i, t in enumerate(ids) if t == self.image_id]
        if len(where) != 1:
            raise ValueError(f"{row.get('task', '?')} row: expected exactly one <image> "
                             f"placeholder in the first user turn, found {len(where)}")
        i = where[0]
        return ids[:i] + [self.image_id] * self.num_image_tokens + ids[i + 1:]

    def _encode(self, row: Row, turns: list[tuple[str, str]]) -> tuple[list[int], list[int]]:
        """(input_ids, labels) of one row, unpadded, truncated to ``max_length``."""
        texts = []
        for k, (question, answer) in enumerate(turns):
            texts += [user_text(question, first_turn=k == 0), answer_text(answer)]
        pieces = self._tokenize(texts)
        if any(self.image_id in piece for piece in pieces[1:]):
            raise ValueError(f"{row.get('task', '?')} row: an <image> placeholder outside the "
                             "start of the first turn; only the first turn carries the image")
        pieces[0] = [self.bos_id] + self._expand_image(pieces[0], row)
        image_end = pieces[0].index(self.image_id) + self.num_image_tokens
        if image_end > self.max_length:
            raise ValueError(f"max_length={self.max_length} cuts the image block, which ends at "
                             f"position {image_end}; raise data.max_length")

        ids: list[int] = []
        labels: list[int] = []
        for k in range(0, len(pieces), 2):
            user, answer = pieces[k], pieces[k + 1] + [self.eos_id]
            if ids and len(ids) + len(user) + len(answer) > self.max_length:
                break  # drop this and every later turn
            ids += user + answer
            labels += [IGNORE_INDEX] * len(user) + answer
        return ids[:self.max_length], labels[:self.max_length]

    def _batch(self, rows: Sequence[Row], turns: list[list[tuple[str, str]]]) -> Batch:
        if not rows:
            raise ValueError("cannot collate an empty list of rows")
        encoded = [self._encode(row, row_turns) for row, row_turns in zip(rows, turns)]
        width = max(len(ids) for ids, _ in encoded)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)  # (B, T)
        for b, (ids, row_labels) in enumerate(encoded):
            input_ids[b, :len(ids)] = torch.tensor(ids)
            attention_mask[b, :len(ids)] = 1
            labels[b, :len(ids)] = torch.tensor(row_labels)
        return Batch(pixel_values=self.pixel_values(rows), input_ids=input_ids,
                     attention_mask=attention_mask, labels=labels)


def _special_id(tokenizer, token_id: int | None, name: str) -> int:
    if token_id is None or token_id == tokenizer.unk_token_id:
        raise ValueError(f"tokenizer has no <{name}> token; build it with train_tokenizer")
    return int(token_id)


def _conversation_turns(row: Row) -> list[tuple[str, str]]:
    """(question, answer) pairs of a train row's ``conversations``."""
    task = row.get("task", "?")
    conversations = row.get("conversations")
    if not conversations or len(conversations) % 2:
        raise ValueError(f"{task} train row needs a non-empty, even-length 'conversations' list "
                         f"(human, gpt, ...); got {len(conversations or [])} messages")
    turns = []
    for k in range(0, len(conversations), 2):
        human, gpt = conversations[k], conversations[k + 1]
        if human.get("from") != "human" or gpt.get("from") != "gpt":
            raise ValueError(f"{task} train row: messages {k} and {k + 1} have roles "
                             f"{human.get('from')!r}, {gpt.get('from')!r}; expected 'human', 'gpt'")
        question = strip_image_placeholder(str(human["value"]))
        if IMAGE_TOKEN in question or IMAGE_TOKEN in str(gpt["value"]):
            raise ValueError(f"{task} train row: message {k} holds an <image> placeholder that "
                             "is not the leading one of a human turn")
        turns.append((question, str(gpt["value"])))
    return turns
