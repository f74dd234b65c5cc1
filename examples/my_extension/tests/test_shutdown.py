"""Threads still inside a block when the interpreter exits.

Each scenario runs in a fresh interpreter (a subprocess) and must exit with
status 0, without "Fatal Python error" and without any Rust panic or abort.
"""

from __future__ import annotations

import sys

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


IN_PROGRESS_CALLBACK_AT_EXIT = """
import os, signal, sys, threading, time
import my_extension

def syscall_of(tid, _open=os.open, _read=os.read, _close=os.close):
    # The first field of /proc/self/task/<tid>/syscall: the number of the
    # system call the thread is blocked in, or b"running". Only os
    # functions: this also runs during finalization.
    try:
        fd = _open("/proc/self/task/%d/syscall" % tid, os.O_RDONLY)
    except OSError:
        return None
    try:
        return _read(fd, 200).split(b" ", 1)[0].strip()
    finally:
        _close(fd)

# The number of pause() (not a system call on every architecture), read
# from a thread blocked in it.
helper = []
threading.Thread(target=lambda: (helper.append(threading.get_native_id()), signal.pause()),
                 daemon=True).start()
deadline = time.monotonic() + 20
while not helper or syscall_of(helper[0]) in (None, b"running"):
    if time.monotonic() > deadline:
        sys.exit("the pause() helper never blocked")
    time.sleep(0.001)
PAUSE = syscall_of(helper[0])

in_callback = threading.Event()
daemon = []

def progress(fraction):
    # Called in a with_gil! part of compute_pi's block, on a daemon thread:
    # stays in Python until CPython ends the thread (3.13 and older) or hangs
    # it (3.14+) during finalization.
    daemon.append(threading.get_native_id())
    in_callback.set()
    while True:
        pass

threading.Thread(target=my_extension.compute_pi, args=(10**6,),
                 kwargs={"progress": progress}, daemon=True).start()
if not in_callback.wait(20):
    sys.exit("the progress callback never ran")

import gc
gc.disable()  # so the cycle below is only collected by Py_FinalizeEx

class WaitUntilParked:
    # Run by Py_FinalizeEx: gives the GIL up (so that the daemon thread,
    # waiting for it, is ended) until that thread is blocked in pause():
    # parked by nuwa, or hung by CPython 3.14+. Everything is kept on the
    # object: module globals may be gone by then.
    def __init__(self):
        self.tid, self.pause, self.syscall_of = daemon[0], PAUSE, syscall_of
        self.sleep, self.now, self.write, self.exit = time.sleep, time.monotonic, os.write, os._exit
        self.finalizing = sys.is_finalizing
        self.cycle = self

    def __del__(self):
        if not self.finalizing():
            self.write(1, b"__del__ ran before finalization\\n")
            self.exit(3)
        deadline = self.now() + 30
        while self.syscall_of(self.tid) != self.pause:
            if self.now() > deadline:
                self.write(1, b"the daemon thread never parked\\n")
                self.exit(4)
            self.sleep(0.001)
        self.write(1, b"daemon parked during finalization\\n")

WaitUntilParked()  # garbage in a cycle, collected by Py_FinalizeEx
print("exiting with a daemon thread in a progress callback", flush=True)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/task")
def test_a_thread_ended_in_a_progress_callback_is_parked_not_aborted():
    # compute_pi(progress=...) on a daemon thread, its callback still running
    # Python when the interpreter exits. CPython 3.13 and older end the
    # thread inside the callback (pthread_exit); nuwa must park it at the
    # part's frame. Before, the unwind reached compute_pi's catch_unwind or
    # extern "C" boundary: SIGABRT every run.
    for run in range(3):
        result = run_python(IN_PROGRESS_CALLBACK_AT_EXIT, timeout=90)
        check(result, "daemon parked during finalization")
