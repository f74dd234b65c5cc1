"""Panics in released parts: PyO3's PanicException, or nuwa's Panicked::catch.

After each, the GIL is held again (the next Python bytecode would crash
otherwise), and the module and other threads keep working.
"""

from __future__ import annotations

import threading

import pytest

pytestmark = pytest.mark.timeout(120)


def still_working(native):
    """The interpreter, the module and a released block all still work."""
    assert native.compute_pi(1000, 1) == native.compute_pi(1000, 1, release=False)
    flag, entered = native.Flag(), native.Flag()

    def setter():
        while not entered.is_set():
            pass
        flag.set()

    t = threading.Thread(target=setter, daemon=True)
    t.start()
    assert native._test_wait_for_flag(flag, 10, entered=entered) is True
    t.join(10)


@pytest.mark.parametrize("at", ["block", "callback", "in_place"])
def test_a_panic_becomes_pyo3s_panic_exception(native, at):
    with pytest.raises(native.PanicException, match="boom at " + at) as info:
        native._test_panic("boom at " + at, at=at)
    # PanicException derives from BaseException: `except Exception` lets it through.
    assert not isinstance(info.value, Exception)
    still_working(native)


@pytest.mark.parametrize("at", ["caught", "caught_callback"])
def test_panicked_catch_turns_a_panic_into_an_ordinary_exception(native, at):
    with pytest.raises(native.PanicError, match="caught: 7") as info:
        native._test_panic("caught: 7", at=at)
    assert isinstance(info.value, RuntimeError)
    still_working(native)


def test_many_panics_on_many_threads(native):
    errors = []

    def work(i):
        for j in range(50):
            at = ["block", "callback", "caught", "caught_callback", "in_place"][j % 5]
            try:
                native._test_panic(f"{i}/{j}", at=at)
            except BaseException as e:  # PanicException is a BaseException
                errors.append((type(e).__name__, str(e)))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(errors) == 400
    assert {name for name, _ in errors} == {"PanicException", "PanicError"}
    still_working(native)


def test_unknown_place_is_a_value_error(native):
    with pytest.raises(ValueError, match="at must be"):
        native._test_panic("x", at="nowhere")
