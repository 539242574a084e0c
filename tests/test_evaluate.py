"""Batched evaluation on a tiny random VLM and on an oracle that knows every answer."""

from __future__ import annotations

import json

import datasets
import pytest
import torch
from PIL import Image

from switchkd.config import TextConfig, VisionConfig, VLMConfig
from switchkd.data.format import OPTION_LETTERS, answer_text, user_text
from switchkd.data.tokenizer import image_token_id, train_tokenizer
from switchkd.evaluation import metrics
from switchkd.evaluation.evaluate import evaluate, predict
from switchkd.models.build import build_vlm

FEATURES = datasets.Features({
    "task": datasets.Value("string"), "image": datasets.Image(),
    "question": datasets.Value("string"), "answer": datasets.Value("string"),
    "answers": datasets.List(datasets.Value("string")),
    "options": datasets.List(datasets.Value("string")), "meta": datasets.Value("string"),
})


def _row(task, question, answer, *, options=(), answers=(), color=(90, 20, 160), **meta):
    return {"task": task, "image": Image.new("RGB", (16, 16), color), "question": question,
            "answer": answer, "answers": list(answers), "options": list(options),
            "meta": json.dumps(meta)}


def _mc(task, question, gold, others, gold_pos, **meta):
    options = list(others)
    options.insert(gold_pos, gold)
    return _row(task, question, OPTION_LETTERS[gold_pos], options=options, **meta)


ROWS = [
    _row("mme", "Is there a red star in the image?", "yes", subtask="existence", image_id="1"),
    _row("mme", "Is there a blue star in the image?", "no", subtask="existence", image_id="1"),
    _row("mme", "Are there 3 shapes in the image?", "no", subtask="count", image_id="2"),
    _row("mme", "Are there 2 shapes in the image?", "yes", subtask="count", image_id="2"),
    _mc("mmb", "What color is the triangle?", "red", ["blue", "green", "yellow"], 2,
        item_id="m1", ability="attribute"),
    _mc("mmb", "Which quadrant holds the star?", "top left", ["top right", "bottom left"], 0,
        item_id="m2", ability="localisation"),
    _mc("mmbcn", "图中三角形是什么颜色？", "红色", ["蓝色", "绿色", "黄色"], 1, item_id="m1",
        ability="attribute"),
    _row("vqa", "What color is the circle?", "gray", answers=["gray"] * 7 + ["grey"] * 3),
    _row("vqa", "How many stars are there?", "2", answers=["2"] * 9 + ["two"]),
    _row("gqa", "Is the square left of the cross?", "yes", type="verify"),
    _row("gqa", "What color is the shape left of the blue star?", "green", type="query"),
    _mc("sqa", "Will these magnets attract or repel each other?", "repel", ["attract"], 1),
    _mc("mmmu", "What is the sum of the two numbers?", "12", ["9", "11", "13"], 3),
    _mc("mmmu", "Which bar is the tallest?", "E", ["A", "B", "C", "D"], 4),
    _row("textvqa", "What is written on the red sign?", "7Q"),
    _row("vizwiz", "What color is this?", "red", answers=["red"] * 10),
    _row("vizwiz", "What does the label say?", "unanswerable", answers=["unanswerable"] * 10),
    *[_row("pope", f"Is there a {obj} in the image?", ans, setting=setting)
      for setting in ("random", "popular", "adversarial")
      for obj, ans in (("dog", "yes"), ("cat", "no"))],
]


@pytest.fixture(scope="module")
def rows():
    return datasets.Dataset.from_list(ROWS, features=FEATURES)


@pytest.fixture(scope="module")
def tokenizer():
    texts = [user_text(r["question"], first_turn=True) + answer_text(r["answer"]) for r in ROWS]
    texts += [o for r in ROWS for o in r["options"]] + ["Answer with the option's letter. A B C"]
    return train_tokenizer(texts * 4, vocab_size=400)


@pytest.fixture(scope="module")
def model(tokenizer):
    cfg = VLMConfig(
        vision=VisionConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                            image_size=16, patch_size=8),
        text=TextConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                        intermediate_size=64))
    return build_vlm(cfg, vocab_size=len(tokenizer), image_token_id=image_token_id(tokenizer))


