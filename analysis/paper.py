"""The paper's Table 1 (METHOD.md section 7) and a side-by-side of its deltas with a study's.

The paper reports one run per method on the real benchmarks (0.5B students of a 3B teacher), no
seeds and no intervals; MiniVL-10 mirrors the same ten tasks at toy scale. So only the direction
of each change is comparable, never its size: for every column we put the paper's Switch-KD minus
TinyLLaVA (no KD) next to our variant minus our baseline with its paired 95% CI, and say whether
ours moved the same way (CI above 0 where the paper went up, below 0 where it went down) or
whether the CI does not tell.
"""

from __future__ import annotations

import math
from typing import Mapping

# METHOD.md section 7: 0.5B students, percent; "avg10" is the paper's 10-benchmark Avg.
PAPER_TABLE1 = {
    "TinyLLaVA-0.5B (no KD)": {"mme": 61.5, "mmb": 58.9, "mmbcn": 54.2, "vqa": 74.8, "gqa": 58.3,
                               "sqa": 59.1, "mmmu": 33.6, "textvqa": 49.2, "vizwiz": 28.9,
                               "pope": 86.1, "avg10": 56.5},
    "LLaVA-KD-0.5B": {"mme": 64.7, "mmb": 61.3, "mmbcn": 57.0, "vqa": 77.7, "gqa": 59.8,
                      "sqa": 60.6, "mmmu": 28.3, "textvqa": 52.0, "vizwiz": 41.5, "pope": 86.4,
                      "avg10": 58.9},
    "Switch-KD-0.5B": {"mme": 66.8, "mmb": 63.5, "mmbcn": 57.8, "vqa": 79.6, "gqa": 61.6,
                       "sqa": 57.9, "mmmu": 29.8, "textvqa": 52.3, "vizwiz": 44.9, "pope": 87.3,
                       "avg10": 60.1},
}
PAPER_BASELINE, PAPER_METHOD = "TinyLLaVA-0.5B (no KD)", "Switch-KD-0.5B"


def paper_delta(column: str) -> float:
    """Switch-KD-0.5B minus TinyLLaVA-0.5B in the paper (NaN for columns it has no number for)."""
    method, base = PAPER_TABLE1[PAPER_METHOD], PAPER_TABLE1[PAPER_BASELINE]
    return method[column] - base[column] if column in method else math.nan


def direction(paper: float, ours: Mapping[str, float]) -> str:
    """Did our change (``delta`` with paired CI ``low``..``high``) go the paper's way?"""
    if math.isnan(paper) or math.isnan(ours["low"]) or math.isnan(ours["high"]):
        return "–"
    if ours["low"] == ours["high"] == 0.0:
        return "no change"
    if ours["low"] <= 0.0 <= ours["high"]:
        return "unclear (CI spans 0)"
    same = (ours["low"] > 0) == (paper > 0)
    return "same" if same else "opposite"
