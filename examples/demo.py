"""nuwa demo: four Monte Carlo estimates of pi on a thread pool.

Each compute_pi call releases the GIL for its whole computation, so the
four calls run in parallel on a ThreadPoolExecutor. With release=False the
same calls hold the GIL and the pool runs them one at a time.

Run it with `make demo` (builds examples/my_extension in release mode first).
"""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor

import my_extension

# A few tenths of a second per call in a release build.
ITERATIONS = 60_000_000
SEEDS = [1, 2, 3, 4]


def estimate(seed: int, release: bool = True) -> float:
    return my_extension.compute_pi(ITERATIONS, seed, release=release)


def timed(run):
    start = time.perf_counter()
    results = run()
    return time.perf_counter() - start, results


def serial():
    return [estimate(seed) for seed in SEEDS]


def pool(release: bool):
    def run():
        with ThreadPoolExecutor(max_workers=len(SEEDS)) as executor:
            return list(executor.map(lambda seed: estimate(seed, release), SEEDS))

    return run


def main() -> None:
    # The `_test_` hooks are not public API; they live on the extension
    # module itself, inside the package maturin builds around it.
    native = getattr(my_extension, "my_extension", my_extension)
    print(f"nuwa: {native._test_nuwa_info()}")
    print(
        f"{len(SEEDS)} x compute_pi({ITERATIONS:_}, seed) on {len(SEEDS)} workers, "
        f"{os.cpu_count()} CPU cores"
    )

    estimate(0, release=True)  # warm up: page in the code, start the clock
    runs = [
        ("serial", timed(serial)),
        ("pool, GIL released", timed(pool(release=True))),
        ("pool, GIL held (release=False)", timed(pool(release=False))),
    ]
    results = runs[0][1][1]
    for seed, pi in zip(SEEDS, results):
        print(f"  seed {seed}: pi ~ {pi:.6f}")
    # Same seed, same result, whichever thread ran it and however.
    assert all(r == results for _, (_, r) in runs), "results differ between runs"

    base = runs[0][1][0]
    print(f"  {'':32}{'wall time':>10}{'speedup':>9}")
    for name, (seconds, _) in runs:
        print(f"  {name:32}{seconds:>8.2f} s{base / seconds:>8.2f}x")

    # One block for the whole loop, or one block per element.
    rng = random.Random(5)
    data = [rng.uniform(-1.0, 1.0) for _ in range(1_000_000)]
    good_time, good = timed(lambda: my_extension.good_pattern(data))
    bad_time, bad = timed(lambda: my_extension.bad_pattern(data))
    assert good == bad
    print(
        f"good_pattern vs bad_pattern on {len(data):_} floats: {good_time * 1e3:.0f} ms vs "
        f"{bad_time * 1e3:.0f} ms (one block vs one block per element)"
    )


if __name__ == "__main__":
    main()
