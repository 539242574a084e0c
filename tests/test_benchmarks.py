"""The step benchmarks' quick modes run end to end and write well-formed JSON.

Nothing here is timed: the numbers are only checked to exist, be finite and positive where a
pass ran, and be zero where it did not (SFT has no teacher or switch pass; switch ratio 0 has
no switch pass).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PASSES = ("teacher", "student", "switch", "loss", "optimizer")


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
                PYTHON=sys.executable)


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_gpu_script_tiny_runs_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    _run([str(ROOT / "benchmarks" / "gpu.sh"), "--tiny", "--device", "cpu", "--threads", "1",
          "--warmup", "1", "--repeats", "1", "--json", str(out)])
    result = json.loads(out.read_text())
    meta = result["meta"]
    assert meta["tiny"] and _positive(meta["matmul_peak_flops"])
    assert meta["visual_tokens"] == 16 and meta["seq"] == 1 + 16 + 16
    sft, switch = result["rows"]
    assert (sft["method"], switch["method"]) == ("sft", "switchkd")
    for row in (sft, switch):
        for key in ("student", "loss", "optimizer"):
            assert _positive(row["ms"][key]), (row["method"], key)
        for key in ("step_ms", "parts_sum_ms", "samples_per_s", "peak_mem_mb"):
            assert _positive(row[key]), (row["method"], key)
        assert _positive(row["flops"]["step"]) and _positive(row["mfu"]["step"])
    assert sft["ms"]["teacher"] == sft["ms"]["switch"] == sft["flops"]["switch"] == 0
    for key in ("teacher", "switch"):
        assert _positive(switch["ms"][key]) and _positive(switch["flops"][key])
        assert _positive(switch["mfu"][key])
    assert _positive(result["summary"]["switch_vs_flop_prediction"])


def test_step_benchmark_quick(tmp_path):
    out = tmp_path / "step.json"
    _run([sys.executable, "-m", "benchmarks.step", "--quick", "--threads", "1",
          "--json", str(out)])
    result = json.loads(out.read_text())
    meta = result["meta"]
    assert meta["quick"] and meta["batch_source"] == "synthetic"
    assert all(_positive(v) for v in meta["matmul_peak_flops"].values())
    rows = {(r["precision"], r["method"]): r for r in result["rows"]}
    assert set(rows) == {(p, m) for p in ("fp32", "bf16")
                         for m in ("sft", "kd", "switch-0.25", "switch-0.5", "switch-1")}
    for (precision, method), row in rows.items():
        assert set(row["ms"]) == set(PASSES)
        for key in ("student", "loss", "optimizer"):
            assert _positive(row["ms"][key]), (precision, method, key)
        for key in ("step_ms", "parts_sum_ms", "samples_per_s", "rss_mb"):
            assert _positive(row[key]), (precision, method, key)
        assert _positive(row["flops"]["student"]) and _positive(row["mfu"]["student"])
        has_teacher = method != "sft"
        has_switch = method.startswith("switch-")
        assert _positive(row["ms"]["teacher"]) == has_teacher
        assert _positive(row["ms"]["switch"]) == has_switch
        assert (row["switch_rows"] > 0) == has_switch
        assert _positive(row["flops"]["switch"]) == has_switch
    sft = rows[("fp32", "sft")]
    assert sft["switch_ratio"] is None and sft["ms"]["teacher"] == sft["ms"]["switch"] == 0
    kd = rows[("fp32", "kd")]
    assert kd["switch_ratio"] == 0 and kd["ms"]["switch"] == 0
    assert [rows[("fp32", f"switch-{r}")]["switch_rows"] for r in ("0.25", "0.5", "1")] == [1, 2, 4]
    assert len(result["summary"]) == len(rows)
    assert all(_positive(s["measured_over_predicted"]) for s in result["summary"])
    assert set(result["goals"]) == {"tiny/fp32", "tiny/bf16"}
    assert _positive(result["goals"]["tiny/fp32"]["min_mfu_teacher"])
