"""Choosing the trial to export (sweeps.publish): the best by metric among trials whose
checkpoint is really on disk; ties go to the cheaper trial."""

import os

import pandas as pd

from sweeps.publish import STATE_FILE, best_trial, split_by_checkpoint


def _checkpoint(tmp_path, name):
    folder = tmp_path / name
    folder.mkdir()
    (folder / STATE_FILE).write_text("{}")
    return str(folder)


def test_a_trial_whose_recorded_checkpoint_is_gone_is_not_exported(tmp_path):
    trials = pd.DataFrame({
        "trial_id": ["stopped", "completed", "no_checkpoint"],
        "status": ["stopped_early", "completed", "completed"],
        "val/avg10": [14.17, 14.17, 30.0],
        "wall_s": [0.5, 1.4, 0.1],
        # The stopped trial's row names a folder that never reached the disk (seen in CI).
        "checkpoint_path": [str(tmp_path / "never_written"), _checkpoint(tmp_path, "c"), None],
    })
    # On the rows alone the tie goes to the cheaper, stopped trial ...
    assert best_trial(trials.dropna(subset=["checkpoint_path"]), "val/avg10")["trial_id"] == \
        "stopped"
    # ... which cannot be exported: only trials with their checkpoint on disk are candidates.
    kept, gone = split_by_checkpoint(trials)
    assert kept["trial_id"].tolist() == ["completed"] and gone == ["stopped"]
    assert best_trial(kept, "val/avg10")["trial_id"] == "completed"
    assert os.path.isfile(os.path.join(kept["checkpoint_path"].iloc[0], STATE_FILE))
