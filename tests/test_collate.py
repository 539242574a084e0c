"""Collate: exact label boundaries, the image block, truncation, left-padded prompts, pixels."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from switchkd.data.collate import IGNORE_INDEX, Collator, image_to_tensor, rotate_options
from switchkd.data.format import answer_text, format_mc_question, parse_mc_question, user_text
from switchkd.data.tokenizer import image_token_id, train_tokenizer

N = 4  # image tokens
SIZE = 16  # image side


def _image(color=(200, 30, 30), size=SIZE) -> Image.Image:
    return Image.new("RGB", (size, size), color)


def _train_row(pairs, task="vqa"):
    conversations = []
    for k, (q, a) in enumerate(pairs):
        conversations.append({"from": "human", "value": ("<image>\n" if k == 0 else "") + q})
        conversations.append({"from": "gpt", "value": a})
    return {"task": task, "image": _image(), "conversations": conversations}


def _eval_row(question, answer, options=(), task="vqa"):
    return {"task": task, "image": _image(), "question": question, "answer": answer,
            "answers": [], "options": list(options), "meta": "{}"}


TRAIN_ROWS = [
    _train_row([("What color is the star?", "red"), ("How many shapes are there?", "3"),
                ("Is there a circle?", "no")]),
    _train_row([("What is written on the sign?", "7Q")]),
]


@pytest.fixture(scope="module")
def tokenizer():
    texts = [user_text(q, first_turn=True) + answer_text(a)
             for row in TRAIN_ROWS for q, a in
             zip([m["value"] for m in row["conversations"][::2]],
                 [m["value"] for m in row["conversations"][1::2]])]
    texts += ["What color is the triangle? A. red B. blue Answer with the option's letter.",
              "图中三角形是什么颜色？ 请直接回答选项字母。"]
    return train_tokenizer(texts * 5, vocab_size=320)


@pytest.fixture(scope="module")
def collator(tokenizer):
    return Collator(tokenizer, num_image_tokens=N, image_size=SIZE, max_length=96)


def _label_runs(labels: torch.Tensor) -> list[list[int]]:
    """Contiguous runs of supervised label ids in one row."""
    runs, current = [], []
    for t in labels.tolist():
        if t == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(t)
    return runs + ([current] if current else [])


def test_train_labels_decode_to_exactly_the_answers_plus_eos(collator, tokenizer):
    """Every supervised run decodes to one answer and its <eos>, nothing more or less."""
    batch = collator.train_batch(TRAIN_ROWS)
    for b, row in enumerate(TRAIN_ROWS):
        answers = [m["value"] for m in row["conversations"][1::2]]
        runs = _label_runs(batch.labels[b])
        assert [tokenizer.decode(r) for r in runs] == [answer_text(a) + "<eos>" for a in answers]
        supervised = batch.labels[b] != IGNORE_INDEX
        assert torch.equal(batch.labels[b][supervised], batch.input_ids[b][supervised])


def test_train_sequence_layout(collator, tokenizer):
    """<bos> first, then one contiguous block of N image ids, right padding masked out."""
    batch = collator.train_batch(TRAIN_ROWS)
    img = image_token_id(tokenizer)
    assert batch.input_ids.dtype == torch.long and batch.labels.shape == batch.input_ids.shape
    assert (batch.input_ids[:, 0] == tokenizer.bos_token_id).all()
    assert (batch.input_ids[:, 1:1 + N] == img).all()
    assert ((batch.input_ids == img).sum(1) == N).all()
    lengths = batch.attention_mask.sum(1)
    assert lengths[0] != lengths[1]  # padding actually happened
    for b in range(2):
        assert (batch.input_ids[b, lengths[b]:] == tokenizer.pad_token_id).all()
        assert (batch.labels[b, lengths[b]:] == IGNORE_INDEX).all()
        assert (batch.attention_mask[b, :lengths[b]] == 1).all()
    text = tokenizer.decode(batch.input_ids[0, 1 + N:lengths[0]])
    assert text.startswith("\nUSER: What color is the star? ASSISTANT: red<eos>USER: How many")
    assert batch.pixel_values.shape == (2, 3, SIZE, SIZE)


def row_pairs(row):
    conv = row["conversations"]
    return [(conv[k]["value"].replace("<image>\n", ""), conv[k + 1]["value"])
            for k in range(0, len(conv), 2)]


def test_truncation_drops_whole_trailing_turns(tokenizer):
    """A row over max_length keeps only the turns that fit; the image block is untouched."""
    full = Collator(tokenizer, num_image_tokens=N, image_size=SIZE, max_length=512)
    row = TRAIN_ROWS[0]
    first_turn_len = len(full.train_batch([_train_row(row_pairs(row)[:1])]).input_ids[0])
    two_turn_len = len(full.train_batch([_train_row(row_pairs(row)[:2])]).input_ids[0])
    short = Collator(tokenizer, num_image_tokens=N, image_size=SIZE, max_length=two_turn_len - 1)
    batch = short.train_batch([row])
    assert batch.input_ids.shape[1] == first_turn_len
    assert [tokenizer.decode(r) for r in _label_runs(batch.labels[0])] == [" red<eos>"]
    assert (batch.input_ids[0, 1:1 + N] == image_token_id(tokenizer)).all()


def test_truncation_inside_first_turn_keeps_the_image_block(tokenizer):
    tight = Collator(tokenizer, num_image_tokens=N, image_size=SIZE, max_length=N + 3)
    batch = tight.train_batch(TRAIN_ROWS)
    assert batch.input_ids.shape[1] == N + 3
    assert ((batch.input_ids == image_token_id(tokenizer)).sum(1) == N).all()


def test_max_length_that_would_cut_the_image_block_raises(tokenizer):
    with pytest.raises(ValueError, match="max_length"):
        Collator(tokenizer, num_image_tokens=N, image_size=SIZE, max_length=N)


def test_eval_batch_renders_mc_options_and_supervises_the_letter(collator, tokenizer):
    rows = [_eval_row("What color is the triangle?", "B", ["red", "blue"], task="mmb"),
            _eval_row("图中三角形是什么颜色？", "A", ["红色", "蓝色"], task="mmbcn"),
            _eval_row("What is written on the sign?", "7Q")]
    batch = collator.eval_batch(rows)
    for b, (row, answer) in enumerate(zip(rows, ["B", "A", "7Q"])):
        runs = _label_runs(batch.labels[b])
        assert [tokenizer.decode(r) for r in runs] == [answer_text(answer) + "<eos>"]
        length = int(batch.attention_mask[b].sum())
        text = tokenizer.decode(batch.input_ids[b, 1 + N:length])
        question = (format_mc_question(row["question"], row["options"],
                                       chinese=row["task"] == "mmbcn")
                    if row["options"] else row["question"])
        assert text == f"\nUSER: {question} ASSISTANT:{answer_text(answer)}<eos>"
    assert "请直接回答选项字母。" in collator.question_text(rows[1])


def test_prompt_batch_is_left_padded_prefix_of_the_eval_sequence(collator, tokenizer):
    """Prompts end at the same column, and each equals the eval sequence up to the answer."""
    rows = [_eval_row("What is written on the sign?", "7Q"),
            _eval_row("What color is the triangle?", "B", ["red", "blue", "green"], task="mmb")]
    prompt = collator.prompt_batch(rows)
    full = collator.eval_batch(rows)
    assert (prompt.attention_mask[:, -1] == 1).all()
    assert (prompt.labels == IGNORE_INDEX).all()
    for b in range(2):
        length = int(prompt.attention_mask[b].sum())
        pad = prompt.input_ids.shape[1] - length
        assert (prompt.attention_mask[b, :pad] == 0).all()
        assert (prompt.input_ids[b, :pad] == tokenizer.pad_token_id).all()
        answer_len = len(_label_runs(full.labels[b])[0])
        assert torch.equal(prompt.input_ids[b, pad:], full.input_ids[b, :length])
        assert int(full.attention_mask[b].sum()) == length + answer_len
    assert tokenizer.decode(prompt.input_ids[0, -1:]).endswith(":")


def test_prompt_options_order_rotates_the_options(collator, tokenizer):
    row = _eval_row("What color is the triangle?", "B", ["red", "blue", "green"], task="mmb")
    order = rotate_options(3, 1)
    assert order == [1, 2, 0]
    prompt = collator.prompt_batch([row], options_order=[order])
    text = tokenizer.decode(prompt.input_ids[0, 1 + N:])
    assert "A. blue\nB. green\nC. red" in text
    with pytest.raises(ValueError, match="permutation"):
        collator.prompt_batch([row], options_order=[[0, 0, 1]])


def test_prompt_longer_than_max_length_raises(tokenizer):
    small = Collator(tokenizer, num_image_tokens=N, image_size=SIZE, max_length=N + 4)
    with pytest.raises(ValueError, match="max_length"):
        small.prompt_batch([_eval_row("What is written on the sign?", "7Q")])


def test_malformed_conversations_raise(collator):
    bad_role = _train_row([("q", "a")])
    bad_role["conversations"][1]["from"] = "assistant"
    with pytest.raises(ValueError, match="roles"):
        collator.train_batch([bad_role])
    odd = _train_row([("q", "a")])
    odd["conversations"] = odd["conversations"][:1]
    with pytest.raises(ValueError, match="even-length"):
        collator.train_batch([odd])
    late_image = _train_row([("q", "a"), ("<image> again?", "b")])
    late_image["conversations"][2]["value"] = "look at <image> again"
    with pytest.raises(ValueError, match="<image>"):
        collator.train_batch([late_image])


def test_image_to_tensor_normalises_and_resizes():
    white = image_to_tensor(Image.new("RGB", (SIZE, SIZE), (255, 255, 255)), SIZE)
    assert white.shape == (3, SIZE, SIZE) and white.dtype == torch.float32
    assert torch.allclose(white, torch.ones_like(white))
    black = image_to_tensor(Image.new("L", (40, 24), 0), SIZE)  # grey-scale, other size
    assert black.shape == (3, SIZE, SIZE)
    assert torch.allclose(black, -torch.ones_like(black))
    red = image_to_tensor(Image.new("RGB", (SIZE, SIZE), (255, 0, 0)), SIZE)
    assert torch.allclose(red[:, 0, 0], torch.tensor([1.0, -1.0, -1.0]))


@pytest.mark.parametrize("chinese", [False, True])
def test_parse_mc_question_inverts_format_mc_question(chinese):
    stem = "Context: two magnets.\nWill these magnets attract or repel each other?"
    options = ["attract", "repel", "A. not an option line"]
    assert parse_mc_question(format_mc_question(stem, options, chinese=chinese)) == \
        (stem, options, chinese)
    assert parse_mc_question("What color is the star?") is None
    assert parse_mc_question(format_mc_question(stem, options, response="text_letter")) is None


def test_text_letter_rewrites_mc_train_turns_only(tokenizer):
    """``mc_response="text_letter"``: an MC turn's letter target becomes "text (letter)" and its
    instruction asks for that; open-ended turns are untouched."""
    mc = format_mc_question("What color is the triangle?", ["red", "blue"])
    row = _train_row([(mc, "B"), ("How many shapes are there?", "3")], task="mmb")
    collator = Collator(tokenizer, num_image_tokens=N, image_size=SIZE, max_length=128,
                        mc_response="text_letter")
    batch = collator.train_batch([row])
    runs = [tokenizer.decode(run) for run in _label_runs(batch.labels[0])]
    assert runs == [" blue (B)<eos>", " 3<eos>"]
    text = tokenizer.decode(batch.input_ids[0])
    assert "Answer with the option's text, then its letter." in text
    assert "option's letter." not in text
    # Evaluation rows: the same instruction, and the reference answer in the same format.
    eval_row = _eval_row("What color is the triangle?", "A", ["red", "blue"], task="mmb")
    assert collator.answer(eval_row) == "red (A)"
    prompt = tokenizer.decode(collator.prompt_batch([eval_row]).input_ids[0])
    assert prompt.endswith("Answer with the option's text, then its letter. ASSISTANT:")


def test_unknown_mc_response_raises(tokenizer):
    with pytest.raises(ValueError, match="mc_response='word'"):
        Collator(tokenizer, num_image_tokens=N, image_size=SIZE, max_length=96,
                 mc_response="word")
