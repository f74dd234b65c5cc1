"""nuwa demo: does compute_pi release the GIL, and what does that buy?

First the proof, which the machine's load cannot flip: another Python thread
counts how many times it runs during one compute_pi call, with the GIL
released (release=True) and held (release=False). Then the timings: four
Monte Carlo estimates of pi on a thread pool, which run in parallel only if
each call releases the GIL.

Run it with `make demo` (builds examples/my_extension in release mode first);
`make demo DEMO_ARGS=--verbose` also says what nuwa found in this process.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import textwrap
import threading
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


def runs_during(call) -> int:
    """How many times another Python thread ran while `call()` ran.

    The other thread counts a run each time it gets the GIL and finds
    `calling` set. This thread sets `calling` just around the call, with the
    switch interval at 100 s and the garbage collector off: nothing makes it
    hand the GIL over between the two assignments, except the call itself
    releasing the GIL. So a call that holds the GIL gives 0, on any machine
    under any load; a call that releases it lets the other thread, already
    waiting for the GIL, run for as long as the call computes.
    """
    state = {"calling": False, "runs": 0, "stop": False}

    def count():
        while not state["stop"]:
            if state["calling"]:
                state["runs"] += 1
            time.sleep(0.0001)  # sleeps without the GIL: hands it back

    old_interval = sys.getswitchinterval()
    # Before the thread starts, so that it never waits for the GIL with a
    # shorter interval (a waiter that times out asks this thread to let go).
    sys.setswitchinterval(100)
    gc.disable()
    counter = threading.Thread(target=count, daemon=True)
    try:
        counter.start()
        state["calling"] = True
        call()
        state["calling"] = False
    finally:
        sys.setswitchinterval(old_interval)
        gc.enable()
        state["stop"] = True
        counter.join(10)
    return state["runs"]


def explain_resolution(info: str) -> str:
    """What `_test_nuwa_info()` (nuwa_ffi::init()'s one-line summary) means."""
    if "no Python found" in info or "no held check" in info:
        text = "nuwa found no usable CPython here, so its blocks run without releasing the GIL."
    else:
        text = (
            "nuwa looked up CPython's GIL functions in this process when the module loaded "
            "(the module does not link libpython). Before each release it checks that the "
            "calling thread holds the GIL: a thread that does not hold it has nothing to "
            "release. "
        )
        if "global current state" in info:
            text += (
                "On CPython 3.11 and older it compares the interpreter's current thread "
                "state (the GIL holder) with the calling thread's own, with the two CPython "
                "functions named above."
            )
        elif "thread-local" in info:
            text += (
                "On CPython 3.12 and later the current thread state is per thread, so it "
                "checks that it is set, with the CPython function named above."
            )
    return textwrap.fill(text, width=88, initial_indent="  ", subsequent_indent="  ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--verbose", action="store_true", help="also say what nuwa found")
    args = parser.parse_args()
    if args.verbose:
        # The `_test_` hooks are not public API; they live on the extension
        # module itself, inside the package maturin builds around it.
        native = getattr(my_extension, "my_extension", my_extension)
        info = native._test_nuwa_info()
        print(f"nuwa: {info}\n{explain_resolution(info)}\n")

    estimate(0, release=True)  # warm up: page in the code, start the clock
    proof = ITERATIONS // 3
    print(
        f"Does compute_pi release the GIL? Another Python thread counts how many times it "
        f"runs\nduring one compute_pi({proof:_}) call (it can only run if the call lets go of "
        f"the GIL):"
    )
    for release in (True, False):
        count = runs_during(lambda: my_extension.compute_pi(proof, 1, release=release))
        verdict = "GIL released" if count else "GIL held"
        print(f"  release={release!s:5}  the other thread ran {count:>6_} times: {verdict}")
    print()
    print(
        f"{len(SEEDS)} x compute_pi({ITERATIONS:_}, seed) on {len(SEEDS)} workers, "
        f"{os.cpu_count()} CPU cores"
    )

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
    print("  (timings depend on what the machine gives at this moment; the counts above do not)")

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
