"""Benchmark: DBiLD vs full-vocabulary KL, forward + backward time and peak extra memory.

    python -m benchmarks.losses                      # full size, 1 CPU thread, a few minutes
    python -m benchmarks.losses --quick              # tiny sizes, about a second
    python -m benchmarks.losses --threads 2 --json /tmp/losses.json

Each (case, loss) runs in a freshly forked process (fork, not spawn: importing torch again would
cost seconds per case), so its peak memory is its own: ``ru_maxrss`` after the run minus
``ru_maxrss`` once the inputs exist. The inputs are built in place, so building them leaves no
higher peak behind. The peak includes the (N, V) gradient of the student logits, which every loss
produces. Times are the median of several forward + backward passes after a warm-up. ``mask`` is
None (every token counts). Linux only (fork, ``ru_maxrss`` in KiB).
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import resource
import statistics
import time
from pathlib import Path

import torch

from benchmarks import write_json
from switchkd.losses import dbild_loss, kl_loss


FULL_CASES = [
    dict(N=2048, V=151936, window=64, k_max=32),
    dict(N=2048, V=1024, window=64, k_max=8),
    dict(N=2048, V=1024, window=64, k_max=32),
    dict(N=2048, V=1024, window=64, k_max=64),
]
QUICK_CASES = [dict(case, N=64, V=1024) for case in FULL_CASES]
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "losses.json"
TEMPERATURE = 3.0


def run_loss(name: str, case: dict, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    if name == "dbild":
        return dbild_loss(student, teacher, temperature=TEMPERATURE, window=case["window"],
                          k_min=2, k_max=case["k_max"])
    return kl_loss(student, teacher, temperature=TEMPERATURE)


def measure(name: str, case: dict, dtype: str, threads: int, repeats: int, queue) -> None:
    """Child process: time ``repeats`` forward + backward passes and report the peak extra RSS."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    shape, dt = (case["N"], case["V"]), getattr(torch, dtype)
    teacher = torch.empty(shape, dtype=dt).normal_().mul_(3.0)  # (N, V), built in place
    student = torch.empty(shape, dtype=dt).normal_().mul_(2.0).add_(teacher).requires_grad_()
    # One pass on two rows first, so one-time set-up memory (autograd engine, kernels) is not
    # counted as the loss's own.
    tiny = student[:2].detach().clone().requires_grad_()
    run_loss(name, case, tiny, teacher[:2]).backward()
    base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for step in range(repeats + 1):  # step 0 is the warm-up
        start = time.perf_counter()
        run_loss(name, case, student, teacher).backward()
        if step:
            times.append(time.perf_counter() - start)
        student.grad = None
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put(dict(ms=1e3 * statistics.median(times), peak_mb=(peak_kib - base_kib) / 1024))


def measure_in_child(name: str, case: dict, dtype: str, threads: int, repeats: int) -> dict:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=measure, args=(name, case, dtype, threads, repeats, queue))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"{name} on {case} failed in its child (exit code {child.exitcode})")
    return queue.get()


def format_table(rows: list[dict]) -> str:
    header = ("N", "V", "W", "K", "dbild ms", "kl ms", "dbild/kl", "dbild MB", "kl MB")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = (r["N"], r["V"], r["window"], r["k_max"], f"{r['dbild_ms']:.1f}",
                 f"{r['kl_ms']:.1f}", f"{r['ratio']:.3f}", f"{r['dbild_peak_mb']:.0f}",
                 f"{r['kl_peak_mb']:.0f}")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (N=64, V=1024)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed passes (default 5, quick 3)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    args = parser.parse_args(argv)
    cases = QUICK_CASES if args.quick else FULL_CASES
    repeats = args.repeats or (3 if args.quick else 5)

    print("\n".join(format_table([]).splitlines()[:2]), flush=True)
    rows = []
    for case in cases:
        dbild = measure_in_child("dbild", case, args.dtype, args.threads, repeats)
        kl = measure_in_child("kl", case, args.dtype, args.threads, repeats)
        rows.append(dict(case, dbild_ms=dbild["ms"], kl_ms=kl["ms"], ratio=dbild["ms"] / kl["ms"],
                         dbild_peak_mb=dbild["peak_mb"], kl_peak_mb=kl["peak_mb"]))
        print(format_table(rows[-1:]).splitlines()[-1], flush=True)

    result = dict(
        meta=dict(torch=torch.__version__, python=platform.python_version(),
                  machine=platform.machine(), threads=args.threads, dtype=args.dtype,
                  repeats=repeats, temperature=TEMPERATURE, quick=args.quick),
        cases=rows,
    )
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
