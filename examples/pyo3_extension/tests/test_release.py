"""The adapter really releases the GIL: proofs that do not depend on timing.

``_test_wait_for_flag`` waits inside a block released through the Detach
adapter for a Flag that only another Python thread sets; setting it is a
Python method call, which needs the GIL. So it can return True only if the
block released the GIL. The setter waits until the block has started (the
``entered`` flag), so a flag set before the block cannot pass for a
release. With ``release=False`` the same wait must time out.
"""

from __future__ import annotations

import threading
import time

import pytest

from conftest import gil_enabled

pytestmark = pytest.mark.timeout(60)


def start_setter(native, flag, entered, limit=20.0):
    """A thread that sets ``flag`` once ``entered`` is set (bounded wait)."""

    def run():
        deadline = time.monotonic() + limit
        while not entered.is_set():
            if time.monotonic() > deadline:
                return
            time.sleep(0.0005)
        flag.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_detach_releases_the_gil(native):
    flag, entered = native.Flag(), native.Flag()
    setter = start_setter(native, flag, entered)
    assert native._test_wait_for_flag(flag, 10, entered=entered) is True
    setter.join(10)
    assert not setter.is_alive()


@pytest.mark.skipif(not gil_enabled(), reason="no GIL to hold on a free-threaded build")
def test_negative_control_with_the_gil_held(native):
    flag, entered = native.Flag(), native.Flag()
    setter = start_setter(native, flag, entered)
    # The setter cannot run while this thread holds the GIL for 0.5 s ...
    assert native._test_wait_for_flag(flag, 0.5, entered=entered, release=False) is False
    # ... and runs as soon as it is let go.
    setter.join(10)
    assert not setter.is_alive()
    assert flag.is_set()
    assert native._test_wait_for_flag(flag, 0) is True


def test_eight_threads_wait_at_once(native):
    flags = [native.Flag() for _ in range(8)]
    entered = [native.Flag() for _ in range(8)]
    results = [None] * 8

    def wait(i):
        results[i] = native._test_wait_for_flag(flags[i], 10, entered=entered[i])

    threads = [threading.Thread(target=wait, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while not all(e.is_set() for e in entered) and time.monotonic() < deadline:
        time.sleep(0.0005)
    # Set before a block started, a flag would prove nothing.
    assert all(e.is_set() for e in entered), "a waiter never entered its block"
    for f in reversed(flags):
        f.set()
    for t in threads:
        t.join(10)
    assert results == [True] * 8


def test_timeout_is_honoured_and_checked(native):
    assert native._test_wait_for_flag(native.Flag(), 0.05) is False
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="timeout must be a finite number >= 0"):
            native._test_wait_for_flag(native.Flag(), bad)
    with pytest.raises(TypeError):
        native._test_wait_for_flag(object(), 1)
