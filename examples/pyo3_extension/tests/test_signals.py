"""Ctrl-C, thresholds and release statistics through nuwa's PyO3 adapter.

``Fnv1a.update`` is the README's worked example: library code generic over
``Nogil`` (``pyo3_extension_core::Fnv1a::update``), run through
``nuwa_ffi::Detach``, released only from 64 KiB on, with a ``SignalCheck``
after every MiB; it hashes into a copy and commits only at the end.

The signal is asked for from inside the block, deterministically: the
progress callback ``_TestInterruptMain(k)`` is Rust code that calls
``_thread.interrupt_main()`` at its k-th call, with the GIL held in a part of
the block. No Python code runs between that and the next signal check, so
only the check can run the SIGINT handler (a Python callback would run it
itself, at once).
"""

from __future__ import annotations

import signal

import pytest

MIB = 1 << 20


@pytest.fixture(autouse=True)
def python_handles_sigint():
    """Python's own SIGINT handler for each test, whatever the process began
    with: a process started with SIGINT ignored (a background job of a shell
    without job control, as a CI step may be) has none, and then
    ``_thread.interrupt_main()`` does nothing and no check finds a signal."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
DATA = bytes(range(256)) * (8 * MIB // 256)  # 8 chunks


def full_digest(native, data=DATA):
    h = native.Fnv1a()
    h.update(data)
    return h.digest()


def test_fnv1a_reference_values(native):
    h = native.Fnv1a()
    assert h.digest() == 0xCBF29CE484222325
    h.update(b"a")
    assert h.digest() == 0xAF63DC4C8601EC8C
    # In pieces across chunk borders, below and above the threshold: the same.
    pieces = native.Fnv1a()
    for i in range(0, len(DATA), 3 * MIB // 7):
        pieces.update(DATA[i : i + 3 * MIB // 7])
    assert pieces.digest() == full_digest(native)


def test_ctrl_c_stops_the_block_and_leaves_the_hash_unchanged(native):
    h = native.Fnv1a()
    h.update(b"state before")
    before = h.digest()
    interrupter = native._TestInterruptMain(3)
    with pytest.raises(KeyboardInterrupt):
        h.update(DATA, progress=interrupter, check_every=0)
    # Stopped at the check after chunk 4: no fourth progress call.
    assert interrupter.calls == 3
    assert h.digest() == before
    # The hasher and the module go on working.
    h.update(DATA)
    expected = native.Fnv1a()
    expected.update(b"state before")
    expected.update(DATA)
    assert h.digest() == expected.digest()


def test_the_exception_a_handler_raises_is_the_one_python_sees(native):
    class FromHandler(Exception):
        pass

    seen = []

    def handler(signum, frame):
        seen.append(signum)
        raise FromHandler("raised by the SIGINT handler")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        h = native.Fnv1a()
        with pytest.raises(FromHandler, match="raised by the SIGINT handler"):
            h.update(DATA, progress=native._TestInterruptMain(1), check_every=0)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert seen == [signal.SIGINT]
    assert h.digest() == native.Fnv1a().digest()


HANDLER_PANICS = """
import signal, sys
import pyo3_extension
native = getattr(pyo3_extension, "pyo3_extension", pyo3_extension)

def handler(signum, frame):
    native._test_panic("panic in the SIGINT handler")

signal.signal(signal.SIGINT, handler)
h = native.Fnv1a()
try:
    h.update(bytes(8 << 20), progress=native._TestInterruptMain(1), check_every=0)
except BaseException as e:
    print("raised:", type(e).__name__, e)
print("digest unchanged:", h.digest() == native.Fnv1a().digest())
"""


def test_a_handler_that_raises_panicexception_is_raised_not_an_abort():
    """The handler calls Rust that panics: PanicException is the exception
    set when the check returns `Interrupted`. PyO3's `PyErr::take` resumes
    a panic for it, which, taken while the `PyErr` is raised at the
    `#[pyfunction]`'s return, is outside PyO3's catch_unwind: an abort
    ("uncaught panic at ffi boundary"). It must be raised as it is. In a
    child process, so that an abort fails this test only."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("RUST_BACKTRACE", "PYTHONFAULTHANDLER")}
    done = subprocess.run(
        [sys.executable, "-c", HANDLER_PANICS], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        "raised: PanicException panic in the SIGINT handler",
        "digest unchanged: True",
    ], done.stderr[-2000:]


