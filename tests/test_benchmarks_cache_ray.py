"""The --quick modes of benchmarks/cache.py and benchmarks/ray_overhead.py run end to end and
write what they promise. Nothing here is timed: times are only checked to be positive.

The fidelity bound: the cache stores float16 logits (relative rounding <= 2**-11), which moves
the tiny preset's Align/VSD losses (~1e-2 or less) by ~1e-5; 1e-4 leaves room for that and
fails on a real misalignment of cached rows, which changes the losses by ~1e-2.
"""

import json

import pytest

from benchmarks import cache as cache_bench
from benchmarks import ray_overhead
from tests.ray_fixtures import ray_session  # noqa: F401  (also loadable as a pytest plugin)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One ci data suite (and, for the sweep, one tiny teacher) for the module."""
    return str(tmp_path_factory.mktemp("bench-cache"))


def test_ideal_wall_list_schedules_in_order():
    assert ray_overhead.ideal_wall([3.0, 1.0, 1.0, 1.0], 2) == 3.0
    assert ray_overhead.ideal_wall([1.0, 2.0, 3.0], 1) == 6.0
    assert ray_overhead.ideal_wall([2.0, 2.0, 2.0], 2) == 4.0
    assert ray_overhead.ideal_wall([], 2) == 0.0


def test_cache_quick(tmp_path, cache_dir):
    out = tmp_path / "cache.json"
    result = cache_bench.main(["--quick", "--json", str(out), "--cache-dir", cache_dir])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))

    build = result["build"]
    assert build["positions"] > 0 and build["build_s"] > 0 and build["rows_per_s"] > 0
    assert build["bytes_per_token"] == 2 * build["vocab_size"]  # one float16 row per token
    assert build["bytes_per_token_on_disk"] >= build["bytes_per_token"]
    assert build["top_window"]["bytes_per_token"] < build["bytes_per_token"]

    assert set(result["steps"]) == set(cache_bench.CASES)
    for name, step in result["steps"].items():
        assert step["ms"] > 0 and step["steps"] == result["meta"]["steps"], name
        assert (step["read_ms"] > 0) == name.endswith("_cached"), name
    assert result["steps"]["sft"]["vs_sft"] == 1.0

    fidelity = {(f["precision"], f["term"]): f for f in result["fidelity"]}
    assert set(fidelity) == {("fp32", "align_loss"), ("fp32", "vsd_loss")}  # tiny runs in fp32
    for key, f in fidelity.items():
        assert f["mean_loss"] > 0, key  # the trained student's VSD term is not trivially 0
        assert f["max_abs"] < 1e-4, key
        assert f["live_vs_fp32_max_abs"] == 0.0, key  # fp32 is its own reference
    assert set(result["goals"]) >= {"align_cached_vs_sft", "align_cached_within_10pct_of_sft"}


@pytest.mark.ray
def test_ray_overhead_quick_then_reanalysed(ray_session, tmp_path, cache_dir):
    """2 tiny trials x 4 steps on the session Ray (reused, not shut down), then the same
    trials without Ray; --results on the kept folder reproduces the analysis."""
    out, results = tmp_path / "ray.json", tmp_path / "sweep"
    result = ray_overhead.main(["--quick", "--json", str(out), "--cache-dir", cache_dir,
                                "--out", str(results)])
    assert ray_session.is_initialized()  # connect_ray reused the fixture's cluster
    assert json.loads(out.read_text()) == json.loads(json.dumps(result, default=str))

    analysis, summary = result["analysis"], result["analysis"]["summary"]
    assert summary["trials"] == 2 and summary["slots"] == 2
    for trial in analysis["trials"]:
        assert trial["status"] == "completed" and trial["steps"] == 4
        assert 0 < trial["steps_s"] < trial["own_wall_s"] < trial["span_s"]
        assert trial["startup_s"] > 0
    assert 0 < summary["ideal_wall_s"] <= summary["own_wall_sum_s"]
    assert summary["fit_wall_s"] >= summary["ideal_wall_s"]
    assert result["sweep_wall_s"] >= summary["fit_wall_s"] - 1.0
    assert 0 < summary["ray_overhead_share"] < 1

    sequential = result["sequential"]
    assert set(sequential["walls"]) == {t["trial_id"] for t in analysis["trials"]}
    assert all(w > 0 for w in sequential["walls"].values())
    assert sequential["total_s"] > sequential["walls_sum_s"]

    again = ray_overhead.main(["--results", str(results), "--json", str(tmp_path / "re.json")])
    assert again["analysis"]["summary"]["slots_from"] == summary["slots_from"] == "space file"
    for key, value in summary.items():
        if key != "slots_from":
            assert again["analysis"]["summary"][key] == pytest.approx(value), key
