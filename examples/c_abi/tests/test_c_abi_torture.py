"""Torture with exact accounting: 16 Python threads make thousands of calls
each, mixing every way into and out of a block, and every result is checked
against a value computed here. At the end, the GIL releases counted by the
library equal the reacquires, and both equal the number the calls should
have made, by the header's count for each function.

$NUWA_TORTURE_CALLS sets the calls per thread (default 10000).
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import random
import sys
import threading
import time
from collections import Counter

import pytest

import cabi
from cabi import ERR_PANIC, OK

THREADS = 16
CALLS = int(os.environ.get("NUWA_TORTURE_CALLS", "10000"))
# The internal deadline: past it, workers stop and the test fails. Above it,
# pytest-timeout catches a call that never returns, and, should a thread
# never give the GIL back (so that no Python code, pytest-timeout's included,
# can run), faulthandler's watchdog, which needs no GIL, dumps every thread's
# stack and exits.
DEADLINE_S = 90
TIMEOUT_S = 150
WATCHDOG_S = 180


class Worker:
    """One thread's share of the calls, with its own random stream."""

    def __init__(self, lib, seed, deadline, barrier):
        self.lib = lib
        self.rng = random.Random(seed)
        self.deadline = deadline
        self.barrier = barrier
        self.out = cabi.u64()
        self.out_ref = ctypes.byref(self.out)
        self.f_out = ctypes.c_double()
        self.f_out_ref = ctypes.byref(self.f_out)
        self.arrays = []
        for length in (0, 1, 3, 100, 1000, 2000):
            data = [self.rng.uniform(-100, 100) for _ in range(length)]
            array = (ctypes.c_double * max(length, 1))(*data)
            self.arrays.append((array, length, cabi.sum_of_squares(data)))
        self.kinds = Counter()
        self.releases = 0  # what the calls should release, by the header
        self.calls = 0
        self.errors = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def u64_call(self, function, *args):
        self.out.value = cabi.MASK64
        status = function(*args, self.out_ref)
        return status, self.out.value

    def one_call(self):
        """Makes one call; returns (kind, got, expected, releases)."""
        lib, rng = self.lib, self.rng
        r = rng.random() * 100
        if r < 1:
            site = rng.randrange(3)
            return "panic", lib.nuwa_panic_in_block(site, 0), ERR_PANIC, 3
        if r < 26:
            n = rng.randrange(20_000, 200_000)
            return "long", self.u64_call(lib.nuwa_spin_sum, n), (OK, cabi.spin_sum(n)), 1
        if r < 41:
            x = rng.getrandbits(64)
            return "empty", self.u64_call(lib.nuwa_empty_block, x), (OK, x), 1
        if r < 53:
            n = rng.randrange(20_000)
            return "nested", self.u64_call(lib.nuwa_nested_blocks, n), (OK, cabi.nested_blocks(n)), 1
        if r < 65:
            n, stop = rng.randrange(50_000), rng.randrange(60_000)
            return "return", self.u64_call(lib.nuwa_early_return, n, stop), cabi.early_return(n, stop), 1
        if r < 77:
            base, exp = rng.randrange(50), rng.randrange(40)
            status = lib.nuwa_checked_power(base, exp, self.out_ref)
            expected = cabi.checked_power(base, exp)
            got = (status, self.out.value if status == OK else None)
            return "question_mark", got, expected, 1
        if r < 92:
            array, length, expected = self.arrays[rng.randrange(len(self.arrays))]
            status = lib.nuwa_sum_of_squares(array, length, self.f_out_ref)
            return "sum_of_squares", (status, self.f_out.value), (OK, expected), 1
        n = rng.randrange(50_000)
        if rng.random() < 0.02:
            status, _ = self.u64_call(lib.nuwa_blocks_in_rust_thread, n, 1)
            return "rust_thread_panic", status, ERR_PANIC, 1
        got = self.u64_call(lib.nuwa_blocks_in_rust_thread, n, 0)
        return "rust_thread", got, (OK, cabi.blocks_in_rust_thread(n)), 1

    def run(self):
        self.barrier.wait()
        for i in range(CALLS):
            if time.monotonic() > self.deadline:
                self.errors.append(f"deadline passed after {i} calls")
                return
            kind, got, expected, releases = self.one_call()
            self.calls += 1
            self.kinds[kind] += 1
            self.releases += releases
            if got != expected and len(self.errors) < 10:
                self.errors.append(f"call {i} ({kind}): got {got}, expected {expected}")


@pytest.fixture
def watchdog():
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True, file=sys.__stderr__)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.mark.timeout(TIMEOUT_S)
def test_torture_exact_accounting(lib, watchdog):
    seed = int(os.environ.get("NUWA_TORTURE_SEED", random.randrange(1 << 30)))
    start = time.monotonic()
    deadline = start + DEADLINE_S
    barrier = threading.Barrier(THREADS)
    before = cabi.counters(lib)
    workers = [Worker(lib, seed + i, deadline, barrier) for i in range(THREADS)]
    for w in workers:
        w.thread.start()
    for w in workers:
        w.thread.join(max(0.0, deadline + 10 - time.monotonic()))
    stuck = [i for i, w in enumerate(workers) if w.thread.is_alive()]
    assert not stuck, f"threads {stuck} still running {DEADLINE_S + 10} s after the start (seed {seed})"
    elapsed = time.monotonic() - start
    after = cabi.counters(lib)
    releases, reacquires = after[0] - before[0], after[1] - before[1]

    errors = [f"thread {i}: {e}" for i, w in enumerate(workers) for e in w.errors]
    kinds = sum((w.kinds for w in workers), Counter())
    summary = f"seed {seed}, {elapsed:.1f} s, {sum(kinds.values())} calls: {dict(sorted(kinds.items()))}"
    print(summary)
    assert not errors, "\n".join([summary] + errors[:20])
    assert sum(w.calls for w in workers) == THREADS * CALLS
    expected = sum(w.releases for w in workers)
    assert releases == reacquires, f"{releases} releases but {reacquires} reacquires ({summary})"
    assert releases == expected, f"{releases} releases, the calls should have made {expected} ({summary})"
    assert releases > 0
    # Every kind of call ran, panics included.
    assert set(kinds) >= {"panic", "long", "empty", "nested", "return", "question_mark", "sum_of_squares", "rust_thread"}