def test_without_a_due_check_the_signal_waits_for_the_block(native):
    """The negative control: the same signal, no check due in the block (an
    hour's interval). The hash runs to its end and is committed; the handler
    runs only after the call, in Python."""
    h = native.Fnv1a()
    with pytest.raises(KeyboardInterrupt):
        h.update(DATA, progress=native._TestInterruptMain(1), check_every=3600)
        for _ in range(1000):  # the handler runs here, at a backward jump
            pass
    assert h.digest() == full_digest(native)


def test_an_exception_from_progress_stops_and_changes_nothing(native):
    def progress(done):
        if done == 2 * MIB:
            raise ValueError("stop at 2 MiB")

    h = native.Fnv1a()
    with pytest.raises(ValueError, match="stop at 2 MiB"):
        h.update(DATA, progress=progress)
    assert h.digest() == native.Fnv1a().digest()


def test_bad_check_interval_is_a_value_error(native):
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="check_every"):
            native.Fnv1a().update(b"x", check_every=bad)


def hash_site(native):
    sites = [s for s in native.nogil_stats() if s[0].endswith("hash.rs")]
    assert len(sites) == 1, native.nogil_stats()
    _file, _line, blocks, not_released, _short = sites[0]
    return blocks, not_released


def test_statistics_count_the_blocks_and_the_threshold(native):
    """The adapter's blocks count at the library's line (the `gil.nogil`
    call in core/src/hash.rs); those under the 64 KiB threshold kept the GIL
    and count as released nothing."""
    native.reset_nogil_stats()
    h = native.Fnv1a()
    for _ in range(3):
        h.update(b"small")  # kept the GIL
    h.update(bytes(64 * 1024))  # released
    h.update(DATA)  # released
    assert hash_site(native) == (5, 3)
    native.reset_nogil_stats()
    assert hash_site(native) == (0, 0)


def test_an_interrupted_block_counts_too(native):
    native.reset_nogil_stats()
    with pytest.raises(KeyboardInterrupt):
        native.Fnv1a().update(DATA, progress=native._TestInterruptMain(2), check_every=0)
    assert hash_site(native) == (1, 0)


def test_the_adapter_inside_an_in_place_block_releases_nothing(native):
    """Careless code: the adapter inside nuwa's own in-place block, where
    PyO3 counts the thread as attached without the GIL. PyO3's `detach`
    there would crash (test_in_place.py); the adapter runs the closure as it
    is and refuses its part."""
    assert native._test_adapter_in_place() == (True, False, False)


def test_interrupted_converts_with_the_gil_released(native):
    with pytest.raises(KeyboardInterrupt):
        native._test_check_in_place()


def test_an_interrupted_converted_twice_says_so(native):
    assert native._test_interrupted_twice() == ("KeyboardInterrupt", "SystemError")


def function_text(path, start):
    """The lines of the function whose first line starts with `start` (at
    four spaces), up to its closing brace."""
    lines = path.read_text().split("\n")
    first = next(i for i, line in enumerate(lines) if line.startswith(start))
    last = next(i for i in range(first + 1, len(lines)) if lines[i] == "    }")
    return "\n".join(lines[first : last + 1])


def test_the_readme_quotes_the_worked_example():
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent
    readme = (example.parent.parent / "README.md").read_text()
    for path, start in [
        (example / "core" / "src" / "hash.rs", "    pub fn update<N, E>("),
        (example / "src" / "hash.rs", "    fn update("),
    ]:
        assert function_text(path, start) in readme, f"the README's copy of {path} is stale"


@pytest.mark.skip(
    reason="open: an Interrupted that is dropped (`let _ =`, `.is_err()` then go on) leaves "
    "the handler's exception set while the same block calls Python again; a debug "
    "interpreter aborts there (3.13d: `_PyAST_Validate: Assertion !PyErr_Occurred()`), a "
    "release one raises it from the unrelated call. Not a small fix: the exception must stay "
    "set for nuwa's C-API users (return NULL), so the adapter would have to take it at the check."
)
def test_a_dropped_interrupted_leaves_no_exception_set_for_the_next_python_call(native):
    assert native._test_ignore_interrupted() is False
