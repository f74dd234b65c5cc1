"""Scenarios that need a fresh interpreter, run by the tests as
`python child.py MODE LIB SEED`.

Shutdown modes: daemon threads are in or around blocks when the main thread
falls off the end of the script and the interpreter finalizes.

- long_blocks: daemon threads in the middle of long blocks (waits and long
  computations);
- tight_loop: daemon threads entering and leaving short blocks in a loop;
- panic: daemon threads whose blocks panic, some while the interpreter
  finalizes (the GIL is taken back while the panic unwinds);
- finalizer_flag: daemon threads wait in blocks for a flag that is set by a
  __del__ run by the final garbage collection of Py_FinalizeEx, so their
  blocks end while the interpreter finalizes. On CPython <= 3.13, taking the
  GIL back then ends the thread with pthread_exit (a forced unwind), which
  nuwa must keep out of Rust frames.

The test checks the exit status and the output. Markers on stdout show how
far the script got.

Other modes print one JSON line:

- first_call: 16 threads behind a barrier make their first call into the
  freshly loaded library at once, half through ctypes.PyDLL (GIL held), half
  through ctypes.CDLL (GIL released around the call);
- gil_held_elsewhere: a thread that does not hold the GIL (calls through
  ctypes.CDLL) starts blocks while another Python thread holds the GIL.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import random
import sys
import threading
import time
from collections import Counter

import cabi

DAEMONS = 4


def wait_until(condition, what, limit=20.0):
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            print(f"child: timed out waiting for {what}", file=sys.stderr, flush=True)
            os._exit(3)
        time.sleep(0.001)


def start_daemons(target, rng):
    progress = [0] * DAEMONS
    for i in range(DAEMONS):
        seed = rng.getrandbits(32)
        threading.Thread(target=target, args=(i, random.Random(seed), progress), daemon=True).start()
    return progress


def fail_in_thread(message):
    os.write(2, f"child: {message}\n".encode())
    os._exit(4)


def long_blocks(lib, rng):
    never = ctypes.c_uint8(0)

    def run(i, rng, progress):
        out = cabi.u64()
        while True:
            if lib.nuwa_wait_for_flag(ctypes.byref(never), rng.randrange(1, 30)) != 0:
                fail_in_thread("a wait for a flag nobody sets did not time out")
            n = rng.randrange(100_000, 2_000_000)
            if lib.nuwa_spin_sum(n, ctypes.byref(out)) != cabi.OK or out.value != cabi.spin_sum(n):
                fail_in_thread(f"spin_sum({n}) is wrong")
            progress[i] += 1

    progress = start_daemons(run, rng)
    wait_until(lambda: min(progress) >= 1 and lib.nuwa_waiters() > 0, "daemons in blocks")


def tight_loop(lib, rng):
    def run(i, rng, progress):
        out = cabi.u64()
        while True:
            x = rng.getrandbits(64)
            if lib.nuwa_empty_block(x, ctypes.byref(out)) != cabi.OK or out.value != x:
                fail_in_thread("empty_block is wrong")
            if lib.nuwa_nested_blocks(10, ctypes.byref(out)) != cabi.OK:
                fail_in_thread("nested_blocks failed")
            if lib.nuwa_early_return(100, 7, ctypes.byref(out)) != cabi.STOPPED_EARLY:
                fail_in_thread("early_return failed")
            progress[i] += 1

    progress = start_daemons(run, rng)
    wait_until(lambda: min(progress) >= 100, "daemons looping")


def panic(lib, rng):
    def run(i, rng, progress):
        while True:
            status = lib.nuwa_panic_in_block(rng.randrange(3), rng.randrange(0, 20))
            if status != cabi.ERR_PANIC:
                fail_in_thread(f"panic_in_block returned {status}")
            progress[i] += 1

    progress = start_daemons(run, rng)
    wait_until(lambda: min(progress) >= 2, "daemons panicking")


def finalizer_flag(lib, rng):
    flag = ctypes.c_uint8(0)

    def run(i, rng, progress):
        progress[i] += 1
        seen = lib.nuwa_wait_for_flag(ctypes.byref(flag), 20_000)
        # Not reached while the interpreter finalizes: the thread exits (or,
        # with nuwa, is parked) when its block takes the GIL back.
        os.write(1, f"daemon {i} returned {seen}\n".encode())

    progress = start_daemons(run, rng)
    wait_until(lambda: lib.nuwa_waiters() == DAEMONS, "daemons waiting for the flag")

    class SetsTheFlagWhenCollected:
        def __init__(self):
            # Everything __del__ needs, held here: module globals may be
            # gone by the time it runs.
            self.set_flag = lib.nuwa_set_flag
            self.flag_ref = ctypes.byref(flag)
            self.write = os.write
            self.sleep = time.sleep
            self.cycle = self

        def __del__(self):
            self.set_flag(self.flag_ref)
            self.write(1, b"finalizer ran\n")
            # The daemons see the flag, end their blocks and try to take the
            # GIL back while this thread is still finalizing.
            self.sleep(0.1)

    gc.disable()
    SetsTheFlagWhenCollected()  # unreachable at once, but in a cycle


SHUTDOWN = {
    "long_blocks": long_blocks,
    "tight_loop": tight_loop,
    "panic": panic,
    "finalizer_flag": finalizer_flag,
}


def first_call(path):
    pydll = cabi.load(path, ctypes.PyDLL)
    cdll = cabi.load(path, ctypes.CDLL)
    n = 16
    barrier = threading.Barrier(n)
    results = [None] * n

    def run(i):
        via, lib = ("PyDLL", pydll) if i % 2 == 0 else ("CDLL", cdll)
        first = "probe" if i % 4 < 2 else "describe"
        barrier.wait()
        value = lib.nuwa_probe_release() if first == "probe" else cabi.describe(lib)
        results[i] = {
            "via": via,
            "first": first,
            "value": value,
            "describe": cabi.describe(lib),
            "python_found": lib.nuwa_python_found(),
        }

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"results": results, "counters": cabi.counters(pydll)}


def gil_held_elsewhere(path):
    cdll = cabi.load(path, ctypes.CDLL)
    pydll = cabi.load(path, ctypes.PyDLL)
    stop = threading.Event()
    running = threading.Event()
    spins = [0]

    def hold_the_gil():
        # Pure Python: this thread holds the GIL whenever it runs.
        while not stop.is_set():
            spins[0] += 1
            if not running.is_set():
                running.set()

    holder = threading.Thread(target=hold_the_gil)
    holder.start()
    # Running before the probes, whatever the scheduling (bounded: if it
    # never runs, holder_ran is false and the test fails).
    running.wait(60)
    before = cabi.counters(pydll)
    probes = Counter()
    for i in range(300):
        # The 1 ms sleep in C (GIL released by CDLL) lets the holder take
        # the GIL, and nothing asks it to drop it before the probe runs.
        probes["probe_release_after"] += cdll.nuwa_probe_release_after(1)
        probes["probe_release"] += cdll.nuwa_probe_release()
        probes["probe_nested"] += cdll.nuwa_probe_nested()
        if i % 10 == 0:
            probes["probe_release_in_rust_thread"] += cdll.nuwa_probe_release_in_rust_thread()
    out = cabi.u64()
    status = cdll.nuwa_spin_sum(1_000_000, ctypes.byref(out))
    after = cabi.counters(pydll)
    stop.set()
    holder.join()
    return {
        "probes": probes,
        "spin_sum": [status, out.value == cabi.spin_sum(1_000_000)],
        "released": [after[0] - before[0], after[1] - before[1]],
        "holder_ran": spins[0] > 0,
    }


def main():
    mode, path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode in SHUTDOWN:
        lib = cabi.load(path)
        SHUTDOWN[mode](lib, random.Random(seed))
        time.sleep(random.Random(seed).uniform(0, 0.02))
        print(f"exiting from {mode}", flush=True)
        # Fall off the end with the daemon threads running.
    elif mode == "first_call":
        print(json.dumps(first_call(path)))
    elif mode == "gil_held_elsewhere":
        print(json.dumps(gil_held_elsewhere(path)))
    else:
        sys.exit(f"unknown mode {mode!r}")

if __name__ == "__main__":
    main()
