"""Declarative YAML search spaces: load, validate (with file:line errors) and sample.

A space file names a study, a base preset, fixed overrides and the distributions of the keys
the study varies. Every key is a dotted config key; everything is checked before any trial
starts, and errors read ``search_spaces/x.yaml:12: unknown config key 'loss.temprature'; did
you mean 'loss.temperature'?``. Example::

    study: dbild                  # results and the Optuna study are named after it
    question: which DBiLD settings maximise Avg10 on the default preset?
    preset: default
    metric: val/avg10
    mode: max
    num_samples: 24
    max_concurrent_trials: 1
    seed: 0                       # TPE seed
    workers_per_trial: 1          # Ray Train workers per trial (DDP when > 1)
    resources: {cpus_per_worker: 1, gpus_per_worker: 0}
    max_failures: 0               # Ray Train retries of a crashed trial, from its checkpoint
    scheduler: {kind: asha, grace_period: null, reduction_factor: 2}   # null: train.eval_every
    overrides: {train.max_steps: 1000}
    space:
      loss.temperature: {type: float, low: 1.0, high: 5.0}
      loss.align_weight: {type: log, low: 0.1, high: 10.0}
      loss.fixed_k: {type: categorical, choices: [null, 4, 8]}
      loss.k_max: {type: int, low: 8, high: 32, when: {loss.fixed_k: null}}
      loss.kind: {type: fixed, value: dbild}
    points_to_evaluate: [{loss.temperature: 3.0, loss.align_weight: 1.0, loss.fixed_k: null}]
    smoke: {preset: tiny, num_samples: 2, overrides: {train.max_steps: 8}}

Distributions: ``int`` (low, high inclusive, optional step and log), ``float`` (low < high,
optional step or log), ``log`` (float, log-uniform, 0 < low < high), ``categorical``
(choices: scalars), ``fixed`` (value). ``when: {key: value}`` (or ``{key: [v1, v2]}``) makes a
parameter conditional on a parameter listed before it (or on the base config's value).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import yaml

from switchkd.config import (Config, ConfigError, to_flat_dict, valid_keys, with_overrides,
                             yaml_float_hint)
from switchkd.presets import PRESETS, get_preset

DISTRIBUTIONS = ("int", "float", "log", "categorical", "fixed")
SCHEDULERS = ("asha", "fifo")
TOP_LEVEL = ("study", "question", "preset", "metric", "mode", "num_samples",
             "max_concurrent_trials", "seed", "workers_per_trial", "resources", "max_failures",
             "keep_checkpoints", "scheduler", "overrides", "space", "points_to_evaluate", "smoke")
PARAM_FIELDS = {
    "int": ("type", "low", "high", "step", "log", "when"),
    "float": ("type", "low", "high", "step", "log", "when"),
    "log": ("type", "low", "high", "when"),
    "categorical": ("type", "choices", "when"),
    "fixed": ("type", "value", "when"),
}
SMOKE_DEFAULTS: Mapping[str, Any] = {
    "preset": "tiny", "num_samples": 2,
    "overrides": {"train.max_steps": 8, "train.eval_every": 4, "train.checkpoint_every": 4,
                  "train.log_every": 4, "data.val_items_per_task": 2},
}


class SpaceError(ValueError):
    """A search space file is invalid; the message starts with ``file:line:``."""


@dataclass(frozen=True)
class Param:
    """One searched (or fixed) dotted key; ``when`` holds ``(key, allowed values)`` pairs."""

    key: str
    kind: str
    low: Any = None
    high: Any = None
    step: Any = None
    log: bool = False
    choices: tuple = ()
    value: Any = None
    when: tuple[tuple[str, tuple], ...] = ()
    line: int = 0

    def contains(self, value: Any) -> bool:
        if self.kind == "fixed":
            return value == self.value
        if self.kind == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return self.low <= value <= self.high and (self.kind != "int" or float(value).is_integer())


@dataclass(frozen=True)
class Scheduler:
    kind: str = "asha"
    grace_period: Optional[int] = None   # steps; None: the base config's train.eval_every
    reduction_factor: float = 2.0
    max_t: Optional[int] = None          # steps; None: the largest train.max_steps a trial can get


@dataclass(frozen=True)
class SearchSpace:
    """A validated study: base config, searched parameters, budget and resources."""

    path: str
    study: str
    question: str
    preset: str
    metric: str
    mode: str
    num_samples: int
    max_concurrent_trials: int
    seed: int
    workers_per_trial: int
    cpus_per_worker: float
    gpus_per_worker: float
    max_failures: int
    keep_checkpoints: int
    scheduler: Scheduler
    overrides: Mapping[str, Any]
    params: tuple[Param, ...]
    points_to_evaluate: tuple[Mapping[str, Any], ...] = ()
    smoke: Mapping[str, Any] = field(default_factory=dict)

    # -- configs ---------------------------------------------------------------------------

    def base_config(self) -> Config:
        """The preset with the fixed overrides applied (what every trial starts from)."""
        return with_overrides(get_preset(self.preset), self.overrides)

    def trial_config(self, params: Mapping[str, Any]) -> Config:
        """The config of one trial: base config + fixed overrides + sampled ``params``."""
        return with_overrides(get_preset(self.preset), {**self.overrides, **params})

    def max_steps(self) -> int:
        """The most steps any trial can run (ASHA's max_t)."""
        for p in self.params:
            if p.key == "train.max_steps":
                return int(max(p.choices) if p.kind == "categorical" else
                           p.value if p.kind == "fixed" else p.high)
        return self.base_config().train.max_steps

    # -- sampling --------------------------------------------------------------------------

    def sample(self, trial: Any) -> dict[str, Any]:
        """Define-by-run sampling on an Optuna trial; returns ``{dotted key: value}``.

        Usable as ``OptunaSearch(space=space.sample)`` and with ``optuna.create_study().ask()``.
        Inactive conditional parameters are left out (the trial keeps the base value).
        """
        base = to_flat_dict(self.base_config())
        chosen: dict[str, Any] = {}
        for p in self.params:
            if not all(chosen.get(k, base.get(k)) in allowed for k, allowed in p.when):
                continue
            if p.kind == "fixed":
                chosen[p.key] = p.value
            elif p.kind == "categorical":
                chosen[p.key] = trial.suggest_categorical(p.key, list(p.choices))
            elif p.kind == "int":
                chosen[p.key] = trial.suggest_int(p.key, p.low, p.high, step=p.step or 1,
                                                  log=p.log)
            else:
                chosen[p.key] = trial.suggest_float(p.key, float(p.low), float(p.high),
                                                    step=p.step, log=p.log or p.kind == "log")
        return chosen

    # -- variants --------------------------------------------------------------------------

    def for_smoke(self) -> "SearchSpace":
        """The ``--smoke`` variant: the file's ``smoke:`` block (default: tiny preset, 2 trials,
        8 steps)."""
        smoke = {**SMOKE_DEFAULTS, **self.smoke}
        overrides = {**SMOKE_DEFAULTS["overrides"], **self.smoke.get("overrides", {})}
        return self.with_changes(preset=smoke["preset"], num_samples=smoke["num_samples"],
                                 max_concurrent_trials=smoke.get("max_concurrent_trials"),
                                 overrides=overrides)

    def with_changes(self, *, preset: Optional[str] = None, num_samples: Optional[int] = None,
                     workers_per_trial: Optional[int] = None,
                     max_concurrent_trials: Optional[int] = None,
                     overrides: Optional[Mapping[str, Any]] = None) -> "SearchSpace":
        """A copy with command-line changes applied; ``overrides`` add to the file's own.

        Raises:
            SpaceError: a change is invalid (unknown preset or key, bad value, count < 1).
        """
        where = f"{self.path}: command line"
        changes: dict[str, Any] = {}
        if preset is not None:
            if preset not in PRESETS:
                raise SpaceError(f"{where}: unknown preset {preset!r}; available: "
                                 f"{sorted(PRESETS)}")
            changes["preset"] = preset
        for name, value in (("num_samples", num_samples), ("workers_per_trial", workers_per_trial),
                            ("max_concurrent_trials", max_concurrent_trials)):
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise SpaceError(f"{where}: {name} must be an integer >= 1, got {value!r}")
                changes[name] = value
        if overrides:
            for key in overrides:
                _check_key(key, where)
                if any(p.key == key for p in self.params):
                    raise SpaceError(f"{where}: {key!r} is searched by the space; it cannot also "
                                     f"be overridden")
            changes["overrides"] = {**self.overrides, **overrides}
        space = dataclasses.replace(self, **changes)
        try:
            space.base_config()
        except ConfigError as err:
            raise SpaceError(f"{where}: {err}") from None
        return space


# ------------------------------------------------------------------------------------------
# Loading and validation
# ------------------------------------------------------------------------------------------


class _Lines:
    """Line numbers (1-based) of the nodes of a YAML document, by key path."""

    def __init__(self, text: str):
        self.root = yaml.compose(text)

    def node(self, *path: Any) -> Optional[yaml.Node]:
        node = self.root
        for part in path:
            if isinstance(node, yaml.MappingNode):
                matches = [v for k, v in node.value if k.value == str(part) or
                           (part is None and k.value in ("null", "~"))]
                if not matches:
                    return None
                node = matches[0]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if part >= len(node.value):
                    return None
                node = node.value[part]
            else:
                return None
        return node

    def key_line(self, *path: Any) -> int:
        """The line of the key ``path[-1]`` (falls back to its parent's line)."""
        parent = self.node(*path[:-1])
        if isinstance(parent, yaml.MappingNode):
            for k, _ in parent.value:
                if k.value == str(path[-1]):
                    return k.start_mark.line + 1
        return self.line(*path[:-1]) if path else 1

    def line(self, *path: Any) -> int:
        node = self.node(*path)
        if node is None:
            return self.key_line(*path) if path else 1
        return node.start_mark.line + 1


class _Where:
    """``file:line`` prefixes for error messages."""

    def __init__(self, shown: str, lines: _Lines):
        self.shown, self.lines = shown, lines

    def at(self, *path: Any) -> str:
        """Where the value at ``path`` starts."""
        return f"{self.shown}:{self.lines.line(*path)}"

    def at_key(self, *path: Any) -> str:
        """Where the key ``path[-1]`` is written."""
        return f"{self.shown}:{self.lines.key_line(*path)}"


def _closest(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def _check_key(key: Any, where: str) -> None:
    if not isinstance(key, str) or key not in _VALID_KEYS:
        raise SpaceError(f"{where}: unknown config key {key!r}{_closest(str(key), _VALID_KEYS)}")


_VALID_KEYS = frozenset(valid_keys())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _value_error(base: Config, key: str, value: Any) -> Optional[str]:
    """Why ``key=value`` can never be a valid setting (wrong type or choice), else None.

    Cross-field constraints (``k_max <= window`` ...) are left to the trial: they may hold
    together with other sampled values.
    """
    try:
        with_overrides(base, {key: value})
    except ConfigError as err:
        text = str(err)
        if "expected " in text or "must be one of" in text:
            return text
    return None


def load_space(path: str) -> SearchSpace:
    """Read and validate a YAML search space.

    Raises:
        SpaceError: with ``file:line:`` and what is wrong (unknown key with a suggestion,
            empty range, unknown distribution, bad value, ...). Nothing is started.
        FileNotFoundError: ``path`` does not exist.
    """
    data, where = read_yaml_mapping(path, "a search space")
    return _parse(data, where, os.path.abspath(path))


def read_yaml_mapping(path: str, what: str) -> tuple[dict, "_Where"]:
    """Parse a YAML file that must hold a mapping, keeping line numbers for error messages.

    Raises:
        SpaceError: ``file:line: not valid YAML`` or ``file:1: <what> must be a mapping``.
    """
    with open(path) as f:
        text = f.read()
    shown = os.path.relpath(path) if not os.path.relpath(path).startswith("..") else path
    try:
        data = yaml.safe_load(text)
        lines = _Lines(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise SpaceError(f"{shown}:{line}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise SpaceError(f"{shown}:1: {what} must be a mapping")
    return data, _Where(shown, lines)


def _parse(data: dict, where: _Where, path: str) -> SearchSpace:
    at, at_key, shown = where.at, where.at_key, where.shown

    for key in data:
        if key not in TOP_LEVEL:
            raise SpaceError(f"{at_key(key)}: unknown field {key!r}{_closest(str(key), TOP_LEVEL)}"
                             f" (valid: {', '.join(TOP_LEVEL)})")
    for key in ("study", "metric", "mode", "space"):
        if key not in data:
            raise SpaceError(f"{shown}:1: missing required field {key!r}")

    def integer(key: str, default: int, minimum: int = 1, section: Optional[str] = None) -> int:
        source = data.get(section, {}) if section else data
        value = source.get(key, default)
        keys = (section, key) if section else (key,)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise SpaceError(f"{at(*keys)}: {key} must be an integer >= {minimum}, got {value!r}")
        return value

    study = data["study"]
    if not isinstance(study, str) or not study or not all(c.isalnum() or c in "-_" for c in study):
        raise SpaceError(f"{at('study')}: study must be a name of letters, digits, '-' or '_'")
    preset = data.get("preset", "default")
    if preset not in PRESETS:
        raise SpaceError(f"{at('preset')}: unknown preset {preset!r}{_closest(str(preset), PRESETS)}")
    metric, mode = data["metric"], data["mode"]
    if not isinstance(metric, str) or not metric.startswith(("val/", "train/")):
        raise SpaceError(f"{at('metric')}: metric must be a reported train/* or val/* key, "
                         f"got {metric!r}")
    if mode not in ("min", "max"):
        raise SpaceError(f"{at('mode')}: mode must be 'min' or 'max', got {mode!r}")

    resources = data.get("resources") or {}
    if not isinstance(resources, dict):
        raise SpaceError(f"{at('resources')}: resources must be a mapping")
    for key in resources:
        if key not in ("cpus_per_worker", "gpus_per_worker"):
            raise SpaceError(f"{at_key('resources', key)}: unknown resource {key!r} "
                             f"(valid: cpus_per_worker, gpus_per_worker)")
    cpus = resources.get("cpus_per_worker", 1)
    gpus = resources.get("gpus_per_worker", 0)
    for key, value, minimum in (("cpus_per_worker", cpus, 0), ("gpus_per_worker", gpus, 0)):
        if not _is_number(value) or value < minimum:
            raise SpaceError(f"{at('resources', key)}: {key} must be a number >= {minimum}")

    scheduler_data = data.get("scheduler") or {}
    if not isinstance(scheduler_data, dict):
        raise SpaceError(f"{at('scheduler')}: scheduler must be a mapping")
    for key in scheduler_data:
        if key not in ("kind", "grace_period", "reduction_factor", "max_t"):
            raise SpaceError(f"{at_key('scheduler', key)}: unknown scheduler field {key!r}"
                             f"{_closest(str(key), ('kind', 'grace_period', 'reduction_factor', 'max_t'))}")
    kind = scheduler_data.get("kind", "asha")
    if kind not in SCHEDULERS:
        raise SpaceError(f"{at('scheduler', 'kind')}: unknown scheduler {kind!r}; valid: "
                         f"{list(SCHEDULERS)}")
    for key in ("grace_period", "max_t"):
        value = scheduler_data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise SpaceError(f"{at('scheduler', key)}: {key} must be null or an integer >= 1")
    factor = scheduler_data.get("reduction_factor", 2)
    if not _is_number(factor) or factor <= 1:
        raise SpaceError(f"{at('scheduler', 'reduction_factor')}: reduction_factor must be > 1")
    scheduler = Scheduler(kind=kind, grace_period=scheduler_data.get("grace_period"),
                          reduction_factor=float(factor), max_t=scheduler_data.get("max_t"))

    overrides = _overrides(data.get("overrides"), ("overrides",), where)
    try:
        base = with_overrides(get_preset(preset), overrides)
    except ConfigError as err:
        key = str(err).split(":")[0].strip("'")
        where = at("overrides", key) if key in overrides else at("overrides")
        raise SpaceError(f"{where}: {err}") from None

    params = _params(data["space"], base, overrides, where)
    points = _points(data.get("points_to_evaluate"), params, where)
    smoke = data.get("smoke") or {}
    if not isinstance(smoke, dict):
        raise SpaceError(f"{at('smoke')}: smoke must be a mapping")
    for key in smoke:
        if key not in ("preset", "num_samples", "max_concurrent_trials", "overrides"):
            raise SpaceError(f"{at_key('smoke', key)}: unknown smoke field {key!r} (valid: "
                             f"preset, num_samples, max_concurrent_trials, overrides)")
    if "overrides" in smoke:
        smoke = {**smoke, "overrides": _overrides(smoke["overrides"], ("smoke", "overrides"),
                                                  where)}

    space = SearchSpace(
        path=path, study=study, question=str(data.get("question", "")), preset=preset,
        metric=metric, mode=mode, num_samples=integer("num_samples", 1),
        max_concurrent_trials=integer("max_concurrent_trials", 1),
        seed=integer("seed", 0, minimum=0), workers_per_trial=integer("workers_per_trial", 1),
        cpus_per_worker=float(cpus), gpus_per_worker=float(gpus),
        max_failures=integer("max_failures", 0, minimum=-1),
        keep_checkpoints=integer("keep_checkpoints", 1),
        scheduler=scheduler, overrides=overrides, params=params, points_to_evaluate=points,
        smoke=smoke)
    try:
        space.for_smoke()
    except SpaceError as err:
        raise SpaceError(f"{at('smoke')}: smoke variant: {str(err).split(': ', 2)[-1]}") from None
    return space


def _overrides(value: Any, path: tuple, where: _Where) -> dict[str, Any]:
    at, at_key = where.at, where.at_key
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpaceError(f"{at(*path)}: {path[-1]} must be a mapping of dotted keys to values")
    for key in value:
        _check_key(key, at_key(*path, key))
    return dict(value)


def _params(space: Any, base: Config, overrides: Mapping[str, Any],
            here: _Where) -> tuple[Param, ...]:
    at, at_key = here.at, here.at_key
    if not isinstance(space, dict) or not space:
        raise SpaceError(f"{at('space')}: space must be a non-empty mapping of dotted keys to "
                         f"distributions")
    params: list[Param] = []
    for key, spec in space.items():
        where = at_key("space", key)
        _check_key(key, where)
        if key in overrides:
            raise SpaceError(f"{where}: {key!r} is both fixed in overrides and searched")
        if not isinstance(spec, dict):
            raise SpaceError(f"{where}: {key}: expected a mapping like {{type: float, low: 0.1, "
                             f"high: 1.0}}, got {spec!r}")
        kind = spec.get("type")
        if kind not in DISTRIBUTIONS:
            raise SpaceError(f"{at('space', key, 'type') if 'type' in spec else where}: {key}: "
                             f"unknown distribution {kind!r}{_closest(str(kind), DISTRIBUTIONS)} "
                             f"(valid: {', '.join(DISTRIBUTIONS)})")
        for name in spec:
            if name not in PARAM_FIELDS[kind]:
                raise SpaceError(f"{at_key('space', key, name)}: {key}: {kind} takes "
                                 f"{', '.join(PARAM_FIELDS[kind][1:])}, not {name!r}")
        line = here.lines.key_line("space", key)
        when = _when(spec.get("when"), key, params, here)
        if kind == "fixed":
            if "value" not in spec:
                raise SpaceError(f"{where}: {key}: fixed needs a value")
            param = Param(key, kind, value=spec["value"], when=when, line=line)
            candidates = [spec["value"]]
        elif kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices:
                raise SpaceError(f"{at('space', key, 'choices') if 'choices' in spec else where}: "
                                 f"{key}: empty range: categorical needs a non-empty list of choices")
            for i, choice in enumerate(choices):
                if not (choice is None or isinstance(choice, (bool, int, float, str))):
                    raise SpaceError(f"{at('space', key, 'choices', i)}: {key}: choices must be "
                                     f"scalars (null, bool, number, string), got {choice!r}")
            if len({repr(c) for c in choices}) != len(choices):
                raise SpaceError(f"{at('space', key, 'choices')}: {key}: duplicate choices")
            param = Param(key, kind, choices=tuple(choices), when=when, line=line)
            candidates = list(choices)
        else:
            param = _numeric(key, kind, spec, when, line, at, where)
            candidates = [param.low, param.high]
        for value in candidates:
            problem = _value_error(base, key, value)
            if problem:
                field_name = {"fixed": "value", "categorical": "choices"}.get(kind, "low")
                raise SpaceError(f"{at('space', key, field_name)}: {problem}")
        params.append(param)
    return tuple(params)


def _numeric(key: str, kind: str, spec: dict, when: tuple, line: int, at, where: str) -> Param:
    for name in ("low", "high"):
        if name not in spec:
            raise SpaceError(f"{where}: {key}: {kind} needs low and high")
        if not _is_number(spec[name]):
            raise SpaceError(f"{at('space', key, name)}: {key}: {name} must be a number, got "
                             f"{spec[name]!r}{yaml_float_hint(spec[name])}")
    low, high = spec["low"], spec["high"]
    step, log = spec.get("step"), spec.get("log", False)
    if not isinstance(log, bool):
        raise SpaceError(f"{at('space', key, 'log')}: {key}: log must be true or false")
    if kind == "int":
        for name in ("low", "high"):
            if not float(spec[name]).is_integer():
                raise SpaceError(f"{at('space', key, name)}: {key}: int bounds must be integers")
        low, high = int(low), int(high)
        if low > high:
            raise SpaceError(f"{at('space', key, 'low')}: {key}: empty range: low={low} > "
                             f"high={high}")
    elif not low < high:
        raise SpaceError(f"{at('space', key, 'low')}: {key}: empty range: low={low} must be < "
                         f"high={high} (use type: fixed for a constant)")
    if (kind == "log" or log) and low <= 0:
        raise SpaceError(f"{at('space', key, 'low')}: {key}: a log range needs low > 0, got {low}")
    if step is not None:
        if not _is_number(step) or step <= 0 or (kind == "int" and not float(step).is_integer()):
            raise SpaceError(f"{at('space', key, 'step')}: {key}: step must be a positive "
                             f"{'integer' if kind == 'int' else 'number'}")
        if log:
            raise SpaceError(f"{at('space', key, 'step')}: {key}: step and log cannot be combined")
        if (high - low) / step + 1e-9 < 1 and kind == "float":
            raise SpaceError(f"{at('space', key, 'step')}: {key}: empty range: step {step} is "
                             f"wider than [{low}, {high}]")
    return Param(key, kind, low=low, high=high, step=int(step) if kind == "int" and step else step,
                 log=log, when=when, line=line)


def _when(value: Any, key: str, earlier: list[Param], here: _Where) -> tuple:
    at, at_key = here.at, here.at_key
    if value is None:
        return ()
    if not isinstance(value, dict) or not value:
        raise SpaceError(f"{at('space', key, 'when')}: {key}: when must be a mapping like "
                         f"{{loss.fixed_k: null}}")
    known = {p.key: p for p in earlier}
    conditions = []
    for ref, allowed in value.items():
        where = at_key("space", key, "when", ref)
        _check_key(ref, where)
        if ref == key:
            raise SpaceError(f"{where}: {key}: a parameter cannot depend on itself")
        allowed = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        if ref in known and known[ref].kind in ("categorical", "fixed"):
            for v in allowed:
                if not known[ref].contains(v):
                    raise SpaceError(f"{where}: {key}: {ref} can never be {v!r} "
                                     f"(its values: {list(known[ref].choices) or [known[ref].value]})")
        conditions.append((ref, allowed))
    return tuple(conditions)


def _points(value: Any, params: tuple[Param, ...], here: _Where) -> tuple[dict, ...]:
    at, at_key = here.at, here.at_key
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SpaceError(f"{at('points_to_evaluate')}: points_to_evaluate must be a list of mappings")
    by_key = {p.key: p for p in params}
    points = []
    for i, point in enumerate(value):
        if not isinstance(point, dict):
            raise SpaceError(f"{at('points_to_evaluate', i)}: a point must be a mapping")
        for key, v in point.items():
            where = at_key("points_to_evaluate", i, key)
            _check_key(key, where)
            if key not in by_key or by_key[key].kind == "fixed":
                raise SpaceError(f"{where}: {key!r} is not a searched key of this space")
            if not by_key[key].contains(v):
                raise SpaceError(f"{where}: {key}={v!r} lies outside its distribution")
        points.append(dict(point))
    return tuple(points)
