"""Threads still inside a block when the interpreter exits.

Each scenario runs in a fresh interpreter (a subprocess) and must exit with
status 0, without "Fatal Python error" and without any Rust panic or abort.
"""

from __future__ import annotations

import pytest

from conftest import run_python

pytestmark = pytest.mark.timeout(300)

PRELUDE = """
import os, sys, threading, time
import my_extension
native = getattr(my_extension, "my_extension", my_extension)

def wait_until_entered(flags, limit=20.0):
    deadline = time.monotonic() + limit
    while not all(native._test_flag_is_set(f) for f in flags):
        if time.monotonic() > deadline:
            sys.exit("threads never entered their blocks")
        time.sleep(0.001)
"""


def check(result, marker):
    assert result.returncode == 0, (result.returncode, result.stderr)
    assert marker in result.stdout, result.stdout
    assert "Fatal Python error" not in result.stderr, result.stderr
    assert "panic" not in result.stderr.lower(), result.stderr
    assert "abort" not in result.stderr.lower(), result.stderr


EXIT_WHILE_IN_BLOCKS = PRELUDE + """
never = native._test_new_flag()
entered = [native._test_new_flag() for _ in range(6)]
for e in entered[:4]:
    threading.Thread(target=native._test_wait_for_flag, args=(never, 60), kwargs={"entered": e},
                     daemon=True).start()
for e in entered[4:]:
    threading.Thread(target=native._test_sleep_in_block, args=(60,), kwargs={"entered": e},
                     daemon=True).start()
wait_until_entered(entered)
print("exiting with threads in blocks", flush=True)
"""


def test_exit_while_daemon_threads_are_in_blocks():
    for run in range(20):
        result = run_python(EXIT_WHILE_IN_BLOCKS, timeout=60)
        check(result, "exiting with threads in blocks")


WAKE_DURING_FINALIZATION = PRELUDE + """
import gc
gc.disable()  # so the cycle below is only collected by Py_FinalizeEx

flag = native._test_new_flag()
entered = [native._test_new_flag() for _ in range(4)]
returned = []

def waiter(e):
    # Wakes up while the interpreter finalizes, then must take the GIL back.
    returned.append(native._test_wait_for_flag(flag, 60, entered=e))
    os.write(1, b"a waiter took the GIL back\\n")

for e in entered:
    threading.Thread(target=waiter, args=(e,), daemon=True).start()
wait_until_entered(entered)

class SetFlagWhenFinalized:
    # Everything __del__ needs is kept on the object: module globals may be
    # gone by the time it runs.
    def __init__(self):
        self.set_flag, self.flag = native._test_set_flag, flag
        self.sleep, self.write = time.sleep, os.write
        self.cycle = self

    def __del__(self):
        self.set_flag(self.flag)
        self.write(1, b"flag set during finalization\\n")
        self.sleep(0.3)  # the waiters now try to take the GIL back

SetFlagWhenFinalized()  # garbage in a cycle, never collected before shutdown
print("exiting", flush=True)
"""


def test_threads_woken_during_finalization_are_parked_not_unwound():
    for run in range(10):
        result = run_python(WAKE_DURING_FINALIZATION, timeout=60)
        check(result, "flag set during finalization")
        # On CPython <= 3.13 the waiters are ended (nuwa parks them) before
        # they run Python again; either way nothing crashes.
        assert "exiting" in result.stdout
