#!/usr/bin/env python3
"""Reproduce a CPython <= 3.13 race at interpreter exit, without nuwa.

Daemon threads call a C function through ctypes.CDLL in a tight loop; ctypes
releases the GIL around each call (Py_BEGIN/END_ALLOW_THREADS), exactly as a
nuwa block does. When the main thread falls off the end of the script,
Py_FinalizeEx frees the thread states of the daemon threads. A daemon thread
that entered take_gil() (through PyEval_RestoreThread) just before the
interpreter was marked as finalizing passes take_gil's "must exit" check, and
then reads its own thread state after it was freed. A debug build (freed
memory is poisoned) fails its assertion
`_PyThreadState_CheckConsistency: !_PyMem_IsPtrFreed(tstate->interp)` or
crashes with SIGSEGV in take_gil; a release build reads stale memory, which
is almost always harmless.

No nuwa code is involved, so nuwa cannot prevent it: this is why nuwa's
shutdown tests skip the modes that race with the start of finalization on
debug builds of CPython 3.13 and older (see README, Guarantees).

Usage: scripts/cpython-shutdown-race.py PYTHON [RUNS]   (default 1500 runs,
6 at a time). Measured here: CPython 3.13.5 --with-pydebug, 29 of 1500 exits
failed (the assertion, or SIGSEGV in take_gil), and 23 of 1500 in a later
session; CPython 3.13.0 (release), 0 of 1500. CPython 3.14 fixed it
(gh-124878: reference-counted thread states): Debian sid's 3.14.10 and
3.15.2 debug builds, 0 of 1500 each, run in the chroot of
scripts/sid-pythons.sh:

    scripts/sid-pythons.sh run -- /usr/bin/python3.14d \
        scripts/cpython-shutdown-race.py /usr/bin/python3.14d
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

CHILD = """
import ctypes, threading, time
libc = ctypes.CDLL(None)  # releases the GIL around every call

def loop():
    while True:
        libc.getpid()

for _ in range(4):
    threading.Thread(target=loop, daemon=True).start()
time.sleep(0.05)
"""


def one(python: str) -> str | None:
    try:
        r = subprocess.run([python, "-c", CHILD], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "timeout"
    if r.returncode == 0:
        return None
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    return f"exit status {r.returncode}: {lines[-1] if lines else '(no stderr)'}"


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    python, runs = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1500
    with ThreadPoolExecutor(6) as pool:
        failures = [f for f in pool.map(lambda _: one(python), range(runs)) if f]
    for f in failures:
        print(f)
    print(f"{len(failures)} of {runs} exits failed ({python})")


if __name__ == "__main__":
    main()
