"""Search-space files: every shipped one samples valid configs; bad ones fail with file:line."""

import glob
import os
import textwrap

import optuna
import pytest

from switchkd.config import to_flat_dict
from sweeps.space import DISTRIBUTIONS, SpaceError, load_space

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = sorted(glob.glob(os.path.join(ROOT, "search_spaces", "*.yaml")))

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _sample(space, n):
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5),
                                direction="maximize")
    configs = []
    for i in range(n):
        trial = study.ask()
        params = space.sample(trial)
        configs.append((params, space.trial_config(params)))
        study.tell(trial, float(i % 7))
    return configs


def test_the_demo_smoke_and_dbild_spaces_ship():
    names = {os.path.basename(p) for p in SHIPPED}
    assert {"smoke.yaml", "default.yaml", "dbild.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=os.path.basename)
def test_shipped_space_samples_20_valid_configs(path):
    space = load_space(path)
    configs = _sample(space, 20)
    assert len({tuple(sorted(p.items(), key=str)) for p, _ in configs}) > 1
    for params, cfg in configs:
        flat = to_flat_dict(cfg)
        for key, value in params.items():
            assert flat[key] == pytest.approx(value) if isinstance(value, float) else \
                flat[key] == value
    for point in space.points_to_evaluate:
        space.trial_config(point)


@pytest.mark.parametrize("path", SHIPPED, ids=os.path.basename)
def test_shipped_space_smoke_variant_builds(path):
    smoke = load_space(path).for_smoke()
    assert smoke.preset == "tiny" and smoke.num_samples == 2
    assert smoke.base_config().train.max_steps <= 20
    _sample(smoke, 5)


def test_conditional_parameter_only_when_its_condition_holds(tmp_path):
    space = _load(tmp_path, """
        study: cond
        preset: tiny
        metric: val/avg10
        mode: max
        space:
          loss.fixed_k: {type: categorical, choices: [null, 4]}
          loss.k_max: {type: int, low: 4, high: 8, when: {loss.fixed_k: null}}
    """)
    for params, _ in _sample(space, 20):
        assert ("loss.k_max" in params) == (params["loss.fixed_k"] is None)


def _load(tmp_path, text, name="space.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return load_space(str(path))


HEADER = """\
study: bad
preset: tiny
metric: val/avg10
mode: max
"""


@pytest.mark.parametrize("body, line, message", [
    ("space:\n  loss.temprature: {type: float, low: 1.0, high: 2.0}\n", 6,
     "unknown config key 'loss.temprature'; did you mean 'loss.temperature'?"),
    ("space:\n  loss.temperature: {type: float, low: 2.0, high: 2.0}\n", 6, "empty range"),
    ("space:\n  loss.k_max:\n    type: int\n    low: 9\n    high: 4\n", 8, "empty range"),
    ("space:\n  loss.fixed_k: {type: categorical, choices: []}\n", 6, "empty range"),
    ("space:\n  loss.temperature:\n    type: gaussian\n    low: 1.0\n", 7,
     "unknown distribution 'gaussian'"),
    ("overrides:\n  train.max_stpes: 3\nspace:\n  loss.temperature: {type: fixed, value: 2.0}\n",
     6, "did you mean 'train.max_steps'?"),
    ("space:\n  optim.lr: {type: log, low: 1e-4, high: 1.0e-2}\n", 6, "write 1.0e-4"),
    ("space:\n  loss.kind: {type: categorical, choices: [dbild, kll]}\n", 6, "must be one of"),
    ("space:\n  loss.k_max: {type: int, low: 4, high: 8, when: {loss.fixd_k: null}}\n", 6,
     "did you mean 'loss.fixed_k'?"),
    ("schedular: {kind: asha}\nspace:\n  loss.temperature: {type: fixed, value: 2.0}\n", 5,
     "did you mean 'scheduler'?"),
    ("space:\n  loss.temperature: {type: float, low: 1.0, high: 2.0}\n"
     "points_to_evaluate:\n  - {loss.temperature: 5.0}\n", 8, "outside its distribution"),
])
def test_invalid_space_names_file_and_line(tmp_path, body, line, message):
    path = tmp_path / "bad.yaml"
    path.write_text(HEADER + body)
    with pytest.raises(SpaceError) as info:
        load_space(str(path))
    text = str(info.value)
    assert text.startswith((f"{path}:{line}:", f"{os.path.relpath(path)}:{line}:")), text
    assert message in text, text


def test_unknown_distribution_lists_the_valid_ones(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(HEADER + "space:\n  loss.temperature: {type: uniform, low: 1.0, high: 2.0}\n")
    with pytest.raises(SpaceError, match=", ".join(DISTRIBUTIONS)):
        load_space(str(path))


def test_command_line_changes_are_validated(tmp_path):
    space = load_space(os.path.join(ROOT, "search_spaces", "smoke.yaml"))
    assert space.with_changes(num_samples=5, workers_per_trial=2).num_samples == 5
    with pytest.raises(SpaceError, match="unknown preset"):
        space.with_changes(preset="huge")
    with pytest.raises(SpaceError, match="did you mean 'train.max_steps'"):
        space.with_changes(overrides={"train.max_step": 3})
    with pytest.raises(SpaceError, match="searched by the space"):
        space.with_changes(overrides={"loss.temperature": 2.0})


def test_cli_rejects_a_bad_space_before_starting_ray(tmp_path, capsys):
    import ray

    from sweeps.cli import sweep_main

    path = tmp_path / "bad.yaml"
    path.write_text(HEADER + "space:\n  loss.temprature: {type: float, low: 1.0, high: 2.0}\n")
    was_running = ray.is_initialized()
    assert sweep_main([str(path), "--results", str(tmp_path / "out")]) == 2
    assert "did you mean 'loss.temperature'" in capsys.readouterr().err
    assert ray.is_initialized() == was_running
    assert not (tmp_path / "out").exists()
