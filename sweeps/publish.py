"""``switchkd export RESULTS_DIR --out DIR``: the best trial's student, ready to share.

Picks the best finished trial of a sweep or ablation from its ``trials.parquet`` (highest
``--metric``, default ``test/avg10`` when scored, else the study's metric; ties go to the
cheaper trial, by ``wall_s``), reads its last checkpoint (the ``checkpoint_path`` column) and
writes into ``DIR``:

* the student as a Hugging Face folder (``config.json``, ``model.safetensors``, tokenizer and
  ``LlavaProcessor`` files) that ``LlavaForConditionalGeneration.from_pretrained`` loads;
* ``switchkd_config.yaml``: the trial's resolved config (``switchkd.config.from_yaml`` reads it);
* ``README.md``: a model card with the metrics table, the fingerprints and the command that
  reproduces the trial;
* ``reproduce.sh``: that command, plus the test-split evaluation.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
from typing import Any, Mapping, Optional, Sequence

import pandas as pd

from analysis.load import load_results
from analysis.report import LABELS, TASK_GROUPS, TASKS
from switchkd.config import Config, from_flat_dict, parse_override, to_flat_dict, to_yaml, \
    with_overrides
from switchkd.presets import PRESETS, get_preset
from sweeps.export import TRIALS_FILE, read_manifest

STATE_FILE = "state.json"  # switchkd.checkpoint's: the step, counters and resolved config
# Where the run happens, not what it computes: left out of the reproduction command.
LOCAL_KEYS = ("run.cache_dir", "run.name")


class ExportError(RuntimeError):
    """No trial can be exported (none finished with the metric and a checkpoint)."""


def default_metric(trials: pd.DataFrame, manifest: Optional[Mapping[str, Any]]) -> str:
    """``test/avg10`` when trials were scored on the test split, else the study's metric."""
    for name in ("test/avg10", "test/avg"):
        if name in trials.columns and trials[name].notna().any():
            return name
    if manifest and manifest.get("metric") in trials.columns:
        return manifest["metric"]
    return "val/avg10" if "val/avg10" in trials.columns else "val/avg"


def best_trial(trials: pd.DataFrame, metric: str, mode: str = "max") -> pd.Series:
    """The best finished trial with the metric; ties: lower ``wall_s``, then the trial id (so
    the choice never depends on row order). Pass only exportable trials (``split_by_checkpoint``).

    Raises:
        ExportError: the metric is unknown, or no trial qualifies.
    """
    if metric not in trials.columns:
        known = sorted(c for c in trials.columns if c.startswith(("val/", "test/", "train/")))
        raise ExportError(f"no column {metric!r} in the trials; metrics: {known[:12]} ...")
    usable = trials[(trials["status"] != "errored") & trials[metric].notna()]
    if usable.empty:
        raise ExportError(f"no finished trial with its checkpoint on disk has {metric}")
    order = usable.assign(_key=-usable[metric] if mode == "max" else usable[metric],
                          _cost=usable["wall_s"].fillna(math.inf))
    return order.sort_values(["_key", "_cost", "trial_id"], kind="stable").iloc[0]


