"""Language-model pretraining on text-only option lookup: prompts, scope and determinism."""

import random
import re

import pytest
import torch

from switchkd.config import LanguagePretrainConfig
from switchkd.data.format import OPTION_LETTERS
from switchkd.data.tokenizer import image_token_id, train_tokenizer
from switchkd.language_pretrain import LookupLoss, lookup_prompts, lookup_texts, pretrain_language
from switchkd.models.build import build_vlm
from switchkd.presets import tiny

ANSWERS = ["red", "green", "blue", "yellow", "top left", "bottom right", "3", "12", "A", "B",
           "红色", "绿色", "蓝色", "黄色", "左上", "a green circle and a red square on stripes",
           "line one\nline two"]


@pytest.fixture(scope="module")
def tokenizer():
    texts = [f"USER: Which option says {a}?\nA. {a}\nB. {a}\nAnswer with the option's letter."
             f" ASSISTANT: A" for a in ANSWERS]
    return train_tokenizer(texts + ["请直接回答选项字母。哪个选项是"], vocab_size=300)


def test_lookup_texts_are_short_non_letter_answers_by_language():
    texts = lookup_texts(ANSWERS)
    assert texts["en"] == sorted(["red", "green", "blue", "yellow", "top left", "bottom right",
                                  "3", "12"])
    assert texts["cn"] == sorted(["红色", "绿色", "蓝色", "黄色", "左上"])


def test_lookup_prompts_name_one_option_and_answer_its_letter():
    prompts, letters = lookup_prompts(lookup_texts(ANSWERS), random.Random(0), 200)
    languages = set()
    for prompt, letter in zip(prompts, letters):
        named = re.search(r"(?:Which option says |哪个选项是 )(.+?)[?？]\n", prompt).group(1)
        options = dict(re.findall(r"\n([A-E])\. ([^\n]+)", prompt))
        assert 2 <= len(options) <= 5 and list(options) == list(OPTION_LETTERS[:len(options)])
        assert options[letter] == named
        assert list(options.values()).count(named) == 1
        assert prompt.startswith("USER: ") and prompt.endswith(" ASSISTANT:")
        languages.add("cn" if "哪个" in prompt else "en")
    assert languages == {"en", "cn"}
    assert len(set(letters)) >= 4  # the answer letter varies


def test_language_pretraining_trains_only_the_language_model_deterministically(tokenizer):
    cfg = LanguagePretrainConfig(steps=6, batch_size=8, lr=1e-3, warmup_steps=1)

    def run():
        vlm = build_vlm(tiny().model.teacher, vocab_size=len(tokenizer),
                        image_token_id=image_token_id(tokenizer),
                        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, seed=0)
        before = {k: v.clone() for k, v in vlm.hf.state_dict().items()}
        record = pretrain_language(vlm, cfg, tokenizer, ANSWERS, seed=0,
                                   device=torch.device("cpu"))
        return before, vlm.hf.state_dict(), record

    before, after, record = run()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("language_model" in k or "lm_head" in k for k in changed), changed
    assert any("embed_tokens" in k for k in changed)
    _, again, record_again = run()
    assert all(torch.equal(after[k], again[k]) for k in after)
    assert record["language_pretrain/steps"] == 6
    for key in ("final_loss", "lookup_acc_before", "lookup_acc"):
        assert record[f"language_pretrain/{key}"] == record_again[f"language_pretrain/{key}"]
    assert 0.0 <= record["language_pretrain/lookup_acc"] <= 100.0


def test_language_pretraining_needs_enough_option_texts(tokenizer):
    vlm = build_vlm(tiny().model.teacher, vocab_size=len(tokenizer),
                    image_token_id=image_token_id(tokenizer), seed=0)
    with pytest.raises(ValueError, match="at least 5 distinct short train answers"):
        pretrain_language(vlm, LanguagePretrainConfig(steps=1), tokenizer, ["red", "blue"],
                          seed=0, device=torch.device("cpu"))


def test_lookup_loss_draws_fresh_deterministic_prompts_per_stream(tokenizer):
    """The rehearsal in the teacher's CE stage: a differentiable letter CE, new prompts each call,
    the same sequence for the same (seed, stream), another for another stream."""
    vlm = build_vlm(tiny().model.teacher, vocab_size=len(tokenizer),
                    image_token_id=image_token_id(tokenizer), seed=0)

    def losses(stream):
        loss_fn = LookupLoss(tokenizer, ANSWERS, batch_size=4, seed=0, stream=stream)
        return [loss_fn(vlm, torch.device("cpu")) for _ in range(3)]

    first = losses("rehearse")
    assert first[0].requires_grad and all(torch.isfinite(x) for x in first)
    assert len({round(x.item(), 6) for x in first}) == 3  # fresh prompts every call
    assert [x.item() for x in losses("rehearse")] == [x.item() for x in first]
    assert [x.item() for x in losses("train")] != [x.item() for x in first]
