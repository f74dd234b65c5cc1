"""Proofs that blocks release the GIL, which do not depend on timing.

``_test_wait_for_flag`` waits inside a block for a flag that only another
Python thread sets, and setting it means calling into the module, which
needs the GIL. So it can return True only if the block released the GIL.
The setter waits until the block has started (the ``entered`` flag), so a
flag set before the block cannot pass for a release. With ``release=False``
the same wait must time out: the test can fail.
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
        while not native._test_flag_is_set(entered):
            if time.monotonic() > deadline:
                return
            time.sleep(0.0005)
        native._test_set_flag(flag)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_block_releases_the_gil(native):
    flag, entered = native._test_new_flag(), native._test_new_flag()
    setter = start_setter(native, flag, entered)
    assert native._test_wait_for_flag(flag, 10, entered=entered) is True
    setter.join(10)
    assert not setter.is_alive()


@pytest.mark.skipif(not gil_enabled(), reason="no GIL to hold on a free-threaded build")
def test_negative_control_with_the_gil_held(native):
    flag, entered = native._test_new_flag(), native._test_new_flag()
    setter = start_setter(native, flag, entered)
    # The setter cannot run while this thread holds the GIL for 0.5 s ...
    assert native._test_wait_for_flag(flag, 0.5, release=False, entered=entered) is False
    # ... and runs as soon as it is let go.
    setter.join(10)
    assert not setter.is_alive()
    assert native._test_flag_is_set(flag)
    assert native._test_wait_for_flag(flag, 0) is True


def test_release_from_a_worker_thread(native):
    """Threads other than the main one release too (on 3.11 and older nuwa
    compares the current state with the thread's own)."""
    flag, entered = native._test_new_flag(), native._test_new_flag()
    result = []
    waiter = threading.Thread(
        target=lambda: result.append(native._test_wait_for_flag(flag, 10, entered=entered)),
        daemon=True,
    )
    waiter.start()
    deadline = time.monotonic() + 10
    while not native._test_flag_is_set(entered) and time.monotonic() < deadline:
        time.sleep(0.0005)
    # Set before the block started, the flag would prove nothing.
    assert native._test_flag_is_set(entered), "the waiter never entered its block"
    native._test_set_flag(flag)
    waiter.join(10)
    assert result == [True]


def test_many_threads_wait_at_once(native):
    """Eight threads inside blocks at the same time, all released, all
    woken by the main thread."""
    flags = [native._test_new_flag() for _ in range(8)]
    entered = [native._test_new_flag() for _ in range(8)]
    results = [None] * 8

    def wait(i):
        results[i] = native._test_wait_for_flag(flags[i], 10, entered=entered[i])

    threads = [threading.Thread(target=wait, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while not all(native._test_flag_is_set(e) for e in entered) and time.monotonic() < deadline:
        time.sleep(0.0005)
    # Set before a block started, a flag would prove nothing.
    assert all(native._test_flag_is_set(e) for e in entered), "a waiter never entered its block"
    for f in reversed(flags):
        native._test_set_flag(f)
    for t in threads:
        t.join(10)
    assert results == [True] * 8


def test_empty_block_releases_on_every_python_thread(native):
    assert native._test_block_released() is True
    seen = []
    t = threading.Thread(target=lambda: seen.append(native._test_block_released()))
    t.start()
    t.join(10)
    assert seen == [True]


def test_timeout_is_honoured(native):
    flag = native._test_new_flag()
    start = time.monotonic()
    assert native._test_wait_for_flag(flag, 0.2) is False
    # Not before its time; the upper bound only catches a unit mistake (200 s),
    # however loaded the machine.
    assert 0.15 < time.monotonic() - start < 30


def test_nuwa_found_python(native):
    info = native._test_nuwa_info()
    assert info.startswith("CPython 3.")
    assert "held check" in info
    assert "without releasing" not in info
