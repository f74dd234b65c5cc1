#!/usr/bin/env python3
"""The parallel speedup of pyo3_extension: `make bench` (or `--quick`, a smoke run).

compute_pi runs four times: serially, then on thread pools of 2 and 4
workers with the GIL released through the Detach adapter (PyO3's own
detach) and held (release=False), and on 2 processes (the machine's own
ceiling at that moment). Each repeat times the serial baseline and every
contender back to back, in rotating order; a speedup compares runs of one
repeat, and the median over repeats is reported. Nothing is asserted: the
figures depend on what the (shared) machine gives at that moment.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import pyo3_extension as ext


def timed(f) -> float:
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def _pi_in_process(args: tuple[int, int]) -> float:
    iterations, seed = args
    return ext.compute_pi(iterations, seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a fast smoke run (figures not meaningful)")
    args = ap.parse_args()
    repeats, target_s = (1, 0.02) if args.quick else (7, 0.4)

    # Size one compute_pi call to about target_s seconds (after a warm-up).
    probe = 2_000_000
    ext.compute_pi(probe, 1)
    per_iter = timed(lambda: ext.compute_pi(probe, 1)) / probe
    iterations = max(1000, int(target_s / per_iter))
    seeds = [1, 2, 3, 4]

    def serial():
        for s in seeds:
            ext.compute_pi(iterations, s)

    def pool(workers, release):
        with ThreadPoolExecutor(max_workers=workers) as ex:
            list(ex.map(lambda s: ext.compute_pi(iterations, s, release=release), seeds))

    processes = multiprocessing.get_context("fork").Pool(2)
    processes.map(_pi_in_process, [(1000, 1), (1000, 2)])  # start them

    contenders = [
        ("2 processes (the machine's ceiling)",
         lambda: processes.map(_pi_in_process, [(iterations, s) for s in seeds], chunksize=1)),
        ("2 threads, GIL released (Detach)", lambda: pool(2, True)),
        ("2 threads, GIL held", lambda: pool(2, False)),
        ("4 threads, GIL released (Detach)", lambda: pool(4, True)),
        ("4 threads, GIL held", lambda: pool(4, False)),
    ]
    base_runs: list[float] = []
    runs: dict[str, list[float]] = {label: [] for label, _ in contenders}
    speedups: dict[str, list[float]] = {label: [] for label, _ in contenders}
    for r in range(repeats):
        base = timed(serial)
        base_runs.append(base)
        for label, f in contenders[r % len(contenders):] + contenders[:r % len(contenders)]:
            t = timed(f)
            runs[label].append(t)
            speedups[label].append(base / t)
    processes.close()
    processes.join()

    print(f"pyo3_extension on CPython {platform.python_version()}, {os.cpu_count()} CPU cores: "
          f"compute_pi x4 of {iterations:,} iterations, median of {repeats} repeat(s)"
          f"{' (quick: not meaningful)' if args.quick else ''}")
    print()
    print("| run | wall s | speedup vs serial |")
    print("|---|---|---|")
    print(f"| serial | {statistics.median(base_runs):.3f} | 1.00 |")
    for label, _ in contenders:
        print(f"| {label} | {statistics.median(runs[label]):.3f} | {statistics.median(speedups[label]):.2f} |")


if __name__ == "__main__":
    main()
