"""Ablations: file validation (no Ray), every shipped ablation builds, and one end-to-end run
(ablate -> report -> export) on the tiny preset with the shared local Ray."""

import glob
import os
import textwrap
import time

import pandas as pd
import pytest

from switchkd.config import to_flat_dict
from sweeps.ablate import extend_seeds, load_ablation
from sweeps.space import SpaceError
from tests.ray_fixtures import ray_session  # noqa: F401  (also loadable as a pytest plugin)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = sorted(glob.glob(os.path.join(ROOT, "search_spaces", "ablations", "*.yaml")))


# ------------------------------------------------------------------------------------------
# Shipped files (no Ray)
# ------------------------------------------------------------------------------------------


def test_the_three_ablations_ship():
    assert {os.path.basename(p) for p in SHIPPED} >= {"components.yaml", "losses.yaml",
                                                      "switch_ratio.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=os.path.basename)
def test_shipped_ablation_loads_and_every_variant_builds(path):
    ablation = load_ablation(path)
    header = open(path).read().split("\nstudy:")[0]
    for word in ("Run:", "Budget:", "Cost:", "Expect:", "switchkd ablate"):
        assert word in header, word
    assert ablation.question and len(ablation.seeds) >= 3
    configs = {}
    for variant, seed in ablation.cells():
        cfg = ablation.trial_config(variant, seed)
        assert cfg.run.seed == seed
        flat = to_flat_dict(cfg)
        for key, value in ablation.variant_overrides(variant).items():
            assert flat[key] == value, (variant, key)
        configs.setdefault(variant, flat)
    assert len({str(sorted(c.items())) for c in configs.values()}) == len(ablation.variants)
    smoke = ablation.for_smoke()
    assert smoke.preset == "tiny" and smoke.base_config().train.max_steps <= 20
    assert set(smoke.variants) <= set(ablation.variants) and smoke.baseline in smoke.variants
    for variant, seed in smoke.cells():
        smoke.trial_config(variant, seed)


def test_the_shipped_variants_say_what_the_issue_asks():
    components = load_ablation(os.path.join(ROOT, "search_spaces", "ablations", "components.yaml"))
    cfg = {v: components.trial_config(v, 0) for v in components.variants}
    assert cfg["sft_only"].train.stage == "sft"
    assert cfg["align_only"].loss.vsd_weight == 0 and cfg["align_only"].loss.align_weight > 0
    assert cfg["vsd_only"].loss.align_weight == 0 and cfg["vsd_only"].loss.vsd_weight > 0
    assert cfg["full_random_vision"].model.student_vision_init == "random"
    losses = load_ablation(os.path.join(ROOT, "search_spaces", "ablations", "losses.yaml"))
    got = {v: losses.trial_config(v, 0).loss for v in losses.variants}
    assert {loss.kind for loss in got.values()} == {"kl", "reverse_kl", "jsd", "bild", "dbild"}
    assert got["bild_top8"].bild_top_k == 8 and got["dbild_fixed_k8"].fixed_k == 8
    assert got["dbild_forward"].divergence == "forward"
    assert {got["teacher_led"].directions, got["student_led"].directions} == {"teacher", "student"}
    assert all(loss.align_weight == 1.0 and loss.vsd_weight == 1.0 for loss in got.values())
    ratio = load_ablation(os.path.join(ROOT, "search_spaces", "ablations", "switch_ratio.yaml"))
    assert sorted(ratio.trial_config(v, 0).loss.switch_ratio for v in ratio.variants) == \
        [0.0, 0.25, 0.5, 1.0]


def test_extend_seeds():
    assert extend_seeds([0, 1, 2], 2) == [0, 1]
    assert extend_seeds([0, 1, 2], 5) == [0, 1, 2, 3, 4]
    assert extend_seeds([7, 3], 4) == [7, 3, 8, 9]


# ------------------------------------------------------------------------------------------
# Bad files fail before anything starts, naming file and line
# ------------------------------------------------------------------------------------------

HEAD = """
study: bad
preset: tiny
metric: val/avg10
mode: max
seeds: 2
"""


@pytest.mark.parametrize("body, line, message", [
    ("variants:\n  a: {loss.temprature: 2.0}\n", 8,
     "unknown config key 'loss.temprature'; did you mean 'loss.temperature'?"),
    ("variants:\n  a: {}\n  b:\n    loss.kind: dbild\n    loss.align_weight: -1.0\n", 11,
     "variant 'b': loss.align_weight: must be >= 0"),
    ("variants:\n  a: {}\n  b: {loss.kind: dbild}\n", 9, "same config as 'a'"),
    ("variants:\n  a: {}\n  w: {loss.window: 4}\n", 9, "loss.k_max: must be <= window"),
    ("variants:\n  a: {}\n  lr: {optim.lr: 1e-4}\n", 9, "write 1.0e-4"),
    ("variants:\n  a: {run.seed: 3}\n", 8, "set per trial from 'seeds'"),
    ("variantz:\n  a: {}\n", 7, "unknown field 'variantz'; did you mean 'variants'?"),
    ("baseline: ful\nvariants:\n  full: {}\n  sft: {train.stage: sft}\n", 7,
     "baseline 'ful' is not a variant; did you mean 'full'?"),
    ("variants:\n  full: {}\n  sft: {train.stage: sft}\nsmoke: {variants: [sft, ful]}\n", 10,
     "unknown variant 'ful'"),
    ("variants:\n  full: {}\nsmoke: {overrides: {train.max_step: 4}}\n", 9,
     "did you mean 'train.max_steps'?"),
])
def test_bad_ablation_fails_with_file_and_line(tmp_path, body, line, message):
    path = tmp_path / "bad.yaml"
    path.write_text(HEAD + body)
    with pytest.raises(SpaceError) as err:
        load_ablation(str(path))
    text = str(err.value)
    shown = (str(path), os.path.relpath(path))
    assert any(text.startswith(f"{p}:{line}:") for p in shown), text
    assert message in text, text


def test_bad_seeds_and_command_line_changes(tmp_path):
    path = tmp_path / "seeds.yaml"
    path.write_text(HEAD.replace("seeds: 2", "seeds: [0, 0]") + "variants:\n  a: {}\n")
    with pytest.raises(SpaceError, match=":6: duplicate seeds"):
        load_ablation(str(path))
    path.write_text(HEAD + "variants:\n  a: {}\n  b: {loss.kind: kl}\n")
    ablation = load_ablation(str(path))
    with pytest.raises(SpaceError, match="set by variant"):
        ablation.with_changes(overrides={"loss.kind": "jsd"})
    with pytest.raises(SpaceError, match="did you mean"):
        ablation.with_changes(overrides={"loss.temprature": 2.0})


# ------------------------------------------------------------------------------------------
# End to end on the shared local Ray: ablate -> report -> export
# ------------------------------------------------------------------------------------------


@pytest.mark.ray
@pytest.mark.slow
def test_ablation_end_to_end_report_and_export(ray_session, tmp_path):  # noqa: F811
    """A 2-variant x 1-seed ablation (SFT vs Switch-KD, 4 steps) lands in Parquet with test
    scores per item; the report has the paper-format table and figures; the best student
    exports to a folder transformers loads and generates with."""
    from PIL import Image
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from analysis.report import report_main
    from sweeps.ablate_cli import ablate_main
    from sweeps.publish import export_main

    space = tmp_path / "two.yaml"
    space.write_text(textwrap.dedent("""
        study: two
        question: does the tiny pipeline run end to end?
        preset: tiny
        metric: val/avg10
        mode: max
        seeds: 1
        max_concurrent_trials: 2
        overrides: {train.max_steps: 4, train.eval_every: 2, train.checkpoint_every: 2,
                    train.log_every: 1, data.val_items_per_task: 1, train.teacher.max_steps: 4}
        variants:
          sft: {train.stage: sft}
          full: {}
    """))
    results, cache = str(tmp_path / "results"), str(tmp_path / "cache")
    start = time.perf_counter()
    assert ablate_main([str(space), "--results", results, "--cache-dir", cache]) == 0
    ablate_s = time.perf_counter() - start

    trials = pd.read_parquet(os.path.join(results, "trials.parquet"))
    assert trials["variant"].tolist() == ["sft", "full"]
    assert (trials["status"] == "completed").all() and (trials["seed"] == 0).all()
    assert trials["cfg.train.stage"].tolist() == ["sft", "distill"]
    # SFT starts from the teacher's vision encoder (the default), so it names the same teacher,
    # but it never runs it.
    teachers, passes = trials["teacher_fingerprint"], trials["teacher_forward_passes"].tolist()
    assert teachers.notna().all() and teachers.nunique() == 1
    assert passes[0] == 0 < passes[1]
    assert trials["test/avg10"].between(0, 100).all() and trials["val/avg10"].notna().all()
    assert all(os.path.isdir(p) for p in trials["checkpoint_path"])
    items = pd.read_parquet(os.path.join(results, "items.parquet"))
    assert list(items.columns) == ["study", "trial_id", "variant", "seed", "task", "index",
                                   "score"]
    per_trial = items.groupby("trial_id").size()
    assert len(per_trial) == 2 and per_trial.nunique() == 1 and per_trial.iloc[0] >= 100
    assert set(items["task"]) == {"mme", "mmb", "mmbcn", "vqa", "gqa", "sqa", "mmmu", "textvqa",
                                  "vizwiz", "pope"}
    history = pd.read_parquet(os.path.join(results, "history.parquet"))
    assert sorted(history["step"]) == [2.0, 2.0, 4.0, 4.0]
    assert history.loc[history["variant"] == "full", "train/k_teacher_mean"].notna().all()

    report_dir = str(tmp_path / "report")
    assert report_main([results, "--out", report_dir, "--bootstrap-samples", "500"]) == 0
    text = open(os.path.join(report_dir, "report.md")).read()
    assert "| Variant | n | MME | MMB | MMB-CN | VQAv2 | GQA | SciQA | MMMU | TextVQA | VizWiz " \
           "| POPE | Avg10 | Perception | Cognition | Domain | OCR | Halluc. |" in text
    assert "| sft (baseline) | 1 |" in text and "| full | 1 |" in text
    assert "1 seed(s) x" in text  # the paired test used the item scores
    pngs = sorted(glob.glob(os.path.join(report_dir, "*.png")))
    assert pngs and all(os.path.getsize(p) > 0 for p in pngs)
    assert {"fig1_two_bars.png", "fig1_two_kneedle_k.png", "fig1_two_train_loss.png"} <= \
        {os.path.basename(p) for p in pngs}

    export_dir = str(tmp_path / "export")
    assert export_main([results, "--out", export_dir]) == 0
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json",
                 "switchkd_config.yaml", "README.md", "reproduce.sh"):
        assert os.path.isfile(os.path.join(export_dir, name)), name
    card = open(os.path.join(export_dir, "README.md")).read()
    assert "switchkd train --preset tiny" in card and "| Avg10 |" in card
    model = LlavaForConditionalGeneration.from_pretrained(export_dir, local_files_only=True)
    processor = AutoProcessor.from_pretrained(export_dir, local_files_only=True)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color?"}]}],
        add_generation_prompt=True)
    inputs = processor(images=Image.new("RGB", (32, 32), "red"), text=prompt, return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] > inputs["input_ids"].shape[1]
    print(f"\nablation 2 cells: {ablate_s:.1f} s wall (incl. data + tiny teacher), trials' own "
          f"wall_s {trials['wall_s'].sum():.1f} s")
