"""The GIL is released inside a block: proved by a flag that only Python
code on another thread can set, and a bounded wait for it.

The main thread calls nuwa_wait_for_flag (through ctypes.PyDLL, so it holds
the GIL when the call starts). A Python thread waits until the main thread
is inside the wait (nuwa_waiters() > 0, counted after the block's release),
then sets the flag with a ctypes call. Running that Python code needs the
GIL, so the wait sees the flag only if the block released it; otherwise it
times out and returns 0.

The negative control runs the same protocol through
nuwa_wait_for_flag_holding, which keeps the GIL: it must time out, which
shows that the test can fail.

Two setters:

- "store": the setter just calls nuwa_set_flag. On a free-threaded build
  running without the GIL, any attached thread runs Python in parallel, so
  this proves nothing there (its negative control is skipped);
- "stop_the_world": the setter first calls gc.collect(). On a GIL build that
  needs the GIL, as any Python code does; on a free-threaded build the
  collector stops the world, which waits until every other thread has
  detached its thread state. So there it proves that the block detached
  (PyEval_SaveThread), and its negative control, whose thread stays
  attached, times out.
"""

from __future__ import annotations

import ctypes
import gc
import threading
import time

import pytest

import cabi

SETTERS = ["store", "stop_the_world"]


class Setter:
    """A Python thread that sets `flag` once a thread is inside a flag wait."""

    def __init__(self, lib, flag, how, patience=20.0):
        self.lib, self.flag, self.how = lib, flag, how
        self.stop = threading.Event()
        self.saw_waiter = False
        self.status = None
        self.thread = threading.Thread(target=self._run, args=(patience,), daemon=True)
        self.thread.start()

    def _run(self, patience):
        deadline = time.monotonic() + patience
        while not self.stop.is_set() and time.monotonic() < deadline:
            if self.lib.nuwa_waiters() > 0:
                self.saw_waiter = True
                break
            time.sleep(0.0002)
        if self.how == "stop_the_world":
            gc.collect()
        self.status = self.lib.nuwa_set_flag(ctypes.byref(self.flag))

    def finish(self):
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the setter thread is stuck"
        assert self.status == cabi.OK


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", SETTERS)
def test_another_python_thread_runs_during_a_block(lib, how):
    flag = ctypes.c_uint8(0)
    before = cabi.counters(lib)
    setter = Setter(lib, flag, how)
    start = time.monotonic()
    seen = lib.nuwa_wait_for_flag(ctypes.byref(flag), 10_000)
    elapsed = time.monotonic() - start
    setter.finish()
    assert seen == 1, (
        f"the wait timed out after {elapsed:.1f} s: the setter thread could not run Python "
        "while this thread was in the block, so the block did not release the GIL"
    )
    assert setter.saw_waiter
    after = cabi.counters(lib)
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", SETTERS)
def test_negative_control_a_thread_that_keeps_the_gil_blocks_the_setter(lib, how):
    if how == "store" and cabi.free_threaded():
        pytest.skip(
            "free-threaded build without the GIL: an attached thread does not keep "
            "other threads from running Python; the stop_the_world setter is the control here"
        )
    flag = ctypes.c_uint8(0)
    before = cabi.counters(lib)
    setter = Setter(lib, flag, how)
    start = time.monotonic()
    seen = lib.nuwa_wait_for_flag_holding(ctypes.byref(flag), 500)
    elapsed = time.monotonic() - start
    setter.finish()
    assert seen == 0, "the flag was set while this thread kept the GIL: the test method cannot tell"
    assert elapsed >= 0.5
    # The setter was alive and did set the flag, once the GIL was free.
    assert flag.value == 1
    assert cabi.counters(lib) == before  # nothing released


@pytest.mark.timeout(60)
def test_many_python_threads_run_during_one_block(lib):
    """While one thread waits in a block, 8 others each run Python and
    release their own blocks; the last of them sets the flag."""
    flag = ctypes.c_uint8(0)
    done = []
    saw_waiter = []
    lock = threading.Lock()

    def worker():
        deadline = time.monotonic() + 20
        while lib.nuwa_waiters() == 0 and time.monotonic() < deadline:
            time.sleep(0.0002)
        # Set before the wait started, the flag would prove nothing.
        saw_waiter.append(lib.nuwa_waiters() > 0)
        out = cabi.u64()
        assert lib.nuwa_spin_sum(10_000, ctypes.byref(out)) == cabi.OK
        with lock:
            done.append(out.value)
            if len(done) == 8:
                lib.nuwa_set_flag(ctypes.byref(flag))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    seen = lib.nuwa_wait_for_flag(ctypes.byref(flag), 15_000)
    for t in threads:
        t.join(30)
    assert seen == 1
    assert saw_waiter == [True] * 8
    assert done == [cabi.spin_sum(10_000)] * 8
