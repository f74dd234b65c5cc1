"""Interpreter exits with blocks in flight, many times: every exit is clean.

Each mode of child.py runs $NUWA_SHUTDOWN_RUNS times (default 200), two
interpreters at a time. A run passes if the interpreter exits with status
0, is not killed by a signal (a negative status: abort, crash, core dump),
does not hang (a timeout), prints no "Fatal Python error", no "panic in a
function that cannot unwind", no Rust panic message and no traceback, and
got as far as its exit (the markers on stdout). The first failures stop the
test early, with their output. One exception, CPython's own exit race on
3.13 and older (see RACES_WITH_FINALIZE_START): a few SIGSEGVs are counted
as CPython's, reported, and tolerated.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import pytest

import cabi

CHILD = cabi.REPO_ROOT / "examples" / "c_abi" / "tests" / "child.py"
RUNS = int(os.environ.get("NUWA_SHUTDOWN_RUNS", "200"))
PARALLEL = 2
MAX_FAILURES = 3
RUN_TIMEOUT_S = 30
FORBIDDEN = (
    "Fatal Python error",
    "panic in a function that cannot unwind",
    "panicked at",
    "Rust cannot catch foreign exceptions",
    "exception not rethrown",
    "Traceback",
)
MODES = {
    # mode: what stdout must contain
    "long_blocks": ["exiting from long_blocks"],
    "tight_loop": ["exiting from tight_loop"],
    "panic": ["exiting from panic"],
    "finalizer_flag": ["exiting from finalizer_flag", "finalizer ran"],
}
# In these modes, blocks end at any moment, so a daemon thread may re-enter
# take_gil() just as the main thread starts finalizing. CPython 3.13 and older
# then free that thread's state while take_gil() still reads it: a
# use-after-free inside CPython, with or without nuwa (any GIL release in a
# daemon thread, ctypes' own included, can hit it). A debug build poisons
# freed memory and crashes on it now and then: scripts/cpython-shutdown-race.py
# reproduces it without nuwa (29 of 1,500 exits of 3.13.5d here; 0 of 1,500 of
# the 3.13.0 release build, where the stale memory is still intact). In
# finalizer_flag, blocks end after finalization has started, which CPython
# handles before touching the thread state: it runs on every build.
RACES_WITH_FINALIZE_START = {"long_blocks", "tight_loop", "panic"}
CPYTHON_DEBUG_RACE = hasattr(sys, "gettotalrefcount") and sys.version_info < (3, 14)
# Release builds of 3.13 and older hit the same race less often, when the
# stale memory has been reused: scripts/cpython-shutdown-race.py crashed
# 3.10.13 in 11 of 3,000 exits on this machine under load, without nuwa. In
# the racing modes a SIGSEGV is therefore counted as CPython's, up to this
# many per 200 runs; anything else (an abort, a hang, "Fatal Python error",
# a panic message, a missing marker) still fails at once, and so do more
# SIGSEGVs than that. From 3.14 on (gh-124878) none is tolerated.
CPYTHON_RELEASE_RACE = sys.version_info < (3, 14)
TOLERATED_SEGV_PER_200 = 4


def run_once(mode, lib_path, seed):
    """Returns None if the run was clean, else ("segv" or "fail", report):
    "segv" if the only thing wrong is a SIGSEGV (CPython's race, where it is
    tolerated)."""
    env = dict(os.environ, PYTHONFAULTHANDLER="1")
    try:
        proc = subprocess.run(
            [sys.executable, str(CHILD), mode, str(lib_path), str(seed)],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            env=env,
        )
    except subprocess.TimeoutExpired as e:
        return ("fail", f"seed {seed}: hung, killed after {RUN_TIMEOUT_S} s\nstdout: {e.stdout!r}\nstderr: {e.stderr!r}")
    problems = []
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        problems.append(f"killed by {name} (status {proc.returncode})")
    elif proc.returncode != 0:
        problems.append(f"exit status {proc.returncode}")
    problems += [f"printed {text!r}" for text in FORBIDDEN if text in proc.stderr]
    problems += [f"stdout lacks {text!r}" for text in MODES[mode] if text not in proc.stdout]
    if not problems:
        return None
    report = f"seed {seed}: {', '.join(problems)}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    # faulthandler (PYTHONFAULTHANDLER=1) reports any SIGSEGV as "Fatal
    # Python error: Segmentation fault": that line alone is part of it.
    segv_report = "Fatal Python error: Segmentation fault"
    only_segv = problems[0] == "killed by SIGSEGV (status -11)" and all(
        p.startswith("stdout lacks")
        or (p == "printed 'Fatal Python error'"
            and proc.stderr.count("Fatal Python error") == proc.stderr.count(segv_report))
        for p in problems[1:]
    )
    return ("segv" if only_segv else "fail", report)


@pytest.mark.timeout(120 + RUNS * RUN_TIMEOUT_S // 10)
@pytest.mark.parametrize("mode", list(MODES))
def test_interpreter_exits_cleanly(lib_path, mode):
    if CPYTHON_DEBUG_RACE and mode in RACES_WITH_FINALIZE_START:
        pytest.skip(
            "CPython <= 3.13 debug build: a daemon thread re-entering take_gil() as "
            "finalization starts reads its freed thread state (a CPython race, "
            "reproduced without nuwa by scripts/cpython-shutdown-race.py)"
        )
    tolerated = 0
    if CPYTHON_RELEASE_RACE and mode in RACES_WITH_FINALIZE_START:
        tolerated = max(1, RUNS * TOLERATED_SEGV_PER_200 // 200)
    start = time.monotonic()
    seeds = iter(range(RUNS))
    running, failures, segvs, done = set(), [], [], 0
    with ThreadPoolExecutor(PARALLEL) as pool:
        while True:
            # Keep PARALLEL runs going; after MAX_FAILURES, start no more.
            while len(running) < PARALLEL and len(failures) < MAX_FAILURES:
                seed = next(seeds, None)
                if seed is None:
                    break
                running.add(pool.submit(run_once, mode, lib_path, seed))
            if not running:
                break
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                done += 1
                outcome = future.result()
                if outcome is None:
                    continue
                kind, report = outcome
                if kind == "segv" and len(segvs) < tolerated:
                    segvs.append(report)
                else:
                    failures.append(report)
    elapsed = time.monotonic() - start
    assert not failures, f"{len(failures)} of {done} runs failed ({mode}):\n\n" + "\n\n".join(failures)
    assert done == RUNS
    note = f"; {len(segvs)} SIGSEGV counted as CPython's exit race (at most {tolerated})" if segvs else ""
    print(f"{mode}: {RUNS - len(segvs)} clean exits of {RUNS} in {elapsed:.1f} s{note}")
    for report in segvs:
        print(report)
