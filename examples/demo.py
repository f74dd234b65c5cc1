"""nuwa demo: does compute_pi release the GIL, and what does that buy?

The demo runs in sections, in this order:

- release: the proof, which the machine's load cannot flip: another Python
  thread counts how many times it runs during one compute_pi call, with the
  GIL released (release=True) and held (release=False).
- timings: four Monte Carlo estimates of pi on a thread pool, which run in
  parallel only if each call releases the GIL; then one block for a whole
  loop against one block per element.
- progress: the pool again, with a text progress bar drawn by a callback
  that compute_pi calls from inside its block (taking the GIL back for it);
  Ctrl-C stops the workers.

Run it with `make demo` (builds examples/my_extension in release mode first);
`make demo DEMO_ARGS=--verbose` also says what nuwa found in this process,
`make demo DEMO_ARGS="--only progress"` runs one section.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import signal
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


def section_release() -> None:
    """The proof that compute_pi releases the GIL (counts, not timings)."""
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


def section_timings() -> None:
    """The pool with the GIL released and held; one block vs one per element."""
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
    print_block_counts(data)


def print_block_counts(data: list) -> None:
    """The same two calls in nuwa's release statistics: counts, not timings."""
    try:
        my_extension.reset_nogil_stats()
    except RuntimeError:
        print("  (release statistics: this build has no `stats` feature)")
        return
    print(f"  {'':14}{'blocks':>11}{'< 10 us':>11}{'released':>11}{'taking back':>13}")
    for name, call in (("good_pattern", my_extension.good_pattern),
                       ("bad_pattern", my_extension.bad_pattern)):
        my_extension.reset_nogil_stats()
        call(data)
        sites = my_extension.nogil_stats()
        blocks = sum(site["blocks"] for site in sites)
        short = sum(site["short"] for site in sites)
        released = sum(site["released_s"] for site in sites)
        waiting = sum(site["waiting_s"] for site in sites)
        print(f"  {name:14}{blocks:>11_}{short:>11_}{released * 1e3:>8.1f} ms"
              f"{waiting * 1e3:>10.1f} ms")
    my_extension.reset_nogil_stats()
    print("  (from my_extension.nogil_stats(): a block released for under 10 us costs more")
    print("   than it gives; keep one block around the whole loop)")


class Stopped(Exception):
    """Raised by a worker's progress callback once Ctrl-C was pressed."""


class CtrlC:
    """Ctrl-C as a flag, for as long as the `with` lasts.

    Python's own SIGINT handler raises KeyboardInterrupt wherever the main
    thread happens to be: between two submits, inside the executor, in a
    print. A handler that only sets a flag cannot interrupt anything
    half-way, so the section decides where a Ctrl-C is acted on: the
    workers' callbacks read the flag, and the main thread reads it once the
    pool is done.
    """

    def __init__(self) -> None:
        self.pressed = False

    def _handler(self, signum, frame) -> None:
        self.pressed = True  # a plain store: safe wherever the main thread is

    def __enter__(self) -> "CtrlC":
        self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._previous)


# For the tests (examples/my_extension/tests/test_signals.py): with
# NUWA_DEMO_PAUSE=POINT the progress section stops at POINT, prints
# "PAUSED POINT", and waits until a Ctrl-C has been seen, so that a test sends
# the signal at that exact moment. The points, in the order they come: "start"
# (no job submitted yet), "submitted-1" .. "submitted-3" (that many jobs in the
# pool), "filled" (all submitted), "printing" (the results half printed). At
# the points before "printing", the workers' callbacks also wait for the
# Ctrl-C, so that no computation can finish first.
PAUSE = os.environ.get("NUWA_DEMO_PAUSE", "")
PAUSE_POINTS = ("start", "submitted-1", "submitted-2", "submitted-3", "filled", "printing")
PAUSE_LIMIT_S = 120


def wait_for_ctrl_c(ctrl_c: CtrlC) -> None:
    """Waits (bounded) until the Ctrl-C flag is set: only in a test run."""
    deadline = time.monotonic() + PAUSE_LIMIT_S
    while not ctrl_c.pressed:
        if time.monotonic() > deadline:
            sys.exit(f"demo: no Ctrl-C within {PAUSE_LIMIT_S} s at pause point {PAUSE!r}")
        time.sleep(0.001)  # a signal wakes it; the flag is read again


def pause_point(name: str, ctrl_c: CtrlC) -> None:
    if PAUSE == name:
        print(f"PAUSED {name}", flush=True)
        wait_for_ctrl_c(ctrl_c)


