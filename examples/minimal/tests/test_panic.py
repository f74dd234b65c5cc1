"""A panic in the module is a Python exception, `minimal.PanicError` with the
panic's message, and the interpreter goes on. Without the module's `edge` (a
panic unwinding into CPython) the process would abort (exit status 134).

`adler32` has no input that makes it panic, so the panic comes from
`_test_panic(message)`, which is not public API: it panics with `message` in a
block released by `nuwa_ffi::nogil`, inside the same `edge` as `adler32`.

Not covered, and not nuwa's: Rust's default panic hook, which prints the
panic to stderr, holds a lock of Rust's std while it does; a child forked
while another thread of the parent was inside it hangs at its own first
panic (seen with `os.fork()` next to threads that panic in a loop)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import zlib

import pytest

import minimal

NATIVE = getattr(minimal, "minimal", minimal)  # maturin wraps it in a package


@pytest.mark.parametrize("message", ["bad pixel at 7", "", "NUL \0 inside, and ü, 😀, \n"],
                         ids=["plain", "empty", "NUL and non-ASCII"])
def test_a_panic_is_a_panic_error_with_its_message(message):
    with pytest.raises(minimal.PanicError) as caught:
        NATIVE._test_panic(message)
    assert caught.value.args == (message,)  # the whole message, nothing else
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert minimal.adler32(b"Wikipedia") == 0x11E60398  # the module still works


def test_panic_error_is_the_modules_runtime_error():
    assert minimal.PanicError is NATIVE.PanicError
    assert issubclass(minimal.PanicError, RuntimeError)
    assert (minimal.PanicError.__module__, minimal.PanicError.__qualname__) == ("minimal", "PanicError")
    assert "panic" in minimal.PanicError.__doc__


def test_without_panic_error_a_panic_is_a_runtime_error(monkeypatch):
    """Someone deleted or replaced the class: still an exception, with the message."""
    monkeypatch.delattr(NATIVE, "PanicError")
    with pytest.raises(RuntimeError, match="^gone$") as caught:
        NATIVE._test_panic("gone")
    assert type(caught.value) is RuntimeError
    monkeypatch.setattr(NATIVE, "PanicError", 5, raising=False)
    with pytest.raises(RuntimeError, match="^not a class$"):
        NATIVE._test_panic("not a class")


@pytest.mark.parametrize("args, error, message", [
    ((), TypeError, r"^_test_panic\(\) takes exactly 1 argument \(0 given\)$"),
    ((b"x",), TypeError, r"^_test_panic\(\) argument 1 must be str, not bytes$"),
    (("\udc80",), UnicodeEncodeError, "surrogates not allowed"),
])
def test_bad_input_to_the_panic_hook_is_an_ordinary_error(args, error, message):
    with pytest.raises(error, match=message):
        NATIVE._test_panic(*args)


def test_panics_on_many_threads_at_once():
    """Each thread gets its own panics back, with the GIL, while the others
    panic or compute."""
    count, rounds = 8, 50
    barrier = threading.Barrier(count)
    caught = [[] for _ in range(count)]
    sums = [[] for _ in range(count)]

    def work(i):
        barrier.wait(timeout=60)
        for n in range(rounds):
            try:
                NATIVE._test_panic(f"thread {i} round {n}")
            except minimal.PanicError as error:
                caught[i].append(error.args)
            sums[i].append(minimal.adler32(b"x" * (i * 1000 + n)))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert caught == [[(f"thread {i} round {n}",) for n in range(rounds)] for i in range(count)]
    assert sums == [[zlib.adler32(b"x" * (i * 1000 + n)) for n in range(rounds)] for i in range(count)]


def test_the_interpreter_goes_on_and_exits_normally():
    """In a child interpreter: a panic, then work, then a normal exit (0, not
    the 134 of an abort); the panic's location is on stderr, from Rust's hook."""
    code = ("import minimal, sys\n"
            "native = getattr(minimal, 'minimal', minimal)\n"
            "try:\n"
            "    native._test_panic('in the child')\n"
            "except minimal.PanicError as error:\n"
            "    print('caught', error)\n"
            "print(minimal.adler32(b'Wikipedia'))\n")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, RUST_BACKTRACE="0"))
    assert (child.returncode, child.stdout) == (0, "caught in the child\n300286872\n"), child.stderr
    assert "panicked at" in child.stderr and "src/lib.rs" in child.stderr, child.stderr
    assert "in the child" in child.stderr
