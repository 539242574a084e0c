"""Batched evaluation of a VLM on MiniVL-10 rows: ``predict`` (per item) and ``evaluate`` (metrics).

Three ways to answer, chosen per row:

* **multiple choice** (non-empty ``options``): option-letter likelihood. One forward of the
  prompt with the options rendered; the letters' answer tokens (``answer_text("A")`` ...,
  restricted to the row's letters) are compared at the last prompt position (see "Candidate
  comparison" below), so a model never loses points for format. ``mmb`` / ``mmbcn`` are scored
  under every rotation of the options (CircularEval) and also report the vanilla (rotation 0)
  accuracy.
  With ``cloze=True`` multiple-choice rows are also scored in the **cloze formulation** (OLMES,
  Gu et al. 2024; lm-eval's option-text scoring): the question stem alone, as an open-ended
  question with no options shown, and each option's text (plus ``<eos>``) scored as the answer
  by its summed log-probability, i.e. the probability that the model's open answer is exactly
  that option. It separates knowing the answer from binding it to a letter, which small LMs
  learn late. Reported as ``{task}_cloze``; the primary metric stays the letter protocol.
  A model trained with ``mc_response="text_letter"`` (``data.mc_response``: it answers with the
  option's text, then its letter, "blue (B)") is asked for that format and scored on whole
  answers: each displayed option's ``mc_answer`` (text and letter) plus ``<eos>`` by summed
  log-probability after the prompt with the options shown, per rotation; the most likely
  well-formed answer is the model's choice (constrained decoding over the K valid answers). It
  is the same item, options, rotations and scorer (right letter per rotation) as the letter
  protocol; only the answer format the model was trained to give differs.
* **yes/no** (``mme``, ``pope``): the same comparison between ``answer_text("yes")`` and
  ``answer_text("no")``: cheaper than decoding and format-proof.
* **open-ended** (everything else): batched greedy decoding from left-padded prompts, at most
  ``max_new_tokens`` tokens, stopping at ``<eos>``. There is no KV cache (answers are 1-4
  tokens): each step re-runs ``lm_logits`` on the grown sequence; the image embeddings are
  computed once per batch.

Candidate comparison: the candidates' token ids usually part ways at one position: at the first
token (single-token letters and yes/no in a trained tokenizer), or after a shared prefix (a small
BPE that splits " yes" / " no" into " " + "y" "es" / " " + "n" "o"). Then one forward of the
prompt (plus the shared prefix) decides by the log-probabilities of the branching tokens: the
choice a greedy decoder restricted to the candidates would commit to. Otherwise (e.g. " A" is one
token but " D" and " E" both start with " ") each candidate is appended to the prompt and the
summed log-probability of its tokens is compared (lm-eval style), at K forwards per prompt.

Shapes: B prompts, P prompt positions (N image positions included), K candidates,
L longest candidate, V vocabulary.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch

from switchkd.data.collate import Collator, rotate_options
from switchkd.data.format import OPTION_LETTERS, mc_answer
from switchkd.evaluation import metrics

if TYPE_CHECKING:
    import datasets

    from switchkd.models.vlm import VLM

YES_NO = ("yes", "no")


def evaluate(model: VLM, tokenizer, rows: datasets.Dataset, *, batch_size: int = 64,
             device: str = "cpu", split: str = "val", blind: bool = False,
             max_new_tokens: int = 8, cloze: bool = False,
             mc_response: str = "letter") -> dict[str, float]:
    """Score ``model`` on ``rows`` (val/test item schema) and return flat metrics.

    Keys: ``{split}/{task}`` (primary metric, percent), ``{split}/{task}_{sub}`` (extras, see
    ``metrics.task_metrics``; MME ``_score`` / ``_total`` keys use MME's 0-200 / 0-1000 scale),
    ``{split}/group_{name}`` for each group whose tasks are all present, and ``{split}/avg10``
    when all ten tasks are present, else ``{split}/avg`` over the present tasks.

    ``blind=True`` replaces every image by zeros after normalisation (a constant mid-grey
    image): the blind baseline of BENCHMARK_DESIGN.md section 5.3. ``cloze=True`` adds the
    cloze-formulation accuracy of the multiple-choice tasks (``{split}/{task}_cloze``).
    ``mc_response`` is the multiple-choice answer format the model was trained with
    (``data.mc_response``; module doc).
    """
    records = predict(model, tokenizer, rows, batch_size=batch_size, device=device, blind=blind,
                      max_new_tokens=max_new_tokens, cloze=cloze, mc_response=mc_response)
    return metrics_from_records(records, split=split)


def metrics_from_records(records: Sequence[Mapping[str, Any]], *, split: str) -> dict[str, float]:
    """The flat ``evaluate`` metrics from ``predict`` records."""
    by_task: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for record in records:
        by_task[record["task"]].append(record)
    out: dict[str, float] = {}
    primary: dict[str, float] = {}
    for task, task_records in by_task.items():
        scores = metrics.task_metrics(task, task_records)
        primary[task] = scores.pop("primary")
        out[f"{split}/{task}"] = primary[task]
        out.update({f"{split}/{task}_{name}": value for name, value in scores.items()})
    for group, value in metrics.group_averages(primary).items():
        out[f"{split}/group_{group}"] = value
    if set(metrics.TASKS) <= set(primary):
        out[f"{split}/avg10"] = metrics.avg10(primary)
    elif primary:
        out[f"{split}/avg"] = sum(primary.values()) / len(primary)
    return out


def predict(model: VLM, tokenizer, rows: datasets.Dataset, *, batch_size: int = 64,
            device: str = "cpu", blind: bool = False, max_new_tokens: int = 8,
            cloze: bool = False, mc_response: str = "letter") -> list[dict[str, Any]]:
    """Answer every row; one record per row (schema in ``switchkd.evaluation.metrics``).

    ``cloze=True`` also scores multiple-choice rows in the cloze formulation (module doc): their
    records gain ``cloze_prediction`` (letter) and ``cloze_score`` (0 or 1).

    ``rows`` is a ``datasets.Dataset`` or a sequence of row dicts. ``model`` is a ``VLM`` (or an
    object with the same ``encode_image`` / ``project`` / ``lm_logits`` / ``num_image_tokens``
    / ``config`` surface) already on ``device``. Runs under ``torch.no_grad()`` in eval mode and
    restores the model's training mode afterwards.

    Raises:
        ValueError: a multiple-choice ``answer`` is not one of the row's option letters, or a
            prompt does not fit the model's positions.
    """
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(f"batch_size ({batch_size}) and max_new_tokens ({max_new_tokens}) "
                         "must be >= 1")
    collator = _collator_for(model, tokenizer, max_new_tokens=max_new_tokens,
                             mc_response=mc_response)
    runner = _Runner(model, collator, batch_size=batch_size, device=device, blind=blind)
    tasks = _column(rows, "task")
    answers, references, metas = (_column(rows, name) for name in ("answer", "answers", "meta"))
    num_options = [len(o or []) for o in _column(rows, "options")]
    gold = {i: _gold_option(tasks[i], i, answers[i], k)  # checked before any inference
            for i, k in enumerate(num_options) if k}

    # candidates -> (row, rotation shift or None for yes/no)
    choice_queries: dict[tuple[str, ...], list[tuple[int, int | None]]] = defaultdict(list)
    response_queries: list[tuple[int, int]] = []  # (row, shift) scored as whole answers
    open_ended: list[int] = []
    for i, (task, k) in enumerate(zip(tasks, num_options)):
        if k:
            shifts = range(k) if task in metrics.CIRCULAR_TASKS else range(1)
            for shift in shifts:
                if mc_response == "letter":
                    choice_queries[OPTION_LETTERS[:k]].append((i, shift))
                else:
                    response_queries.append((i, shift))
        elif task in metrics.YES_NO_TASKS:
            choice_queries[YES_NO].append((i, None))
        else:
            open_ended.append(i)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            chosen = {}  # (row, shift) -> index of the chosen candidate
            for candidates, queries in choice_queries.items():
                chosen.update(zip(queries, runner.choose(rows, queries, candidates)))
            chosen.update(zip(response_queries, runner.choose_response(rows, response_queries)))
            generated = dict(zip(open_ended, runner.generate(rows, open_ended,
                                                             max_new_tokens=max_new_tokens)))
            choice_rows = [i for i, k in enumerate(num_options) if k]
            cloze_choice = dict(zip(choice_rows, runner.cloze(rows, choice_rows))) if cloze else {}
    finally:
        model.train(was_training)

    records = []
    for i, task in enumerate(tasks):
        record = {"task": task, "index": i, "answer": answers[i],
                  "answers": list(references[i] or []), "meta": _parse_meta(metas[i])}
        if num_options[i]:
            record.update(_choice_record(task, i, gold[i], num_options[i], chosen))
            if cloze:
                record["cloze_prediction"] = OPTION_LETTERS[cloze_choice[i]]
                record["cloze_score"] = float(cloze_choice[i] == gold[i])
        elif task in metrics.YES_NO_TASKS:
            record["prediction"] = YES_NO[chosen[i, None]]
            record["score"] = metrics.exact_match(record["prediction"], answers[i])
        else:
            record["prediction"] = generated[i]
            record["score"] = metrics.item_score(task, generated[i], answers[i],
                                                 record["answers"])
        records.append(record)
    return records


class _Runner:
    """Batched forward passes over rows: option choice and greedy generation."""

    def __init__(self, model, collator: Collator, *, batch_size: int, device: str, blind: bool):
        self.model = model
        self.collator = collator
        self.batch_size = batch_size
        self.device = device
        self.blind = blind
        self.tokenizer = collator.tokenizer
        # Never generate tokens that would corrupt the next step's input (an extra <image>).
        self.banned = sorted({collator.pad_id, collator.bos_id, collator.image_id})
        self.eos_id = collator.eos_id

    def choose(self, rows, queries: list[tuple[int, int | None]],
               candidates: Sequence[str]) -> list[int]:
        """Index of the most likely candidate for each (row, rotation shift) query.

        A shift rotates the row's options (``rotate_options``); ``None`` keeps them as stored.
        """
        candidate_ids = self.collator.answer_ids(candidates)
        prefix, branch_ids = _branch_point(candidate_ids)
        chosen = []
        for start in range(0, len(queries), self.batch_size):
            part = queries[start:start + self.batch_size]
            batch_rows = _fetch(rows, [i for i, _ in part])
            orders = [None if shift is None else rotate_options(len(candidates), shift)
                      for _, shift in part]
            prompt = self.collator.prompt_batch(batch_rows, orders)
            prompt = prompt.to(self.device)
            embeds = self._image_embeds(prompt.pixel_values)  # (B, N, D)
            if branch_ids is not None:
                scores = self._branch_log_probs(prompt, embeds, prefix, branch_ids)  # (B, K)
            else:
                scores = self._sequence_log_likelihood(prompt, embeds, candidate_ids)  # (B, K)
            chosen += scores.argmax(-1).tolist()
        return chosen

    def cloze(self, rows, indices: list[int]) -> list[int]:
        """Index of the most likely option text for each multiple-choice row at ``indices``.

        Prompt: the row's question stem without its options (an open-ended question); score:
        summed log-prob of ``answer_text(option)`` + ``<eos>``. One forward per (row, option).
        """
        options = _column(rows, "options")  # no image decoded here; batches fetch their rows
        requests = []  # (row, options order, stem only, continuation ids), row by row
        for i in indices:
            option_ids = self.collator.answer_ids(list(options[i]))
            requests += [(i, None, True, ids + [self.eos_id]) for ids in option_ids]
        return _argmax_per_group(self._score(rows, requests), [len(options[i]) for i in indices])

    def choose_response(self, rows, queries: list[tuple[int, int]]) -> list[int]:
        """Index (display position) of the most likely whole answer for each (row, rotation
        shift) multiple-choice query, in the collator's ``mc_response`` format.

        Prompt: the question with its options in the rotated order; score: summed log-prob of
        ``answer_text(mc_answer(options, j))`` + ``<eos>`` for each display position j (for
        ``text_letter``: the option's text and then its letter, so an option whose letter the
        model would not write after its text loses). One forward per (query, option).
        """
        options = _column(rows, "options")
        requests, sizes = [], []
        for i, shift in queries:
            order = rotate_options(len(options[i]), shift)
            shown = [options[i][k] for k in order]
            answers = [mc_answer(shown, j, response=self.collator.mc_response)
                       for j in range(len(shown))]
            requests += [(i, order, False, ids + [self.eos_id])
                         for ids in self.collator.answer_ids(answers)]
            sizes.append(len(shown))
        return _argmax_per_group(self._score(rows, requests), sizes)

    def _score(self, rows, requests: list[tuple[int, list[int] | None, bool, list[int]]]
               ) -> list[float]:
        """Summed log-prob of each request's continuation after its row's prompt (options in
        the given order, or the bare question stem when the third field is true)."""
        scores = []
        for start in range(0, len(requests), self.batch_size):
            part = requests[start:start + self.batch_size]
            batch_rows = [{**row, "options": []} if stem_only else row for row, (_, _, stem_only, _)
                          in zip(_fetch(rows, [i for i, _, _, _ in part]), part)]
            prompt = self.collator.prompt_batch(
                batch_rows, [None if stem_only else order for _, order, stem_only, _ in part])
            prompt = prompt.to(self.device)
            embeds = self._image_embeds(prompt.pixel_values)  # (B, N, D)
            scores += self._continuation_log_likelihood(
                prompt.input_ids, prompt.attention_mask, embeds,
                [ids for _, _, _, ids in part]).tolist()
        return scores

    def generate(self, rows, indices: list[int], *, max_new_tokens: int) -> list[str]:
        """Greedy answers (decoded, stripped) for the rows at ``indices``."""
        texts = []
        for start in range(0, len(indices), self.batch_size):
            batch_rows = _fetch(rows, indices[start:start + self.batch_size])
            prompt = self.collator.prompt_batch(batch_rows).to(self.device)
            embeds = self._image_embeds(prompt.pixel_values)  # (B, N, D)
            tokens = self._greedy(prompt.input_ids, prompt.attention_mask, embeds,
                                  max_new_tokens=max_new_tokens)
            texts += [t.strip() for t in
                      self.tokenizer.batch_decode(tokens, skip_special_tokens=True)]
        return texts

    def _image_embeds(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Shapes: (B, 3, H, W) -> (B, N, D). Blind mode encodes zeros (a grey image)."""
        if self.blind:
            pixel_values = torch.zeros_like(pixel_values)
        return self.model.project(self.model.encode_image(pixel_values))

    def _greedy(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                embeds: torch.Tensor, *, max_new_tokens: int) -> list[list[int]]:
        """Greedy continuation ids of left-padded prompts, cut before ``<eos>``.

        Shapes: input_ids, attention_mask (B, P); embeds (B, N, D).
        """
        batch = input_ids.shape[0]
        done = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)  # (B,)
        steps = []
        for _ in range(max_new_tokens):
            logits = self.model.lm_logits(input_ids, embeds, attention_mask,
                                          last_position_only=True)[:, -1].float()  # (B, V)
            logits[:, self.banned] = float("-inf")
            next_ids = logits.argmax(-1).masked_fill(done, self.eos_id)  # (B,)
            steps.append(next_ids)
            input_ids = torch.cat([input_ids, next_ids[:, None]], dim=1)  # (B, P + 1)
            attention_mask = torch.cat([attention_mask, (~done).long()[:, None]], dim=1)
            done |= next_ids == self.eos_id
            if bool(done.all()):
                break
        out = []
        for row in torch.stack(steps, dim=1).tolist():  # (B, G)
            out.append(row[:row.index(self.eos_id)] if self.eos_id in row else row)
        return out

    def _branch_log_probs(self, prompt, embeds: torch.Tensor, prefix: list[int],
                          branch_ids: list[int]) -> torch.Tensor:
        """Log-probs of the candidates' branch tokens after prompt + shared prefix.

        Shapes: prompt.input_ids (B, P); embeds (B, N, D) -> (B, K).
        """
        input_ids, mask = prompt.input_ids, prompt.attention_mask
        if prefix:
            shared = torch.tensor(prefix, device=input_ids.device).expand(input_ids.shape[0], -1)
            input_ids = torch.cat([input_ids, shared], dim=1)  # (B, P + len(prefix))
            mask = torch.cat([mask, torch.ones_like(shared)], dim=1)
        logits = self.model.lm_logits(input_ids, embeds, mask,
                                      last_position_only=True)[:, -1].float()  # (B, V)
        return logits.log_softmax(-1)[:, branch_ids]  # (B, K)

    def _sequence_log_likelihood(self, prompt, embeds: torch.Tensor,
                                 candidate_ids: list[list[int]]) -> torch.Tensor:
        """Summed log-prob of each candidate's tokens after each prompt.

        Shapes: prompt.input_ids (B, P); embeds (B, N, D) -> (B, K).
        """
        batch, num = prompt.input_ids.shape[0], len(candidate_ids)
        log_likelihood = self._continuation_log_likelihood(
            prompt.input_ids.repeat_interleave(num, 0), prompt.attention_mask.repeat_interleave(
                num, 0), embeds.repeat_interleave(num, 0), candidate_ids * batch)  # (B*K,)
        return log_likelihood.view(batch, num)

    def _continuation_log_likelihood(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                     embeds: torch.Tensor,
                                     continuations: list[list[int]]) -> torch.Tensor:
        """Summed log-prob of ``continuations[b]`` appended to left-padded prompt b.

        Shapes: input_ids, attention_mask (B, P); embeds (B, N, D) -> (B,).
        """
        width, length = input_ids.shape[1], max(len(c) for c in continuations)
        device = input_ids.device
        cont = torch.full((len(continuations), length), self.collator.pad_id, dtype=torch.long,
                          device=device)  # (B, L)
        cont_mask = torch.zeros_like(cont)  # (B, L)
        for b, ids in enumerate(continuations):
            cont[b, :len(ids)] = torch.tensor(ids, device=device)
            cont_mask[b, :len(ids)] = 1
        logits = self.model.lm_logits(torch.cat([input_ids, cont], 1), embeds,
                                      torch.cat([attention_mask, cont_mask], 1))  # (B, P+L, V)
        logp = logits[:, width - 1:width - 1 + length].float().log_softmax(-1)  # (B, L, V)
        token_logp = logp.gather(-1, cont[..., None]).squeeze(-1)  # (B, L)
        return (token_logp * cont_mask).sum(-1)  # (B,)


