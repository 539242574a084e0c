"""The Parquet contract (analysis.schema) and loading (analysis.load)."""

import json
import os

import pandas as pd
import pytest

from analysis.load import load_results
from analysis.schema import (CORE_CFG_KEYS, COST_COLUMNS, PROVENANCE_COLUMNS, SCHEMA_VERSION,
                             SchemaError, to_frame, validate)
from switchkd.config import to_flat_dict, valid_keys, with_overrides
from switchkd.presets import tiny


def _row(trial_id="t1", status="completed", error=None, **metrics):
    cfg = {f"cfg.{k}": v for k, v in to_flat_dict(tiny()).items()}
    return {"study": "s", "trial_id": trial_id, "status": status, "error": error, "seed": 0,
            "git_sha": "abc", "data_fingerprint": "d", "teacher_fingerprint": "t", **cfg,
            "step": 8, "train/loss": 1.0, "train/ce_loss": 0.9, "val/avg10": 12.5,
            "wall_s": 2.0, "steps": 8, "samples": 64, "samples_per_s": 30.0,
            "teacher_forward_passes": 16, "teacher_backward_passes": 8, **metrics}


def test_core_cfg_keys_are_config_keys():
    assert set(CORE_CFG_KEYS) <= set(valid_keys())


def test_a_row_of_every_config_key_validates_and_round_trips(tmp_path):
    frame = validate(to_frame([_row(), _row("t2", "errored", "NonFiniteLossError: step 3")]),
                     cfg_keys=valid_keys())
    assert frame["schema_version"].tolist() == [SCHEMA_VERSION] * 2
    assert json.loads(frame["cfg.data.tasks"][0]) == list(tiny().data.tasks)
    assert list(frame.columns[:len(PROVENANCE_COLUMNS)]) == list(PROVENANCE_COLUMNS)
    path = tmp_path / "trials.parquet"
    frame.to_parquet(path, index=False)
    back = validate(pd.read_parquet(path), cfg_keys=valid_keys())
    assert back["status"].tolist() == ["completed", "errored"]
    for name in COST_COLUMNS:
        assert back[name].dtype == "float64"


def test_an_errored_trial_without_metrics_still_has_the_columns():
    row = {k: v for k, v in _row("t3", "errored", "boom").items()
           if not k.startswith(("train/", "val/")) and k not in COST_COLUMNS}
    frame = validate(to_frame([row, _row()]))
    assert frame.loc[0, "train/loss"] != frame.loc[0, "train/loss"]  # NaN


@pytest.mark.parametrize("change, message", [
    (lambda f: f.drop(columns=["git_sha"]), "missing columns: ['git_sha']"),
    (lambda f: f.drop(columns=["cfg.loss.temperature"]), "cfg.loss.temperature"),
    (lambda f: f.drop(columns=["val/avg10"]), "no val/* metric"),
    (lambda f: f.assign(status="done"), "status: values ['done']"),
    (lambda f: f.assign(status="errored", error=None), "errored rows must say why"),
    (lambda f: f.assign(error="x"), "only errored rows"),
    (lambda f: f.assign(**{"cfg.data.tasks": [["mme"], ["pope"]]}), "JSON strings"),
    (lambda f: f.assign(**{"train/loss": ["a", "b"]}), "train/loss: expected float64"),
    (lambda f: f.assign(trial_id="same"), "duplicate trials"),
    (lambda f: f.assign(schema_version=SCHEMA_VERSION + 1), "schema_version"),
])
def test_validate_rejects(change, message):
    frame = to_frame([_row("a"), _row("b")])
    with pytest.raises(SchemaError, match=message.replace("[", r"\[").replace("]", r"\]")
                       .replace("*", r"\*")):
        validate(change(frame))


def test_load_reads_parquet_and_result_json_together(tmp_path):
    validate(to_frame([_row("a"), _row("b")])).to_parquet(tmp_path / "trials.parquet")
    run = tmp_path / "runs" / "x"
    run.mkdir(parents=True)
    record = {**_row("run"), "cfg.data.tasks": ["mme", "pope"], "study": "single"}
    record.pop("step")
    (run / "result.json").write_text(json.dumps(record))
    frame = load_results([tmp_path / "trials.parquet", run / "result.json"])
    assert frame["trial_id"].tolist() == ["a", "b", "run"]
    assert json.loads(frame["cfg.data.tasks"][2]) == ["mme", "pope"]
    assert load_results(tmp_path)["trial_id"].tolist() == ["a", "b", "run"]
    with pytest.raises(FileNotFoundError):
        load_results(tmp_path / "nothing")


@pytest.mark.slow
def test_load_reads_real_single_run_results(tiny_cfg, tmp_path):
    """result.json as switchkd.train writes it, for a completed and an errored run."""
    from switchkd.train import NonFiniteLossError, train

    done, failed = str(tmp_path / "done"), str(tmp_path / "nan")
    train(with_overrides(tiny_cfg, {"train.max_steps": 2, "train.eval_every": 2,
                                    "data.val_items_per_task": 1}), out_dir=done)
    with pytest.raises(NonFiniteLossError):
        train(with_overrides(tiny_cfg, {"optim.lr": 1e30, "optim.grad_clip": 0.0,
                                        "optim.warmup_steps": 0, "train.max_steps": 5,
                                        "data.val_items_per_task": 1}), out_dir=failed)
    frame = load_results([os.path.join(done, "result.json"), os.path.join(failed, "result.json")])
    validate(frame, cfg_keys=valid_keys())
    assert frame["status"].tolist() == ["completed", "errored"]
    assert "non-finite" in frame["error"][1]