class ProgressBar:
    """One line for the whole pool: the mean of the workers' fractions.

    The workers' callbacks call `update` with the GIL held (compute_pi takes
    it back for them), on their own threads; the lock keeps two of them from
    drawing at once. On a terminal the line is redrawn in place; otherwise
    (a log, a pipe) a line is printed at every quarter.
    """

    WIDTH = 40

    def __init__(self, workers: int):
        self.fractions = [0.0] * workers
        self.lock = threading.Lock()
        self.tty = sys.stdout.isatty()
        self.drawn = -1

    def update(self, worker: int, fraction: float) -> None:
        with self.lock:
            self.fractions[worker] = fraction
            percent = int(100 * sum(self.fractions) / len(self.fractions))
            step = percent if self.tty else percent // 25 * 25
            if step == self.drawn:
                return
            self.drawn = step
            filled = self.WIDTH * percent // 100
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            each = " ".join(f"{int(100 * f):3d}%" for f in self.fractions)
            line = f"  [{bar}] {percent:3d}%   workers: {each}"
            if self.tty:
                print("\r" + line, end="", flush=True)
            else:
                print(line, flush=True)

    def finish(self) -> None:
        if self.tty:
            print(flush=True)


# Long enough to press Ctrl-C: a few seconds on 2 cores.
PROGRESS_ITERATIONS = 250_000_000


def section_progress() -> None:
    """compute_pi on the pool with a progress callback; Ctrl-C stops it."""
    with CtrlC() as ctrl_c:
        print(
            f"{len(SEEDS)} x compute_pi({PROGRESS_ITERATIONS:_}, seed, progress=...) on "
            f"{len(SEEDS)} workers. Each call\n"
            "reports the fraction done (at most 100 times) from inside its block, which takes\n"
            "the GIL back for the callback."
        )
        print(
            "  Press Ctrl-C to stop. Worker threads get no signals (their blocks' signal checks\n"
            "  run no handler), so the main thread's SIGINT handler sets a flag, and each\n"
            "  worker's callback raises at its next call, which stops that computation.\n"
            "  (A compute_pi call on the main thread stops on Ctrl-C by itself.)"
        )
        run_progress_pool(ctrl_c)


def run_progress_pool(ctrl_c: CtrlC) -> None:
    """The pool of the progress section, with Ctrl-C read from `ctrl_c`."""
    bar = ProgressBar(len(SEEDS))
    hold = PAUSE in PAUSE_POINTS[:-1]  # test runs: no computation ends before the Ctrl-C
    stopped = []  # workers whose callback raised Stopped (list.append: thread-safe)

    def run(worker: int, seed: int) -> float:
        def progress(fraction: float) -> None:
            if hold:
                wait_for_ctrl_c(ctrl_c)
            if ctrl_c.pressed:
                stopped.append(worker)
                raise Stopped
            bar.update(worker, fraction)

        return my_extension.compute_pi(PROGRESS_ITERATIONS, seed, progress=progress)

    pause_point("start", ctrl_c)
    futures = []
    with ThreadPoolExecutor(max_workers=len(SEEDS)) as executor:
        for i, seed in enumerate(SEEDS):
            if ctrl_c.pressed:
                break  # the rest never starts
            futures.append(executor.submit(run, i, seed))
            if i + 1 < len(SEEDS):
                pause_point(f"submitted-{i + 1}", ctrl_c)
        pause_point("filled", ctrl_c)
        # The `with` waits for every submitted job: a Ctrl-C meanwhile only
        # sets the flag, which their callbacks act on.
    bar.finish()

    finished = [f for f in futures if f.exception() is None]
    for n, (seed, future) in enumerate(zip(SEEDS, futures)):
        if n == len(SEEDS) // 2:
            pause_point("printing", ctrl_c)
        if future.exception() is None:
            print(f"  seed {seed}: pi ~ {future.result():.6f}")
    if ctrl_c.pressed:
        notes = []
        if len(futures) < len(SEEDS):
            notes.append(f"{len(SEEDS) - len(futures)} not started")
        if finished:
            notes.append(f"{len(finished)} had finished")
        note = f" ({', '.join(notes)})" if notes else ""
        print(f"  Ctrl-C: {len(stopped)} of {len(SEEDS)} computations stopped by their "
              f"callbacks{note}.")
    for future in futures:
        error = future.exception()
        if error is not None and not isinstance(error, Stopped):
            raise error


# The sections, in the order they run (`--only NAME` runs one).
SECTIONS = {
    "release": section_release,
    "timings": section_timings,
    "progress": section_progress,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--verbose", action="store_true", help="also say what nuwa found")
    parser.add_argument("--only", choices=sorted(SECTIONS), help="run this section only")
    args = parser.parse_args()
    if args.verbose:
        # The `_test_` hooks are not public API; they live on the extension
        # module itself, inside the package maturin builds around it.
        native = getattr(my_extension, "my_extension", my_extension)
        info = native._test_nuwa_info()
        print(f"nuwa: {info}\n{explain_resolution(info)}\n")

    names = [args.only] if args.only else list(SECTIONS)
    try:
        for i, name in enumerate(names):
            if i:
                print()
            SECTIONS[name]()
    except KeyboardInterrupt:
        # Outside the progress section, Ctrl-C ends the demo.
        print("\nInterrupted.", flush=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