def _branch_point(candidate_ids: list[list[int]]) -> tuple[list[int], list[int] | None]:
    """The candidates' shared leading tokens and the distinct tokens that follow them.

    The second item is ``None`` when the candidates do not all part ways at one position
    (a candidate ends inside the shared part, or two candidates still agree there).
    """
    prefix = []
    for column in zip(*candidate_ids):
        if len(set(column)) > 1:
            break
        prefix.append(column[0])
    if any(len(ids) <= len(prefix) for ids in candidate_ids):
        return prefix, None
    branch = [ids[len(prefix)] for ids in candidate_ids]
    return prefix, branch if len(set(branch)) == len(branch) else None


def _argmax_per_group(scores: list[float], sizes: list[int]) -> list[int]:
    """The index of the best score within each consecutive group of ``sizes[g]`` scores."""
    chosen, start = [], 0
    for size in sizes:
        group = scores[start:start + size]
        chosen.append(max(range(size), key=group.__getitem__))
        start += size
    return chosen


def _collator_for(model, tokenizer, *, max_new_tokens: int, mc_response: str) -> Collator:
    """A collator matching the model's image geometry; prompts leave room for the answer."""
    return Collator(tokenizer, num_image_tokens=model.num_image_tokens,
                    image_size=model.image_size,
                    max_length=model.config.text_config.max_position_embeddings - max_new_tokens,
                    mc_response=mc_response)