class OracleVLM(torch.nn.Module):
    """The tiny VLM's surface, with ``lm_logits`` peaked on the gold answer after the prompt.

    It reads the question back from the prompt tokens, so it follows any option rotation.
    """

    def __init__(self, vlm, tokenizer, rows, *, response="letter"):
        super().__init__()
        self.vlm = vlm
        self.tokenizer = tokenizer
        self.response = response  # "text_letter": answers MC as "red (C)"
        self.gold = {}  # first line of the question -> gold answer text (option text for MC)
        for r in rows:
            gold = r["options"][OPTION_LETTERS.index(r["answer"])] if r["options"] else r["answer"]
            self.gold[r["question"]] = gold
        self.marker = tokenizer(" ASSISTANT:", add_special_tokens=False)["input_ids"]

    num_image_tokens = property(lambda self: self.vlm.num_image_tokens)
    image_size = property(lambda self: self.vlm.image_size)
    config = property(lambda self: self.vlm.config)

    def encode_image(self, pixel_values):
        return self.vlm.encode_image(pixel_values)

    def project(self, features):
        return self.vlm.project(features)

    def lm_logits(self, input_ids, image_embeds, attention_mask=None, *,
                  last_position_only=False):
        logits = self._all_logits(input_ids)
        return logits[:, -1:] if last_position_only else logits

    def _all_logits(self, input_ids):
        batch, width = input_ids.shape
        logits = torch.zeros(batch, width, len(self.tokenizer))  # (B, T, V)
        for b, ids in enumerate(input_ids.tolist()):
            end = max(i for i in range(width) if ids[i - len(self.marker) + 1:i + 1] == self.marker)
            start = max(i for i, t in enumerate(ids) if t == self.vlm.image_token_id) + 1
            question = self.tokenizer.decode(ids[start:end + 1 - len(self.marker)])
            question = question.removeprefix("\nUSER: ")
            lines = question.split("\n")
            answer = self.gold[lines[0]]
            if len(lines) > 1:  # multiple choice: the letter now showing the gold option
                letter = next(line[0] for line in lines[1:] if line[3:] == answer)
                answer = letter if self.response == "letter" else f"{answer} ({letter})"
            target = self.tokenizer(answer_text(answer), add_special_tokens=False)["input_ids"]
            for j, token in enumerate(target + [self.tokenizer.eos_token_id]):
                if end + j < width:
                    logits[b, end + j, token] = 20.0
        return logits


def test_random_model_keys_and_ranges(model, tokenizer, rows):
    out = evaluate(model, tokenizer, rows, batch_size=5, split="test")
    tasks = metrics.TASKS
    for task in tasks:
        assert 0.0 <= out[f"test/{task}"] <= 100.0
    for group in metrics.TASK_GROUPS:
        assert 0.0 <= out[f"test/group_{group}"] <= 100.0
    assert 0.0 <= out["test/avg10"] <= 100.0 and "test/avg" not in out
    for key in ("mmb_vanilla", "mmbcn_vanilla", "vizwiz_unanswerable_f1", "gqa_verify",
                "pope_random_f1", "pope_adversarial_yes_ratio", "mme_existence_acc_plus",
                "mme_total"):
        assert f"test/{key}" in out
    assert all(isinstance(v, float) and v == v for v in out.values())


@pytest.fixture(scope="module")
def byte_tokenizer():
    """Almost no merges: every answer starts with the same byte token (" " -> id of "Ġ")."""
    return train_tokenizer([r["question"] for r in ROWS], vocab_size=266)


def test_oracle_scores_100_everywhere(model, tokenizer, rows):
    """A model that puts all mass on the gold tokens is perfect on every task and rotation."""
    letters = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    assert " yes" in letters and " A" in letters  # one forward, first-token comparison
    assert " D" not in letters and " E" not in letters  # 5 options: whole-sequence scoring
    out = evaluate(OracleVLM(model, tokenizer, ROWS), tokenizer, rows, batch_size=4)
    for task in metrics.TASKS:
        assert out[f"val/{task}"] == pytest.approx(100.0), task
    assert out["val/avg10"] == pytest.approx(100.0)
    assert out["val/mme_total"] == pytest.approx(400.0)  # two subtasks at 200
    assert out["val/vizwiz_unanswerable_f1"] == pytest.approx(100.0)


def test_oracle_with_colliding_first_tokens_decides_after_the_shared_prefix(byte_tokenizer, rows):
    """" yes" / " no" / " A" ... share their first token: decided after the shared prefix."""
    first_ids = {byte_tokenizer(answer_text(c), add_special_tokens=False)["input_ids"][0]
                 for c in ("yes", "no", "A", "B")}
    assert len(first_ids) == 1
    cfg = VLMConfig(
        vision=VisionConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                            image_size=16, patch_size=8),
        text=TextConfig(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1,
                        intermediate_size=32))
    vlm = build_vlm(cfg, vocab_size=len(byte_tokenizer),
                    image_token_id=image_token_id(byte_tokenizer))
    oracle = OracleVLM(vlm, byte_tokenizer, ROWS)
    out = evaluate(oracle, byte_tokenizer, rows, batch_size=8, max_new_tokens=16)
    assert out["val/avg10"] == pytest.approx(100.0)


def test_oracle_predictions_are_the_gold_answers(model, tokenizer, rows):
    records = predict(OracleVLM(model, tokenizer, ROWS), tokenizer, rows, batch_size=3)
    assert [r["prediction"] for r in records] == [r["answer"] for r in ROWS]
    assert [r["index"] for r in records] == list(range(len(ROWS)))
    mmb = [r for r in records if r["task"] == "mmb"]
    assert [len(r["rotation_correct"]) for r in mmb] == [4, 3]  # one pass per rotation
    assert all(r["score"] == 1.0 for r in records)


