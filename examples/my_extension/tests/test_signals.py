"""Ctrl-C (SIGINT) during a long block stops it: the block's signal checks
(nuwa_ffi::SignalCheck) run the Python handlers, and the block leaves with
the handler's exception (KeyboardInterrupt) set.

Each test runs in a fresh interpreter (the signal goes to that process, not
to pytest's), whose main thread runs the block while a helper thread sends
the signal once the block has started. "Stopped early" is proved by the work
counted (steps done, callbacks made) against what the full run would do,
never by timing; every wait is bounded (the helper's, and the child's
timeout). The negative control runs the same work without checks: then the
whole work is done first, and KeyboardInterrupt comes only after it.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest

from conftest import run_python

pytestmark = pytest.mark.timeout(300)

PRELUDE = r"""
import json, os, signal, sys, threading, time, traceback
import my_extension
native = getattr(my_extension, "my_extension", my_extension)

def when(condition, action, timeout=30):
    "On a helper thread: wait (bounded) until condition() is true, then action()."
    def run():
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                print("helper: the condition never came true", flush=True)
                os._exit(3)
            time.sleep(0.001)
        action()
    helper = threading.Thread(target=run, daemon=True)
    helper.start()
    return helper

# Python's own handler, even if this process was started with SIGINT ignored
# (a background job of a non-interactive shell, nohup), as Python then leaves
# it ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)

def sigint():
    signal.raise_signal(signal.SIGINT)

def report(**values):
    print("RESULT " + json.dumps(values), flush=True)
"""


def run(body: str, timeout: float = 120) -> dict:
    """Runs the prelude and `body` in a fresh interpreter; returns what it
    reported."""
    result = run_python(PRELUDE + body, timeout=timeout)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, result.stdout + result.stderr
    return json.loads(lines[0][len("RESULT ") :])


# The block's work: STEPS steps of 100 us, far more than can be done before
# the child's timeout: only a check that works stops it.
STEPS = 10**9


@pytest.mark.parametrize("form", ["in_place", "strict"])
@pytest.mark.parametrize("how", ["raise_signal", "os_kill"])
def test_sigint_stops_a_long_block_on_the_main_thread(form, how):
    send = "sigint" if how == "raise_signal" else "lambda: os.kill(os.getpid(), signal.SIGINT)"
    out = run(
        f"""
entered = native._test_new_flag()
when(lambda: native._test_flag_is_set(entered), {send})
try:
    done = native._test_work_until_interrupted({STEPS}, entered=entered, strict={form == "strict"})
    report(raised=None, done=done)
except KeyboardInterrupt as e:
    frames = [f.name for f in traceback.extract_tb(e.__traceback__)]
    report(raised="KeyboardInterrupt", done=native._test_work_done(), frames=frames)
