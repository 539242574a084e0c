"""Paired two-level bootstrap (seeds x items) of full - sft on MMB / MMB-CN cloze, section 7 students."""
import glob, json, numpy as np
from switchkd.config import Config, with_overrides
from switchkd.train import _trained_student
from switchkd.evaluation.evaluate import predict
from switchkd.evaluation.bootstrap import paired_bootstrap_seeds
R = '/work/main/results/evidence_v2/ray/train/evidence_v2-1b579_'
trials = {'sft': ['00000', '00003', '00006'], 'full': ['00002', '00005', '00008']}  # seeds 0,1,2
scores = {}
for variant, ids in trials.items():
    for s, t in enumerate(ids):
        ck = [p for p in glob.glob(R + t + '/checkpoint_2*')][0]
        cfg = with_overrides(Config(), json.load(open(ck + '/state.json'))['config'])
        assert cfg.run.seed == s, (t, cfg.run.seed)
        student, bundle = _trained_student(cfg, ck)
        rows = bundle.test.filter(lambda task: task in ('mmb', 'mmbcn'), input_columns='task')
        recs = predict(student, bundle.tokenizer, rows, cloze=True)
        for task in ('mmb', 'mmbcn'):
            scores.setdefault((variant, task), []).append([r['cloze_score'] for r in recs if r['task'] == task])
        print(variant, s, {task: 100 * np.mean(scores[(variant, task)][-1]) for task in ('mmb', 'mmbcn')}, flush=True)
out = {}
for task in ('mmb', 'mmbcn'):
    a, b = (100 * np.array(scores[(v, task)]) for v in ('sft', 'full'))
    out[task] = paired_bootstrap_seeds(a, b, seed=0)
    print(task, 'full - sft', out[task], flush=True)
json.dump(out, open('/work/logs/cloze/full_minus_sft_cloze.json', 'w'), indent=2)