def test_predictions_do_not_depend_on_batch_composition(model, tokenizer, rows):
    """Left padding and per-row positions: batch size 1 and 7 give the same answers."""
    one = predict(model, tokenizer, rows, batch_size=1, max_new_tokens=3)
    seven = predict(model, tokenizer, rows, batch_size=7, max_new_tokens=3)
    assert [r["prediction"] for r in one] == [r["prediction"] for r in seven]


def test_blind_run_and_training_mode_restored(model, tokenizer, rows):
    model.train()
    out = evaluate(model, tokenizer, rows, blind=True, max_new_tokens=2)
    assert model.training
    assert 0.0 <= out["val/avg10"] <= 100.0
    model.eval()


def test_subset_of_tasks_reports_avg_not_avg10(model, tokenizer, rows):
    subset = rows.filter(lambda t: t in ("textvqa", "vizwiz"), input_columns="task")
    out = evaluate(model, tokenizer, subset, max_new_tokens=2)
    assert set(out) == {"val/textvqa", "val/vizwiz", "val/vizwiz_unanswerable_f1",
                        "val/group_ocr", "val/avg"}


def test_bad_mc_answer_raises(model, tokenizer):
    bad = [_row("sqa", "Will these magnets attract or repel?", "C", options=["attract", "repel"])]
    with pytest.raises(ValueError, match="option letters"):
        predict(model, tokenizer, bad)


MC_TASKS = ("mmb", "mmbcn", "sqa", "mmmu")


def test_oracle_cloze_scores_option_texts_after_the_bare_question(model, tokenizer, rows):
    """The cloze formulation shows no options (the oracle would answer with a letter if it
    saw them) and scores each option's text; off by default."""
    oracle = OracleVLM(model, tokenizer, ROWS)
    out = evaluate(oracle, tokenizer, rows, batch_size=4, cloze=True)
    for task in MC_TASKS:
        assert out[f"val/{task}_cloze"] == pytest.approx(100.0), task
    assert not any(k.endswith("_cloze") for k in evaluate(oracle, tokenizer, rows, batch_size=4))
    records = predict(oracle, tokenizer, rows, batch_size=3, cloze=True)
    mc = [r for r in records if r["task"] in MC_TASKS]
    assert [r["cloze_prediction"] for r in mc] == [r["answer"] for r in mc]
    assert not any("cloze_score" in r for r in records if r["task"] not in MC_TASKS)


class LetterBlindOracle(OracleVLM):
    """Knows every answer's text but, shown lettered options, always says the first letter."""

    def _all_logits(self, input_ids):
        logits = super()._all_logits(input_ids)
        first = self.tokenizer(answer_text("A"), add_special_tokens=False)["input_ids"][0]
        for b, ids in enumerate(input_ids.tolist()):
            if "\nA. " in self.tokenizer.decode(ids):
                logits[b] = 0.0
                logits[b, :, first] = 20.0
        return logits


def test_cloze_separates_knowing_the_answer_from_binding_its_letter(model, tokenizer, rows):
    out = evaluate(LetterBlindOracle(model, tokenizer, ROWS), tokenizer, rows, cloze=True)
    assert all(r["answer"] != "A" for r in ROWS if r["task"] in ("sqa", "mmmu"))
    assert out["val/sqa"] == 0.0 and out["val/mmmu"] == 0.0
    assert out["val/mmb"] == 0.0 and out["val/mmbcn"] == 0.0  # circular: "A" is right once
    for task in MC_TASKS:
        assert out[f"val/{task}_cloze"] == pytest.approx(100.0), task


def test_cloze_choice_does_not_depend_on_batch_composition(model, tokenizer, rows):
    one = predict(model, tokenizer, rows, batch_size=1, max_new_tokens=1, cloze=True)
    seven = predict(model, tokenizer, rows, batch_size=7, max_new_tokens=1, cloze=True)
    picks = [r.get("cloze_prediction") for r in one]
    assert picks == [r.get("cloze_prediction") for r in seven]
    assert sum(p is not None for p in picks) == sum(r["task"] in MC_TASKS for r in ROWS)


def test_text_letter_oracle_scores_100_on_whole_answers(model, tokenizer, rows):
    """``mc_response="text_letter"``: the prompt asks for the option's text then its letter, and
    each rotation's choice is the most likely whole answer "text (letter)"."""
    oracle = OracleVLM(model, tokenizer, ROWS, response="text_letter")
    out = evaluate(oracle, tokenizer, rows, batch_size=5, mc_response="text_letter")
    for task in MC_TASKS:
        assert out[f"val/{task}"] == pytest.approx(100.0), task
    # The same oracle read under the letter protocol never writes a bare letter first.
    letter = evaluate(oracle, tokenizer, rows, batch_size=5)
    assert letter["val/mmb"] == 0.0 and letter["val/sqa"] < 100.0


def test_text_letter_choice_does_not_depend_on_batch_composition(model, tokenizer, rows):
    one = predict(model, tokenizer, rows, batch_size=1, mc_response="text_letter")
    seven = predict(model, tokenizer, rows, batch_size=7, mc_response="text_letter")
    mc = [i for i, r in enumerate(one) if r["task"] in MC_TASKS]
    assert [one[i]["rotation_correct"] for i in mc] == [seven[i]["rotation_correct"] for i in mc]