"""
    )
    assert out["raised"] == "KeyboardInterrupt", out
    assert 1 <= out["done"] < STEPS, out
    # Raised by the extension's call, not by Python code around it.
    assert out["frames"] == ["<module>"], out


def test_without_checks_the_block_runs_to_its_end_first():
    """The negative control: the same block without checks, same signal.
    The signal arrives while the block runs, the block still runs to its own
    end, and KeyboardInterrupt comes only after the call returned.

    No timing: the block's work ends only when the helper sets the flag
    `until`, and the helper sets it only once the signal has been received
    (Python's C handler has written to the wakeup fd)."""
    out = run(
        f"""
import functools, select
wakeup_read, wakeup_write = os.pipe()
os.set_blocking(wakeup_write, False)
signal.set_wakeup_fd(wakeup_write)
entered, until = native._test_new_flag(), native._test_new_flag()
def send_then_let_the_block_end():
    # To the process: on 3.9 a signal raised on another thread is noticed by
    # the main thread's own loop only when something else wakes it.
    os.kill(os.getpid(), signal.SIGINT)
    if not select.select([wakeup_read], [], [], 30)[0]:
        print("helper: the signal was never received", flush=True)
        os._exit(3)
    native._test_set_flag(until)
when(lambda: native._test_flag_is_set(entered), send_then_let_the_block_end)
returned = []
try:
    # list.extend(map(...)) runs the call and keeps what it returned without
    # any bytecode in between, where the pending KeyboardInterrupt could be
    # raised before an assignment: `returned` is empty if the call raised.
    # With check=True (and every check due) the signal would be seen before
    # `until`: `until` is read before each step's check.
    work = functools.partial(native._test_work_until_interrupted, entered=entered, check=False,
                             interval=0.0, until=until)
    returned.extend(map(work, [{STEPS}]))
    for _ in range(3000):  # the handler runs at the next bytecodes, if not already
        time.sleep(0.01)
    report(raised=None, returned=returned)
except KeyboardInterrupt:
    report(raised="KeyboardInterrupt", returned=returned, done=native._test_work_done())
""",
    )
    assert out["raised"] == "KeyboardInterrupt", out
    # The call returned, with the steps it did: it stopped for `until` only.
    assert len(out["returned"]) == 1 and 1 <= out["returned"][0] == out["done"] < STEPS, out


def test_a_handler_that_raises_another_exception():
    """Any Python handler that raises stops the block, with its exception."""
    out = run(
        f"""
class Alarm(Exception):
    pass
def on_usr1(signum, frame):
    raise Alarm("from the handler")
signal.signal(signal.SIGUSR1, on_usr1)
entered = native._test_new_flag()
when(lambda: native._test_flag_is_set(entered), lambda: os.kill(os.getpid(), signal.SIGUSR1))
try:
    native._test_work_until_interrupted({STEPS}, entered=entered)
    report(raised=None)
except Alarm as e:
    report(raised=str(e), done=native._test_work_done())
"""
    )
    assert out["raised"] == "from the handler" and 1 <= out["done"] < STEPS, out


def test_ctrl_c_stops_compute_pi():
    """compute_pi's own checks: its progress callback is a C function
    (list.append), so no Python code runs on the main thread during the call
    and only the block's checks can run the handler. 10**9 points: the full
    run reports 100 times."""
    out = run(
        """
calls = []
when(lambda: len(calls) >= 1, sigint)
try:
    my_extension.compute_pi(10**9, progress=calls.append)
    report(raised=None, calls=len(calls))
except KeyboardInterrupt as e:
    frames = [f.name for f in traceback.extract_tb(e.__traceback__)]
    report(raised="KeyboardInterrupt", calls=len(calls), frames=frames)
"""
    )
    assert out["raised"] == "KeyboardInterrupt" and 1 <= out["calls"] < 100, out
    assert out["frames"] == ["<module>"], out


def test_ctrl_c_stops_compute_pi_holding_the_gil():
    """release=False: the block keeps the GIL (no Python thread can run, so
    the signal comes from a timer), and its checks still run the handler.

    The timer ticks every 10 ms from before the call; its handler ignores
    the ticks until the block has called back once, so the
    KeyboardInterrupt it then raises can only come from inside the block,
    whenever the ticks come (the rest of the work takes seconds, far more
    than one tick)."""
    out = run(
        """
calls, raised = [], []
def on_tick(signum, frame):
    if calls and not raised:
        raised.append(True)
        signal.setitimer(signal.ITIMER_REAL, 0)
        raise KeyboardInterrupt
signal.signal(signal.SIGALRM, on_tick)
signal.setitimer(signal.ITIMER_REAL, 0.01, 0.01)
try:
    my_extension.compute_pi(10**9, release=False, progress=calls.append)
    report(raised=None, calls=len(calls))
except KeyboardInterrupt as e:
    frames = [f.name for f in traceback.extract_tb(e.__traceback__)]
    report(raised="KeyboardInterrupt", calls=len(calls), frames=frames)
"""
    )
    assert out["raised"] == "KeyboardInterrupt" and 1 <= out["calls"] < 100, out
    # Raised by the handler called from the extension's call.
    assert out["frames"] == ["<module>", "on_tick"], out


def test_sigint_while_the_callback_runs():
    """The signal arrives while the callback (Python code, GIL held) runs:
    KeyboardInterrupt is raised inside the callback and stops the call."""
    out = run(
        """
entered = threading.Event()
calls = []
def progress(fraction):
    calls.append(fraction)
    entered.set()
    time.sleep(60)  # interrupted by the signal
# To the process, as Ctrl-C is: it interrupts the main thread's sleep (a
# signal raised on the helper thread would be seen only after the sleep).
when(entered.is_set, lambda: os.kill(os.getpid(), signal.SIGINT))
try:
    my_extension.compute_pi(10**9, progress=progress)
    report(raised=None)
except KeyboardInterrupt as e:
    frames = [f.name for f in traceback.extract_tb(e.__traceback__)]
    report(raised="KeyboardInterrupt", calls=len(calls), frames=frames)
"""
    )
    assert out == {"raised": "KeyboardInterrupt", "calls": 1, "frames": ["<module>", "progress"]}


def test_ctrl_c_in_a_pool_stops_the_workers_through_their_callbacks():
    """The main thread gets KeyboardInterrupt (worker threads get no
    signals: their checks run no handler); it sets a flag that the workers'
    callbacks read, and they stop (the demo's pattern).

    Whatever the scheduling, no worker can end before the flag is set: a
    worker that gets halfway waits there for it (bounded: TimeoutError, and
    the test fails)."""
    out = run(
        """
from concurrent.futures import ThreadPoolExecutor, wait
class Stopped(Exception):
    pass
stop = threading.Event()
counts = [[] for _ in range(4)]
def call(seed):
    def progress(fraction):
        counts[seed].append(fraction)
        if fraction >= 0.5 and not stop.wait(60):
            raise TimeoutError("Ctrl-C never stopped this worker")
        if stop.is_set():
            raise Stopped
    return my_extension.compute_pi(10**9, seed, progress=progress)
# To the process, as Ctrl-C is: the main thread gets it and leaves wait().
when(lambda: all(counts), lambda: os.kill(os.getpid(), signal.SIGINT))
pool = ThreadPoolExecutor(max_workers=4)
futures = [pool.submit(call, seed) for seed in range(4)]
try:
    wait(futures)
    interrupted = False
except KeyboardInterrupt:
    interrupted = True
    stop.set()
pool.shutdown(wait=True)
outcomes = [type(f.exception(timeout=60)).__name__ for f in futures]
report(interrupted=interrupted, outcomes=outcomes, calls=[len(c) for c in counts])
"""
    )
    assert out["interrupted"] is True, out
    assert out["outcomes"] == ["Stopped"] * 4, out
    assert all(1 <= n < 100 for n in out["calls"]), out


# Where the demo's progress section waits for the test's Ctrl-C
# (NUWA_DEMO_PAUSE, see examples/demo.py), and the last line it must print.
DEMO_POINTS = {
    "start": "Ctrl-C: 0 of 4 computations stopped by their callbacks (4 not started).",
    "submitted-1": "Ctrl-C: 1 of 4 computations stopped by their callbacks (3 not started).",
    "submitted-2": "Ctrl-C: 2 of 4 computations stopped by their callbacks (2 not started).",
    "submitted-3": "Ctrl-C: 3 of 4 computations stopped by their callbacks (1 not started).",
    "filled": "Ctrl-C: 4 of 4 computations stopped by their callbacks.",
    "printing": "Ctrl-C: 0 of 4 computations stopped by their callbacks (4 had finished).",
}


@pytest.mark.parametrize("point", list(DEMO_POINTS))
def test_the_demo_stops_its_workers_on_ctrl_c(point):
    """`examples/demo.py --only progress`, with SIGINT sent while the demo
    waits at `point` for it: before, during and after the pool is filled, and
    half-way through printing the results. The demo waits there until its
    handler has seen the signal (bounded), so the signal comes at that moment
    and no other, however loaded the machine is; at the points before the
    results, the workers' callbacks wait for it too, so no computation can
    finish first. Every time the demo exits 0 and says what was stopped."""
    demo = pathlib.Path(__file__).resolve().parents[2] / "demo.py"
    env = dict(os.environ, PYTHONUNBUFFERED="1", NUWA_DEMO_PAUSE=point)
    child = subprocess.Popen(
        [sys.executable, str(demo), "--only", "progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # SIGINT as a terminal gives it, even if this process ignores it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        seen = []
        # Ends when the demo pauses, or when it exits (then the asserts say why).
        for line in child.stdout:
            seen.append(line)
            if line == f"PAUSED {point}\n":
                child.send_signal(signal.SIGINT)
                break
        rest, errors = child.communicate(timeout=240)
    finally:
        child.kill()
    output = "".join(seen) + rest
    assert f"PAUSED {point}\n" in seen, output + errors
    assert child.returncode == 0, output + errors
    assert "Traceback" not in errors, errors
    assert "Press Ctrl-C to stop" in output
    assert output.rstrip().splitlines()[-1].strip() == DEMO_POINTS[point], output
    results = [line for line in output.splitlines() if line.startswith("  seed ")]
    assert len(results) == (4 if point == "printing" else 0), output
