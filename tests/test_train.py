"""End-to-end training on the tiny preset (in-process CLI, real data, real HF models)."""

import json
import os
import shutil

import pytest
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from switchkd.cli import main as cli_main
from switchkd.config import with_overrides
from switchkd.presets import tiny
from switchkd.models.build import load_vlm
from switchkd.train import (TEACHER_META, NonFiniteLossError, _init_teacher_folder, init_models,
                            load_teacher, prepare, teacher_dir, teacher_key, train)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One data suite and one teacher for the whole module."""
    return str(tmp_path_factory.mktemp("cache"))


def _cfg(cache_dir, **overrides):
    return with_overrides(tiny(), {"run.cache_dir": cache_dir, **overrides})


def _log(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_cli_train_end_to_end(cache_dir, tmp_path):
    out = str(tmp_path / "run")
    code = cli_main(["train", "--preset", "tiny", "--out", out, f"run.cache_dir={cache_dir}",
                     "train.max_steps=30", "train.log_every=7", "train.eval_every=30"])
    assert code == 0
    losses = [r["train/loss"] for r in _log(out) if "train/loss" in r and "val/avg10" not in r]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0], losses
    # Diagnostics are computed on the last step of each log window and averaged over those
    # steps only: Kneedle k lies in [k_min, k_max], agreement in [0, 1] (not diluted by 1/7).
    logged = [r for r in _log(out) if "train/k_teacher_mean" in r]
    assert {r["step"] for r in logged} == {7, 14, 21, 28, 30}   # and the last step
    loss_cfg = tiny().loss
    for r in logged:
        for branch in ("teacher", "student"):
            assert loss_cfg.k_min <= r[f"train/k_{branch}_mean"] <= loss_cfg.k_max, r
        assert 0.0 <= r["train/top1_agreement"] <= 1.0
    with open(os.path.join(out, "result.json")) as f:
        result = json.load(f)
    assert result["status"] == "completed" and result["steps"] == 30
    assert result["cfg.train.stage"] == "distill" and result["teacher_forward_passes"] == 60
    assert 0.0 <= result["val/avg10"] <= 100.0
    for name in ("config.yaml", "checkpoint/model.safetensors", "checkpoint/state.json",
                 "student/config.json", "student/model.safetensors"):
        assert os.path.isfile(os.path.join(out, name)), name


def test_exported_student_loads_in_transformers_and_generates(cache_dir, tmp_path):
    out = str(tmp_path / "run")
    train(_cfg(cache_dir, **{"train.max_steps": 2, "train.eval_every": 2}), out_dir=out)
    folder = os.path.join(out, "student")
    model = LlavaForConditionalGeneration.from_pretrained(folder, local_files_only=True)
    processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    from PIL import Image
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color?"}]}],
        add_generation_prompt=True)
    inputs = processor(images=Image.new("RGB", (32, 32), "red"), text=prompt, return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] > inputs["input_ids"].shape[1]


def test_teacher_is_trained_once_and_cached(cache_dir):
    cfg = _cfg(cache_dir)
    first = prepare(cfg)
    directory = teacher_dir(cfg, first["data_fingerprint"])
    stamp = os.path.getmtime(os.path.join(directory, "model.safetensors"))
    assert prepare(cfg) == first
    assert os.path.getmtime(os.path.join(directory, "model.safetensors")) == stamp


def test_teacher_lock_is_per_teacher(cache_dir):
    """While one teacher trains (its lock held), runs on another, cached teacher go ahead;
    runs on the same teacher wait for it."""
    import fcntl
    import threading

    cfg = _cfg(cache_dir)
    directory = teacher_dir(cfg, prepare(cfg)["data_fingerprint"])
    other = os.path.join(os.path.dirname(directory), ".0123456789abcdef.lock")
    own = os.path.join(os.path.dirname(directory), f".{os.path.basename(directory)}.lock")
    for lock, blocks in ((other, False), (own, True)):
        with open(lock, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            done = threading.Event()
            worker = threading.Thread(target=lambda: (prepare(cfg), done.set()))
            worker.start()
            if blocks:
                assert not done.wait(timeout=2)  # still waiting for the lock
            else:
                assert done.wait(timeout=60)
            fcntl.flock(handle, fcntl.LOCK_UN)
        worker.join(timeout=60)
        assert done.is_set()


def test_teacher_reads_its_pretrained_vision_encoder_frozen(cache_dir):
    """``train.teacher.vision_pretrain`` trains the encoder first; with ``freeze_vision`` the CE
    stage leaves it exactly as pretrained (rebuilt here from the same seed) and trains the rest."""
    from switchkd.data.source import load_data
    from switchkd.data.tokenizer import image_token_id
    from switchkd.models.build import build_vlm
    from switchkd.vision_pretrain import pretrain_vision

    cfg = _cfg(cache_dir)
    budget = cfg.train.teacher
    assert budget.vision_pretrain.steps > 0 and budget.freeze_vision
    info = prepare(cfg)
    with open(os.path.join(teacher_dir(cfg, info["data_fingerprint"]), "teacher.json")) as f:
        record = json.load(f)
    assert record["vision_pretrain/steps"] == budget.vision_pretrain.steps
    assert "vision_pretrain/color_acc" in record
    bundle = load_data(cfg.data, os.path.abspath(cfg.run.cache_dir))
    tok = bundle.tokenizer
    rebuilt = build_vlm(cfg.model.teacher, vocab_size=len(tok), image_token_id=image_token_id(tok),
                        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                        eos_token_id=tok.eos_token_id, seed=budget.seed)
    initial = {k: v.clone() for k, v in rebuilt.hf.state_dict().items()}
    pretrain_vision(rebuilt, budget.vision_pretrain, seed=budget.seed, device=torch.device("cpu"))
    pretrained = rebuilt.hf.state_dict()
    saved = load_teacher(cfg, bundle).hf.state_dict()
    vision = [k for k in saved if "vision_tower" in k]
    assert any(not torch.equal(initial[k], pretrained[k]) for k in vision)
    for key in vision:
        assert torch.equal(saved[key], pretrained[key]), key
    assert not torch.equal(saved["model.multi_modal_projector.linear_1.weight"],
                           initial["model.multi_modal_projector.linear_1.weight"])


def test_teacher_on_other_data_reuses_the_cached_vision_encoder(cache_dir, capsys):
    """The pretrained encoder is cached apart from the teacher, keyed without the data: a
    teacher of other data (here fewer tasks) reads it instead of pretraining again."""
    from switchkd.data.source import load_data
    from switchkd.train import vision_key

    first = _cfg(cache_dir)
    prepare(first)
    other = _cfg(cache_dir, **{"data.tasks": ["mme", "pope"]})
    capsys.readouterr()
    info = prepare(other)
    assert "pretrained one read from" in capsys.readouterr().out
    bundle = load_data(first.data, os.path.abspath(cache_dir))
    assert vision_key(first, len(bundle.tokenizer)) == vision_key(other, len(bundle.tokenizer))
    assert teacher_dir(other, info["data_fingerprint"]) != teacher_dir(first, bundle.fingerprint)
    saved = [load_teacher(c, load_data(c.data, os.path.abspath(cache_dir))).vision_tower
             for c in (first, other)]
    for (name, a), (_, b) in zip(*(t.state_dict().items() for t in saved)):
        assert torch.equal(a, b), name
    changed = _cfg(cache_dir, **{"train.teacher.vision_pretrain.lr": 1e-4})
    assert vision_key(changed, len(bundle.tokenizer)) != vision_key(first, len(bundle.tokenizer))


def test_cli_scores_the_cached_teacher_sighted_and_blind(cache_dir, tmp_path):
    """`switchkd teacher --eval` writes the JSON `switchkd report --reference` reads: the
    provenance plus the flat metrics of the chosen tasks."""
    records = {}
    for blind in (False, True):
        out = str(tmp_path / f"teacher_{blind}.json")
        code = cli_main(["teacher", "--preset", "tiny", "--eval", "val", "--tasks", "mme", "pope",
                         "--out", out, *(["--blind"] if blind else []),
                         f"run.cache_dir={cache_dir}", "data.val_items_per_task=8"])
        assert code == 0
        with open(out) as f:
            records[blind] = json.load(f)
    cfg = _cfg(cache_dir)
    info = prepare(cfg)
    sighted, blind = records[False], records[True]
    assert sighted["source"] == os.path.abspath(teacher_dir(cfg, info["data_fingerprint"]))
    assert sighted["data_fingerprint"] == info["data_fingerprint"]
    assert (sighted["split"], sighted["blind"], blind["blind"]) == ("val", False, True)
    assert sighted["teacher_fingerprint"] == info["teacher_fingerprint"]
    assert {"val/mme", "val/pope"} <= set(sighted) and "val/gqa" not in sighted


def test_cli_vs_blind_scores_both_runs_on_the_same_items(cache_dir, tmp_path):
    """`--vs-blind` = the sighted and the blind run in one call, plus their comparison."""
    out = str(tmp_path / "teacher_vs_blind.json")
    args = ["teacher", "--preset", "tiny", "--eval", "val", "--tasks", "mme", "gqa", "mmb",
            f"run.cache_dir={cache_dir}", "data.val_items_per_task=8"]
    assert cli_main([*args, "--out", out, "--vs-blind"]) == 0
    blind_out = str(tmp_path / "teacher_blind.json")
    assert cli_main([*args, "--out", blind_out, "--blind"]) == 0
    with open(out) as f:
        record = json.load(f)
    with open(blind_out) as f:
        blind = json.load(f)
    assert record["blind"] is False and set(record["versus_blind"]) == {"mme", "gqa", "mmb"}
    for task, row in record["versus_blind"].items():
        assert row["model"] == pytest.approx(record[f"val/{task}"])
        assert row["reference"] == pytest.approx(blind[f"val/{task}"])
        assert record["blind_metrics"][f"val/{task}"] == pytest.approx(blind[f"val/{task}"])
        assert row["basis"] == ("accuracy" if task == "mme" else "primary")
    with pytest.raises(SystemExit, match="exclude each other"):
        cli_main([*args, "--blind", "--vs-blind"])
    with pytest.raises(SystemExit, match="exclude each other"):  # also with an explicit --out
        cli_main([*args, "--out", out, "--blind", "--vs-blind"])


def test_resume_reproduces_the_uninterrupted_run(cache_dir, tmp_path):
    """A run resumed from its step-4 checkpoint replays steps 5-8 with identical losses."""
    cfg = _cfg(cache_dir, **{"train.max_steps": 8, "train.log_every": 1, "train.eval_every": 4,
                             "train.checkpoint_every": 4, "data.val_items_per_task": 1})
    saved = str(tmp_path / "step4")

    def keep_step4(metrics, checkpoint_dir):
        if metrics["step"] == 4:
            shutil.copytree(checkpoint_dir, saved)

    full = str(tmp_path / "full")
    train(cfg, out_dir=full, report=keep_step4)
    resumed = str(tmp_path / "resumed")
    train(cfg, out_dir=resumed, resume_from=saved)

    def per_step(out):
        return {r["step"]: r["train/loss"] for r in _log(out) if "val/avg10" not in r}

    expected, got = per_step(full), per_step(resumed)
    assert sorted(got) == [5, 6, 7, 8]
    for step in got:
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), step


def test_sft_from_a_random_vision_encoder_uses_no_teacher(cache_dir, tmp_path):
    result = train(_cfg(cache_dir, **{"train.stage": "sft", "model.student_vision_init": "random",
                                      "train.max_steps": 3, "train.eval_every": 3,
                                      "data.val_items_per_task": 1}))
    assert result["teacher_forward_passes"] == 0 and result["teacher_fingerprint"] is None
    assert "train/align_loss" not in result and "train/ce_loss" in result


def test_sft_starts_from_the_teachers_vision_encoder_like_the_distilled_students(cache_dir):
    """The SFT baseline must differ from Switch-KD only in its loss: with the default
    ``student_vision_init=teacher`` its vision encoder starts as the teacher's, exactly as a
    distilled student's does, but it gets no teacher to run."""
    from switchkd.data.source import load_data

    cpu = torch.device("cpu")
    starts = {}
    for stage in ("sft", "distill"):
        cfg = _cfg(cache_dir, **{"train.stage": stage})
        info = prepare(cfg)
        assert info["teacher_fingerprint"] is not None, stage
        bundle = load_data(cfg.data, os.path.abspath(cfg.run.cache_dir))
        student, teacher = init_models(cfg, bundle, cpu)
        assert (teacher is None) == (stage == "sft")
        starts[stage] = student.hf.state_dict()
    teacher = load_teacher(cfg, bundle).hf.state_dict()
    random_start, _ = init_models(_cfg(cache_dir, **{"train.stage": "sft",
                                                     "model.student_vision_init": "random"}),
                                  bundle, cpu)
    vision = [k for k in teacher if "vision_tower" in k]
    assert vision
    for key in vision:
        assert torch.equal(starts["sft"][key], teacher[key]), key
        assert torch.equal(starts["distill"][key], teacher[key]), key
    assert any(not torch.equal(random_start.hf.state_dict()[k], teacher[k]) for k in vision)
    # Everything but the vision encoder is the same seeded init in both stages.
    for key, value in starts["sft"].items():
        assert torch.equal(value, starts["distill"][key]), key