def _gold_option(task: str, index: int, answer: str, num_options: int) -> int:
    """The original index of the correct option from its letter."""
    letter = str(answer).strip().upper()
    if letter not in OPTION_LETTERS[:num_options]:
        raise ValueError(f"{task} item {index}: answer {answer!r} is not one of the option "
                         f"letters {list(OPTION_LETTERS[:num_options])}")
    return OPTION_LETTERS.index(letter)


def _choice_record(task: str, index: int, gold: int, num_options: int,
                   chosen: Mapping[tuple[int, int | None], int]) -> dict[str, Any]:
    """Prediction (original letter at rotation 0), per-rotation correctness and item score."""
    shifts = range(num_options) if task in metrics.CIRCULAR_TASKS else range(1)
    picked = [rotate_options(num_options, s)[chosen[index, s]] for s in shifts]  # original ids
    rotation_correct = [p == gold for p in picked]
    return {"prediction": OPTION_LETTERS[picked[0]], "rotation_correct": rotation_correct,
            "score": float(all(rotation_correct))}


def _column(rows, name: str) -> list:
    if isinstance(rows, Sequence):
        return [row[name] for row in rows]
    return list(rows[name])


def _fetch(rows, indices: list[int]) -> list[dict[str, Any]]:
    """The rows at ``indices`` as dicts, each distinct row read (and its image decoded) once."""
    unique = sorted(set(indices))
    if isinstance(rows, Sequence):
        fetched = {i: rows[i] for i in unique}
    else:
        columns = rows[unique]
        fetched = {i: {name: values[j] for name, values in columns.items()}
                   for j, i in enumerate(unique)}
    return [fetched[i] for i in indices]


def _parse_meta(meta: Any) -> dict[str, Any]:
    if isinstance(meta, Mapping):
        return dict(meta)
    return json.loads(meta) if meta else {}
