"""Section 11: per-item test scores of teacher v5 (data.mc_response=text_letter) with and without
the image, and a paired bootstrap (10,000 samples) of teacher - blind on the four MC tasks.

Usage: python teacher_vs_blind.py TEACHER_DIR OUT.json   (cache: /work/main/.switchkd_cache)
"""
import json
import sys

import numpy as np

from switchkd.config import with_overrides
from switchkd.data.source import load_data
from switchkd.evaluation.bootstrap import paired_bootstrap
from switchkd.evaluation.evaluate import metrics_from_records, predict
from switchkd.models.build import load_vlm
from switchkd.presets import get_preset

MC = ("mmb", "mmbcn", "sqa", "mmmu")
path, out = sys.argv[1:3]
cfg = with_overrides(get_preset("default"), {"data.mc_response": "text_letter"})
bundle = load_data(cfg.data, "/work/main/.switchkd_cache")
rows = bundle.test.filter(lambda task: task in MC, input_columns="task")
teacher = load_vlm(path)
result = {"teacher": path, "data_fingerprint": bundle.fingerprint, "mc_response": "text_letter"}
scores = {}
for blind in (False, True):
    records = predict(teacher, bundle.tokenizer, rows, blind=blind, mc_response="text_letter")
    name = "blind" if blind else "teacher"
    result[name] = metrics_from_records(records, split="test")
    for task in MC:
        scores[name, task] = [r["score"] for r in records if r["task"] == task]
        # vanilla (rotation 0) correctness for the circular tasks
        scores[name, task + "_vanilla"] = [float(r["rotation_correct"][0]) for r in records
                                           if r["task"] == task]
    print(name, {k: round(v, 1) for k, v in result[name].items()}, flush=True)
for key in [t for t in MC] + ["mmb_vanilla", "mmbcn_vanilla"]:
    blind, teacher_scores = (100 * np.array(scores[n, key]) for n in ("blind", "teacher"))
    result[f"teacher_minus_blind/{key}"] = paired_bootstrap(blind, teacher_scores, seed=0)
    print(key, result[f"teacher_minus_blind/{key}"], flush=True)
with open(out, "w") as f:
    json.dump(result, f, indent=2)