def test_non_finite_loss_stops_with_a_clear_error(cache_dir, tmp_path):
    cfg = _cfg(cache_dir, **{"optim.lr": 1e30, "optim.grad_clip": 0.0, "optim.warmup_steps": 0,
                             "train.max_steps": 5, "train.log_every": 1})
    out = str(tmp_path / "nan")
    with pytest.raises(NonFiniteLossError, match=r"step \d"):
        train(cfg, out_dir=out)
    assert os.path.isfile(os.path.join(out, "metrics.jsonl"))


def test_shipped_teacher_is_installed_instead_of_retrained(cache_dir, tmp_path, monkeypatch):
    import switchkd.train as train_module

    cfg = _cfg(cache_dir)
    info = prepare(cfg)
    shipped_root = tmp_path / "shipped"
    shutil.copytree(teacher_dir(cfg, info["data_fingerprint"]),
                    shipped_root / info["teacher_fingerprint"])
    monkeypatch.setattr(train_module, "SHIPPED_TEACHERS", str(shipped_root))
    monkeypatch.setattr(train_module, "train_teacher",
                        lambda *a, **k: pytest.fail("retrained despite a shipped teacher"))
    fresh = str(tmp_path / "fresh_cache")
    shutil.copytree(os.path.join(cache_dir, "minivl"), os.path.join(fresh, "minivl"))
    assert prepare(_cfg(fresh)) == info
    assert os.path.isfile(os.path.join(teacher_dir(_cfg(fresh), info["data_fingerprint"]),
                                       "model.safetensors"))


