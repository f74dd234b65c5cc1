"""A panic inside a block becomes PanicError, with the GIL held again."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import my_extension
from my_extension import PanicError

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("in_place", [False, True], ids=["strict-caught", "nogil-in-place"])
def test_panic_raises_panic_error_and_the_module_keeps_working(native, in_place):
    expected = my_extension.compute_pi(200, 3)
    for i in range(5):
        with pytest.raises(PanicError) as info:
            native._test_panic(f"bad pixel {i}", in_place=in_place)
        assert str(info.value) == f"bad pixel {i}"
        assert isinstance(info.value, RuntimeError)
        # The GIL is held again: Python runs, and the next block releases it.
        assert native._test_block_released() is True
        assert my_extension.compute_pi(200, 3) == expected


def test_message_survives_unicode_and_nul(native):
    message = "pixel (3, 4): ünïcödé \x00 and more"
    with pytest.raises(PanicError) as info:
        native._test_panic(message)
    assert str(info.value) == message


def test_other_threads_keep_working_after_panics(native):
    barrier_passed = []

    def worker(i):
        for j in range(10):
            with pytest.raises(PanicError):
                native._test_panic(f"thread {i} panic {j}", in_place=bool(j % 2))
        barrier_passed.append(i)
        return my_extension.expensive_computation(1000 + i)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(worker, range(8), timeout=60))
    assert results == [my_extension.expensive_computation(1000 + i) for i in range(8)]
    assert sorted(barrier_passed) == list(range(8))

    # And the GIL is really released by later blocks on this thread.
    flag, entered = native._test_new_flag(), native._test_new_flag()

    def setter():
        deadline = time.monotonic() + 10
        while not native._test_flag_is_set(entered):
            if time.monotonic() > deadline:
                return  # the flag stays unset: the wait below fails
            time.sleep(0.0005)
        native._test_set_flag(flag)

    t = threading.Thread(target=setter, daemon=True)
    t.start()
    assert native._test_wait_for_flag(flag, 10, entered=entered) is True
    t.join(10)


def test_panic_error_is_catchable_as_runtime_error(native):
    with pytest.raises(RuntimeError, match="^boom$"):
        native._test_panic("boom")
