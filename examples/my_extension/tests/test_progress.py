"""compute_pi(..., progress=callback): a Python callable called back with the
GIL held from inside the block (`with_gil!`), at most 100 times.

What is checked: the fractions reported and that the result does not change;
bad callables (TypeError before any work); a callback that raises stops the
computation, its exception and traceback reach the caller, and nothing
leaks; callbacks that call back into the extension (recursion), start Python
threads that call it, release the GIL themselves, or run on pool threads;
callbacks defined in subinterpreters with their own GIL (3.12+).

"Stopped" is proved by counting the callbacks (a computation that went on
would call back up to 100 times), never by timing.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

import pytest

import my_extension
from conftest import HAVE_SUBINTERPRETERS, SUBINTERPRETER_HELPERS, run_python

pytestmark = pytest.mark.timeout(300)

# 2 * 10**8 points: 1% (one report) in about 15 ms, all of them in 1.5 s.
LONG = 2 * 10**8


class Stop(Exception):
    """Raised by the callbacks below."""


def expected_fractions(iterations: int) -> list[float]:
    """What the extension reports: after `iterations * k // n` points, for
    k = 1..n, n = min(100, iterations)."""
    n = min(100, iterations)
    return [(iterations * k // n) / iterations for k in range(1, n + 1)]


@pytest.mark.parametrize("release", [True, False])
@pytest.mark.parametrize("iterations", [1, 7, 99, 100, 101, 12_345, 1_000_003])
def test_progress_reports_the_fraction_done_at_most_100_times(iterations, release):
    calls = []
    pi = my_extension.compute_pi(iterations, 5, release=release, progress=calls.append)
    assert calls == expected_fractions(iterations)
    assert len(calls) == min(100, iterations) and calls[-1] == 1.0
    # Bit for bit the result without a callback: the steps do not change it.
    assert pi == my_extension.compute_pi(iterations, 5)


def test_progress_none_is_no_callback():
    assert my_extension.compute_pi(1000, 3, progress=None) == my_extension.compute_pi(1000, 3)


class CallableObject:
    def __init__(self):
        self.calls = 0

    def __call__(self, fraction):
        self.calls += 1


def test_any_callable_is_accepted():
    obj = CallableObject()
    my_extension.compute_pi(1000, progress=obj)
    assert obj.calls == 100
    seen = []
    my_extension.compute_pi(50, progress=functools.partial(seen.insert, 0))
    assert seen == sorted(seen, reverse=True) and len(seen) == 50
    my_extension.compute_pi(50, progress=float)  # a type is callable too


class NotCallable:
    pass


@pytest.mark.parametrize(
    "progress, type_name",
    [(5, "int"), ("print", "str"), ([print], "list"), (NotCallable(), "NotCallable"), (True, "bool")],
)
def test_a_non_callable_progress_is_a_type_error_before_any_work(progress, type_name):
    if isinstance(progress, NotCallable):
        progress.__call__ = print  # on the instance: still not callable
    # 2**64 - 1 points would never finish: the error comes before any work.
    with pytest.raises(TypeError) as info:
        my_extension.compute_pi(2**64 - 1, progress=progress)
    assert str(info.value) == f"compute_pi() argument 'progress' must be callable or None, not {type_name}"


def test_progress_is_keyword_only():
    with pytest.raises(TypeError, match=r"takes from 1 to 2 positional arguments but 4 were given"):
        my_extension.compute_pi(10, 1, True, print)


def stopping_callback(stop_at: int, calls: list, exception=Stop):
    def progress(fraction):
        calls.append(fraction)
        if len(calls) == stop_at:
            raise exception(f"stop at {fraction}")

    return progress


@pytest.mark.parametrize("release", [True, False])
def test_a_callback_that_raises_stops_the_computation(release):
    calls = []
    progress = stopping_callback(3, calls)
    with pytest.raises(Stop, match=r"^stop at 0\.03$") as info:
        my_extension.compute_pi(LONG, 1, release=release, progress=progress)
    # Not called again after it raised: the block stopped there.
    assert calls == expected_fractions(LONG)[:3]
    # The exception reaches the caller with its traceback: the callback's
    # own frame, at the `raise`, is the innermost entry.
    frames = traceback.extract_tb(info.value.__traceback__)
    assert frames[-1].name == "progress" and "raise exception" in frames[-1].line, frames


def test_a_callback_that_raises_keyboard_interrupt_stops_the_computation():
    calls = []
    with pytest.raises(KeyboardInterrupt):
        my_extension.compute_pi(LONG, progress=stopping_callback(1, calls, KeyboardInterrupt))
    assert len(calls) == 1


def test_a_callback_that_raises_leaks_nothing():
    """The callback, the objects it returns and the fractions passed to it
    are all released: refcounts come back (and `make test-valgrind` runs
    this under memcheck, which sees lost floats and Rust allocations)."""
    token = object()
    calls = []

    def progress(fraction):
        calls.append(fraction)
        if len(calls) % 5 == 0:
            raise Stop
        return token  # each result must be released by the extension

    callback_refs, token_refs = sys.getrefcount(progress), sys.getrefcount(token)
    for _ in range(20):
        try:
            my_extension.compute_pi(LONG, progress=progress)
        except Stop:
            pass
    assert len(calls) == 100  # 20 calls, each stopped at its 5th report
    del calls[:]
    assert sys.getrefcount(progress) == callback_refs
    assert sys.getrefcount(token) == token_refs


@pytest.mark.skipif(not hasattr(sys, "gettotalrefcount"), reason="needs a debug build of CPython")
def test_no_reference_leaks_on_a_debug_build():
    def progress(fraction):
        if fraction > 0.02:
            raise Stop

    def calls():
        for _ in range(200):
            try:
                my_extension.compute_pi(10_000, progress=progress)
            except Stop:
                pass
            my_extension.compute_pi(1_000, progress=lambda f: [f])

    calls()  # warm up caches
    before = sys.gettotalrefcount()
    calls()
    # One leaked reference per call would be 400 or more.
    assert sys.gettotalrefcount() - before < 100


def test_a_callback_that_calls_back_into_the_extension():
    """Recursion: the callback calls compute_pi with a callback of its own,
    three levels deep, with the GIL released and taken back at each."""
    results = {}

    def run(depth: int, release: bool) -> float:
        calls = []

        def progress(fraction):
            calls.append(fraction)
            if depth > 0 and len(calls) in (1, 50):
                results.setdefault(depth - 1, []).append(run(depth - 1, not release))

        pi = my_extension.compute_pi(10_000, depth, release=release, progress=progress)
        assert calls == expected_fractions(10_000)
        return pi

    top = run(3, True)
    assert top == my_extension.compute_pi(10_000, 3)
    assert results[2] == [my_extension.compute_pi(10_000, 2)] * 2
    assert len(results[1]) == 4 and len(results[0]) == 8


def test_a_callback_that_starts_a_thread_which_calls_the_extension():
    threads, results, inner_calls = [], [], []

    def work():
        results.append(my_extension.compute_pi(100_000, 9, progress=inner_calls.append))

    def progress(fraction):
        if len(threads) < 2:
            t = threading.Thread(target=work)
            t.start()
            threads.append(t)
            if len(threads) == 1:
                # Joined inside the callback: join releases the GIL, and the
                # thread runs its own block and callbacks meanwhile.
                t.join(60)
                assert not t.is_alive()

    pi = my_extension.compute_pi(1_000_000, 8, progress=progress)
    for t in threads:  # the second one ran beside the rest of the block
        t.join(60)
        assert not t.is_alive()
    assert pi == my_extension.compute_pi(1_000_000, 8)
    assert results == [my_extension.compute_pi(100_000, 9)] * 2
    assert len(inner_calls) == 200


def test_a_callback_that_releases_the_gil_itself():
    calls = []

    def progress(fraction):
        time.sleep(0.0001)  # releases and takes back the GIL
        my_extension.process_image(b"abc")  # another nuwa block, nested in the part
        calls.append(fraction)

    assert my_extension.compute_pi(100_000, 4, progress=progress) == my_extension.compute_pi(100_000, 4)
    assert len(calls) == 100


def test_callbacks_on_pool_threads():
    def call(seed):
        seen = []

        def progress(fraction):
            seen.append((fraction, threading.get_ident()))

        pi = my_extension.compute_pi(200_000, seed, progress=progress)
        return pi, seen, threading.get_ident()

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(call, range(32), timeout=240))
    for seed, (pi, seen, worker) in enumerate(outcomes):
        assert pi == my_extension.compute_pi(200_000, seed)
        assert [f for f, _ in seen] == expected_fractions(200_000)
        # Called back on the thread that called compute_pi.
        assert {t for _, t in seen} == {worker}


def test_stopping_pool_threads_through_their_callbacks():
    """What the demo does on Ctrl-C: worker threads get no signal, so a flag
    that their callbacks read stops them. Worker 0 sets the flag at its
    second report; whatever the scheduling, no other worker can end first:
    one that gets halfway waits there for the flag (bounded: TimeoutError,
    and the test fails)."""
    stop = threading.Event()
    counts = {}

    def call(seed):
        calls = counts.setdefault(seed, [])

        def progress(fraction):
            calls.append(fraction)
            if stop.is_set():
                raise Stop
            if seed == 0 and len(calls) == 2:
                stop.set()
            if fraction >= 0.5 and not stop.wait(60):
                raise TimeoutError("the flag was never set")

        return my_extension.compute_pi(LONG, seed, progress=progress)

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(call, seed) for seed in range(4)]
        for f in futures:
            with pytest.raises(Stop):
                f.result(timeout=240)
    assert all(1 <= len(c) < 100 for c in counts.values()), counts


SUBINTERPRETERS = SUBINTERPRETER_HELPERS + r"""
import os, sys, tempfile, threading
import my_extension