def test_teacher_ce_stage_rehearses_the_option_lookup(cache_dir):
    """``language_pretrain.rehearse_batch_size`` adds lookup prompts to every CE step: the
    teacher differs from one trained without them, and its record reports the lookup accuracy
    after the CE stage."""
    from switchkd.data.source import load_data

    cfg = _cfg(cache_dir)
    assert cfg.train.teacher.language_pretrain.rehearse_batch_size > 0
    plain = with_overrides(cfg, {"train.teacher.language_pretrain.rehearse_batch_size": 0})
    records = []
    for c in (cfg, plain):
        with open(os.path.join(teacher_dir(c, prepare(c)["data_fingerprint"]),
                               "teacher.json")) as f:
            records.append(json.load(f))
    for record in records:
        assert 0.0 <= record["language_pretrain/lookup_acc_after_ce"] <= 100.0
    # identical up to the CE stage: same pretraining record, then different weights
    assert records[0]["language_pretrain/lookup_acc"] == records[1]["language_pretrain/lookup_acc"]
    bundle = load_data(cfg.data, os.path.abspath(cfg.run.cache_dir))
    rehearsed, not_rehearsed = (load_teacher(c, bundle).hf.state_dict() for c in (cfg, plain))
    assert not torch.equal(rehearsed["lm_head.weight"], not_rehearsed["lm_head.weight"])


