"""Section 11: the teacher against the students on the same test items.

Per task: the primary metric of the teacher, the SFT student and the Switch-KD student, and
paired bootstraps (10,000 samples, items) of teacher - sft and distill - sft (item-averaged tasks;
MME and POPE get the difference only).

Usage: python teacher_vs_students.py TEACHER_DIR SFT_RUN DISTILL_RUN OUT.json
(runs are `switchkd train --out` folders; their config.yaml gives the data and mc_response)
"""
import json
import os
import sys

from switchkd.config import from_yaml
from switchkd.data.source import load_data
from switchkd.evaluation.compare import compare_runs
from switchkd.evaluation.evaluate import predict
from switchkd.models.build import load_vlm

teacher_dir, sft_run, distill_run, out = sys.argv[1:5]
with open(os.path.join(sft_run, "config.yaml")) as f:
    cfg = from_yaml(f.read())
bundle = load_data(cfg.data, os.path.abspath(cfg.run.cache_dir))
models = {"teacher": teacher_dir, "sft": os.path.join(sft_run, "student"),
          "distill": os.path.join(distill_run, "student")}
records = {}
for name, path in models.items():
    records[name] = predict(load_vlm(path), bundle.tokenizer, bundle.test,
                            mc_response=cfg.data.mc_response)
    print(name, "scored", flush=True)
result = {"models": models, "mc_response": cfg.data.mc_response,
          "data_fingerprint": bundle.fingerprint,
          "teacher_minus_sft": compare_runs(records["teacher"], records["sft"]),
          "distill_minus_sft": compare_runs(records["distill"], records["sft"])}
for key in ("teacher_minus_sft", "distill_minus_sft"):
    print(key)
    for task, row in result[key].items():
        print(f"  {task:8s} {row['model']:6.1f} {row['reference']:6.1f} {row['diff']:+6.1f} "
              f"[{row.get('low', float('nan')):+6.1f}, {row.get('high', float('nan')):+6.1f}]")
with open(out, "w") as f:
    json.dump(result, f, indent=2)