CODE = '''
import sys, traceback
sys.path[:] = {path!r}
import my_extension

class Stop(Exception):  # defined in this interpreter
    pass

class Progress:  # so is the callback
    def __init__(self, stop_at=None):
        self.calls, self.stop_at = [], stop_at
    def __call__(self, fraction):
        self.calls.append(fraction)
        if len(self.calls) == self.stop_at:
            raise Stop(len(self.calls))

progress = Progress()
pi = my_extension.compute_pi(200_000, {seed}, progress=progress)
raising = Progress(stop_at=2)
try:
    my_extension.compute_pi(10**9, progress=raising)
    stopped = "not raised"
except Stop as e:
    stopped = (type(e).__module__, e.args, traceback.extract_tb(e.__traceback__)[-1].name)
with open({out!r}, "w") as f:
    f.write(repr((repr(pi), len(progress.calls), progress.calls[-1], len(raising.calls), stopped)))
'''

out_dir = tempfile.mkdtemp()
errors = []

def worker(i):
    try:
        interp = create()
        try:
            run(interp, CODE.format(path=sys.path, seed=i, out=os.path.join(out_dir, str(i))))
        finally:
            interpreters.destroy(interp)
    except BaseException as e:
        errors.append(repr(e))

COUNT = 4
threads = [threading.Thread(target=worker, args=(i,)) for i in range(COUNT)]
for t in threads:
    t.start()
for t in threads:
    t.join(120)
assert not any(t.is_alive() for t in threads), "a subinterpreter never finished"
assert not errors, errors
for i in range(COUNT):
    with open(os.path.join(out_dir, str(i))) as f:
        pi, calls, last, raising_calls, stopped = eval(f.read())
    assert float(pi) == my_extension.compute_pi(200_000, i), (i, pi)
    assert (calls, last) == (100, 1.0), (i, calls, last)
    assert raising_calls == 2 and stopped == ("__main__", (2,), "__call__"), (i, raising_calls, stopped)
print("subinterpreter callbacks ok", flush=True)
"""


@pytest.mark.skipif(not HAVE_SUBINTERPRETERS, reason="needs CPython 3.12+ with _xxsubinterpreters or _interpreters")
def test_callbacks_defined_in_subinterpreters_with_their_own_gil():
    """Four isolated interpreters, each with its own GIL, run compute_pi at
    once with a callback (and an exception type) defined there: the block
    takes back the thread state it saved, that interpreter's."""
    result = run_python(SUBINTERPRETERS, timeout=240)
    assert result.returncode == 0, result.stderr
    assert "subinterpreter callbacks ok" in result.stdout
    assert "Fatal Python error" not in result.stderr