def test_teacher_can_start_from_another_teacher(cache_dir, tmp_path):
    """``train.teacher.init_from``: the CE stage starts from a trained teacher's weights (here
    with a changed MC response format), keyed by that teacher's own key; a teacher of another
    architecture is refused by name."""
    first = _cfg(cache_dir)
    info = prepare(first)
    start_dir = teacher_dir(first, info["data_fingerprint"])
    second = _cfg(cache_dir, **{"train.teacher.init_from": start_dir,
                                "data.mc_response": "text_letter", "train.teacher.max_steps": 2,
                                "train.teacher.lr": 1e-9, "train.teacher.warmup_steps": 0})
    assert teacher_key(second, info["data_fingerprint"]) != info["teacher_fingerprint"]
    # Named by its key instead of its folder: the same teacher (found in the cache).
    by_key = with_overrides(second, {"train.teacher.init_from": info["teacher_fingerprint"]})
    assert teacher_key(by_key, info["data_fingerprint"]) == \
        teacher_key(second, info["data_fingerprint"])
    assert _init_teacher_folder(by_key) == start_dir
    with pytest.raises(ValueError, match="no teacher with that key"):
        _init_teacher_folder(with_overrides(second, {"train.teacher.init_from": "0" * 16}))
    record = prepare(second)
    with open(os.path.join(teacher_dir(second, record["data_fingerprint"]), TEACHER_META)) as f:
        assert json.load(f)["init_from"] == info["teacher_fingerprint"]
    # with a vanishing learning rate the weights stay (nearly) those of the starting teacher
    trained, started = (load_vlm(teacher_dir(c, info["data_fingerprint"])) for c in (second, first))
    for (name, a), (_, b) in zip(trained.state_dict().items(), started.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-4), name
    wider = _cfg(cache_dir, **{"train.teacher.init_from": start_dir,
                               "model.teacher.text.hidden_size": 96})
    with pytest.raises(ValueError, match="does not match model.teacher"):
        prepare(wider)
