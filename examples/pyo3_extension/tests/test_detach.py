"""PyO3 code inside a part released through the Detach adapter.

Each of these would crash the interpreter inside an in-place nuwa_ffi::nogil!
(see test_in_place.py); through PyO3's own detach they work.
"""

from __future__ import annotations

import gc
import threading
import weakref

import pytest

pytestmark = pytest.mark.timeout(120)


def test_python_attach_inside_the_released_part(native):
    value, held_before, held_inside = native._test_attach_in_released("sum(range(10))")
    assert value == 45
    assert held_before is False  # the part really runs without the GIL ...
    assert held_inside is True  # ... and Python::attach really takes it


def test_attach_errors_come_back_as_python_exceptions(native):
    with pytest.raises(ZeroDivisionError):
        native._test_attach_in_released("1 / 0")
    with pytest.raises(ValueError, match="NUL"):
        native._test_attach_in_released("1\0")


class Payload:
    """An object whose finalizer runs Python code (it needs the GIL) and
    sets a Flag."""

    deleted: list[int] = []

    def __init__(self, flag):
        self.flag = flag

    def __del__(self):
        Payload.deleted.append(threading.get_ident())
        self.flag.set()


def test_dropping_the_last_py_in_the_released_part(native):
    Payload.deleted.clear()
    finalized = native.Flag()
    holder = [Payload(finalized)]
    ref = weakref.ref(holder[0])
    # The extension pops the object (holding the last reference) and drops
    # its Py<PyAny> inside the released part ...
    held, finalized_at_drop = native._test_drop_in_released(holder, finalized)
    assert holder == []
    assert held is False
    # ... where PyO3 only queued the decref (it knows the thread is detached),
    assert finalized_at_drop is False
    # and applied it when detach attached again, before returning: the object
    # is gone, its finalizer ran on this thread.
    assert finalized.is_set()
    assert ref() is None
    assert Payload.deleted == [threading.get_ident()]


def test_dropping_many_from_many_threads(native):
    Payload.deleted.clear()
    refs = []
    errors = []

    def work():
        try:
            for _ in range(200):
                finalized = native.Flag()
                holder = [Payload(finalized)]
                refs.append(weakref.ref(holder[0]))
                # Released: the GIL is not held. Whether the object is
                # finalized yet is not asserted here: another thread's
                # attach may apply PyO3's queued decrefs at any moment.
                held, _ = native._test_drop_in_released(holder, finalized)
                assert held is False
        except BaseException as e:  # reported below, not lost in the thread
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    gc.collect()
    assert len(refs) == 800
    # Any decref still queued is applied by the next attach; this call does one.
    native._test_attach_in_released("0")
    assert all(r() is None for r in refs)
    assert len(Payload.deleted) == 800


def test_drop_bad_input(native):
    with pytest.raises(IndexError):
        native._test_drop_in_released([], native.Flag())
    with pytest.raises(TypeError):
        native._test_drop_in_released((1, 2), native.Flag())
    with pytest.raises(TypeError):
        native._test_drop_in_released([1], None)


def test_progress_callback_runs_python_with_the_gil(native):
    seen = []
    caller = threading.get_ident()

    def progress(done, partial):
        # Python code: allocating, calling, reading the thread.
        seen.append((done, partial, threading.get_ident() == caller))

    total = native.sum_of_squares([1.0, 2.0, 3.0, 4.0, 5.0], progress, every=2)
    assert total == 55.0
    assert seen == [(2, 5.0, True), (4, 30.0, True), (5, 55.0, True)]


def test_an_exception_in_the_callback_stops_the_sum(native):
    calls = []

    class Stop(Exception):
        pass

    def progress(done, partial):
        calls.append(done)
        if done == 20:
            raise Stop("enough")

    with pytest.raises(Stop, match="enough"):
        native.sum_of_squares([1.0] * 100, progress, every=10)
    assert calls == [10, 20]


def test_callbacks_from_many_threads(native):
    results = {}

    def work(i):
        count = [0]

        def progress(done, partial):
            count[0] += 1

        data = [float(i)] * 1000
        results[i] = (native.sum_of_squares(data, progress, every=10), count[0])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {i: (1000.0 * i * i, 100) for i in range(8)}


def test_nested_detach_and_attach(native):
    # Each level releases through the adapter, then attaches again with
    # Python::attach or with Released::with_gil, alternately.
    assert native._test_nested(0, "6 * 7") == 42
    assert native._test_nested(12, "6 * 7") == 42
    with pytest.raises(ZeroDivisionError):
        native._test_nested(5, "1 / 0")
    with pytest.raises(ValueError, match="depth must be <= 64"):
        native._test_nested(65, "0")


def test_rust_threads_attach_inside_the_released_part(native):
    values = native._test_attach_from_rust_threads(8, "__import__('threading').get_ident()")
    assert len(values) == 8
    assert threading.get_ident() not in values  # each ran on a thread of its own
    with pytest.raises(NameError):
        native._test_attach_from_rust_threads(2, "undefined_name")
    with pytest.raises(ValueError, match="threads must be <= 64"):
        native._test_attach_from_rust_threads(65, "0")


def test_the_adapter_refuses_a_part_without_the_gil(native):
    # Released::with_gil called inside an in-place nogil! nested in
    # Python::attach: PyO3 counts the thread as attached, the GIL is not held.
    # The adapter's held check must keep the part from running.
    assert threading.active_count() == 1  # no other thread could queue a decref meanwhile
    assert native._test_with_gil_in_place() == (False, False)


def test_a_panic_raised_in_a_python_callback(native):
    # The callback raises PyO3's PanicException; PyO3 turns it back into a
    # Rust panic when the library's callback returns, which unwinds through
    # the adapter's with_gil and detach, and reaches Python again.
    def progress(done, partial):
        native._test_panic("from the callback")

    with pytest.raises(native.PanicException, match="from the callback"):
        native.sum_of_squares([1.0] * 10, progress, every=5)
    assert native.sum_of_squares([2.0], progress=None) == 4.0


def test_results_and_the_held_control_agree(native):
    a = native.compute_pi(200_000, 3)
    assert a == native.compute_pi(200_000, 3, release=False)
    assert abs(a - 3.14159) < 0.02
    assert native.compute_pi(200_000, 4) != a
    data = [0.5 * i for i in range(1000)]
    assert native.sum_of_squares(data) == native.sum_of_squares(data, release=False)
    assert native.sum_of_squares([]) == 0.0


def test_bad_input_raises(native):
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        native.compute_pi(0)
    with pytest.raises(OverflowError):
        native.compute_pi(-1)
    with pytest.raises(TypeError):
        native.compute_pi(1.5)
    with pytest.raises(ValueError, match="every must be >= 1"):
        native.sum_of_squares([1.0], print, every=0)
    with pytest.raises(TypeError, match="progress must be callable or None, not int"):
        native.sum_of_squares([1.0], 5)
    with pytest.raises(TypeError):
        native.sum_of_squares("abc")
    with pytest.raises(TypeError):
        native.sum_of_squares([1.0, "x"])


def test_the_adapter_inside_a_part_of_nuwas_block(native):
    """nuwa's block releases, its part takes the GIL back, and the adapter's
    block releases again inside that part: the adapter's part holds the GIL,
    its block does not."""
    assert native._test_detach_in_nuwa_part("1 + 1") == (2, False, True)


def test_nuwas_block_inside_a_part_of_the_adapter(native):
    """The other way round: nuwa's block releases inside the adapter's part,
    and nuwa's part holds the GIL for PyO3 code."""
    assert native._test_nuwa_in_detach_part("2 + 2") == (4, False, True)