def split_by_checkpoint(trials: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """(the trials whose recorded checkpoint folder holds a ``state.json``, the ids of those
    whose recorded checkpoint is gone). Trials that recorded none are in neither."""
    paths = trials["checkpoint_path"] if "checkpoint_path" in trials.columns else \
        pd.Series(None, index=trials.index, dtype=object)
    recorded = paths.map(lambda p: isinstance(p, str) and bool(p))
    present = paths.map(lambda p: isinstance(p, str) and os.path.isfile(os.path.join(p, STATE_FILE)))
    gone = trials.loc[recorded & ~present, "trial_id"].astype(str).tolist()
    return trials[present], gone


def _cli_value(value: Any) -> str:
    """A value as ``switchkd train`` reads it back (YAML scalars; exponents need a dot)."""
    if isinstance(value, str):
        return value if parse_override(f"k={value}")[1] == value else json.dumps(value)
    if isinstance(value, float):
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:
            text = text.replace("e", ".0e")
        return text
    return json.dumps(value)  # null, true/false, integers, lists (JSON is YAML)


def reproduce_args(cfg: Config, out: str) -> list[str]:
    """``switchkd train`` arguments that rebuild ``cfg`` (checked by building it again).

    Raises:
        ExportError: the config's preset is not a named preset.
    """
    if cfg.preset not in PRESETS:
        raise ExportError(f"preset {cfg.preset!r} is not a named preset; cannot write a "
                          f"reproduction command")
    base, flat = to_flat_dict(get_preset(cfg.preset)), to_flat_dict(cfg)
    overrides = [f"{k}={_cli_value(v)}" for k, v in flat.items()
                 if v != base[k] and k not in LOCAL_KEYS]
    rebuilt = with_overrides(get_preset(cfg.preset), dict(parse_override(o) for o in overrides))
    expected = {k: v for k, v in flat.items() if k not in LOCAL_KEYS}
    if {k: v for k, v in to_flat_dict(rebuilt).items() if k not in LOCAL_KEYS} != expected:
        raise ExportError("the reproduction overrides do not rebuild the trial's config")
    return ["switchkd", "train", "--preset", cfg.preset, "--out", out, *overrides]


def _metric_rows(row: pd.Series) -> list[tuple[str, str, str]]:
    out = []
    for name in (*TASKS, "avg10", "avg", *(f"group_{g}" for g in TASK_GROUPS)):
        values = [row.get(f"{split}/{name}") for split in ("test", "val")]
        if all(v is None or pd.isna(v) for v in values):
            continue
        out.append((LABELS[name], *("–" if v is None or pd.isna(v) else f"{v:.1f}"
                                    for v in values)))
    return out


def _text(value: Any, missing: str) -> str:
    """Numbers as people write them (8, not 8.0; 12.3 s); missing values as ``missing``."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return missing
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.1f}"
    return str(value)


def model_card(row: pd.Series, cfg: Config, command: str, metric: str, results: str,
               export_command: str) -> str:
    """The README.md of the exported folder."""
    def fmt(value: Any) -> str:
        return _text(value, "–")

    metrics = "\n".join(f"| {name} | {test} | {val} |" for name, test, val in _metric_rows(row))
    variant = f" ({row['variant']})" if isinstance(row.get("variant"), str) else ""
    passes = (row.get("teacher_forward_passes"), row.get("teacher_backward_passes"))
    return f"""---
library_name: transformers
pipeline_tag: image-text-to-text
tags: [switchkd, knowledge-distillation, llava, minivl-10]
---

# switchkd student: {row['study']} / {row['trial_id']}{variant}

A {"Switch-KD distilled" if cfg.train.stage == "distill" else "supervised (SFT, cross-entropy only)"}
student VLM (LLaVA layout: SigLIP-style vision tower, MLP projector, Qwen2-style LM), preset
`{cfg.preset}`, trained by switchkd. It is the best trial of its study by `{metric}`
(ties: lower training wall time), exported with

```bash
{export_command}
```

## Metrics (MiniVL-10, percent)

| Benchmark | test | val |
|---|---|---|
{metrics}

Training cost: {fmt(row.get('steps'))} steps, {fmt(row.get('wall_s'))} s wall, teacher forward /
backward passes {fmt(passes[0])} / {fmt(passes[1])}.

## Provenance

| | |
|---|---|
| study | `{row['study']}` |
| trial | `{row['trial_id']}` |
| status | {row['status']} |
| seed | {row['seed']} |
| data fingerprint | `{fmt(row.get('data_fingerprint'))}` |
| teacher fingerprint | `{fmt(row.get('teacher_fingerprint'))}` |
| git sha | `{row['git_sha']}` |
| results | `{results}` |
| checkpoint | `{row['checkpoint_path']}` |

The fingerprints identify the generated data and the trained teacher; a reproduction that
reports different ones used different data or a different teacher.

## Reproduce

```bash
{command}
switchkd eval runs/{row['study']}-{row['trial_id']} --split test
```

(`reproduce.sh` runs both. The config is in `switchkd_config.yaml`.)

## Use

```python
from PIL import Image
from transformers import AutoProcessor, LlavaForConditionalGeneration

model = LlavaForConditionalGeneration.from_pretrained("path/to/this/folder")
processor = AutoProcessor.from_pretrained("path/to/this/folder")
prompt = processor.apply_chat_template(
    [{{"role": "user", "content": [{{"type": "image"}},
                                  {{"type": "text", "text": "What color is the circle?"}}]}}],
    add_generation_prompt=True)
inputs = processor(images=Image.open("image.png"), text=prompt, return_tensors="pt")
print(processor.decode(model.generate(**inputs, max_new_tokens=8)[0], skip_special_tokens=True))
```
"""


def export_best(results: str, out_dir: str, *, metric: Optional[str] = None,
                mode: Optional[str] = None) -> dict[str, Any]:
    """Select the best trial in ``results`` and write it to ``out_dir`` (see module doc).

    Returns:
        ``{"trial_id", "metric", "value", "out_dir", "command"}``.

    Raises:
        FileNotFoundError: no trials.parquet, or the trial's checkpoint is gone.
        ExportError: no trial qualifies.
    """
    from switchkd.train import export_student  # torch: only when something is exported

    folder = os.path.dirname(results) if results.endswith(".parquet") else results
    trials = load_results(os.path.join(folder, TRIALS_FILE))
    manifest = read_manifest(folder)
    metric = metric or default_metric(trials, manifest)
    mode = mode or (manifest or {}).get("mode", "max")
    kept, gone = split_by_checkpoint(trials)
    if gone:
        # Seen with trials that ASHA stopped right after a report: the row records a checkpoint
        # folder that never reached the disk. Those trials cannot be exported; say so.
        print(f"export: skipping trial(s) whose recorded checkpoint is not on disk: "
              f"{', '.join(gone)}", file=sys.stderr, flush=True)
    if kept.empty:
        raise FileNotFoundError(f"no trial in {folder} has its checkpoint on disk "
                                f"(missing: {', '.join(gone) or 'none recorded'})")
    row = best_trial(kept, metric, mode)
    checkpoint = row["checkpoint_path"]
    with open(os.path.join(checkpoint, STATE_FILE)) as f:
        cfg = from_flat_dict(json.load(f)["config"])
    run_dir = f"runs/{row['study']}-{row['trial_id']}"
    args = reproduce_args(cfg, run_dir)
    command = " ".join(shlex.quote(a) for a in args)

    export_student(cfg, checkpoint, out_dir)
    with open(os.path.join(out_dir, "switchkd_config.yaml"), "w") as f:
        f.write(to_yaml(cfg))
    export_command = " ".join(shlex.quote(a) for a in
                              ["switchkd", "export", folder, "--out", out_dir, "--metric", metric])
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(model_card(row, cfg, command, metric, os.path.abspath(folder), export_command))
    script = os.path.join(out_dir, "reproduce.sh")
    data_fp = _text(row.get("data_fingerprint"), "unknown")
    teacher_fp = _text(row.get("teacher_fingerprint"), "none (no teacher)")
    with open(script, "w") as f:
        f.write(f"""#!/usr/bin/env bash
# Reproduce trial {row['trial_id']} of study {row['study']} ({metric} = {row[metric]:.4g}):
# train the student with the trial's config and seed, then score it on the test split.
# Run from a switchkd checkout at git {row['git_sha']}; data fingerprint
# {data_fp}, teacher fingerprint {teacher_fp}.
# Usage: reproduce.sh [OUT_DIR]   (default {run_dir})
set -euo pipefail
OUT="${{1:-{run_dir}}}"
{" ".join(shlex.quote(a) if a != run_dir else '"$OUT"' for a in args)}
switchkd eval "$OUT" --split test
""")
    os.chmod(script, 0o755)
    return {"trial_id": row["trial_id"], "metric": metric, "value": float(row[metric]),
            "out_dir": out_dir, "command": command}


def export_main(argv: Optional[Sequence[str]] = None) -> int:
    """``switchkd export RESULTS_DIR --out DIR [--metric KEY] [--mode max|min]``."""
    parser = argparse.ArgumentParser(prog="switchkd export",
                                     description="export the best trial's student")
    parser.add_argument("results", help="a sweep or ablation results folder")
    parser.add_argument("--out", required=True, help="folder for the Hugging Face student")
    parser.add_argument("--metric", help="trials.parquet column to maximise (default: "
                        "test/avg10 when scored, else the study's metric)")
    parser.add_argument("--mode", choices=("max", "min"),
                        help="default: the study's mode, else max")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        done = export_best(args.results, args.out, metric=args.metric, mode=args.mode)
    except (ExportError, FileNotFoundError) as err:
        print(f"export: {err}", file=sys.stderr)
        return 2
    print(f"[export] trial {done['trial_id']} ({done['metric']}={done['value']:.4g}) -> "
          f"{done['out_dir']}\n[export] reproduce: {done['command']}", flush=True)
    return 0
