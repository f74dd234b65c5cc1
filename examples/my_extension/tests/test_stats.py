"""nuwa's release statistics, read from Python (`nogil_stats()`): each call
site's blocks are counted, by call site, and the short ones (released for
less than 10 us) are told apart. The figures are counts; no time is
asserted except that a released block took some."""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings

import pytest

import my_extension as m
from conftest import NATIVE


def by_line(stats):
    return {(s["file"].rsplit("/", 1)[-1], s["line"]): s for s in stats if s["blocks"]}


def test_good_pattern_is_one_block_and_bad_pattern_one_per_element():
    data = [float(i) for i in range(2000)]
    m.reset_nogil_stats()
    assert m.good_pattern(data) == pytest.approx(m.bad_pattern(data))
    active = by_line(m.nogil_stats())
    # Two sites ran: one block for good_pattern, 2000 for bad_pattern.
    counts = sorted(s["blocks"] for s in active.values())
    assert counts == [1, 2000], active
    bad = next(s for s in active.values() if s["blocks"] == 2000)
    good = next(s for s in active.values() if s["blocks"] == 1)
    # Each of bad_pattern's blocks does one multiply-add, far under the 10 us
    # threshold; but `short` is a time, and a block this thread spent
    # descheduled (or under valgrind) can pass it: only its bounds are
    # checked here. nuwa-ffi's unit tests check the threshold itself.
    assert 0 <= bad["short"] <= 2000 and good["short"] in (0, 1)
    assert bad["not_released"] == 0
    assert good["not_released"] == 0
    assert good["released_s"] > 0
    assert bad["max_released_s"] <= bad["released_s"]
    assert all(s["file"].endswith("functions.rs") for s in active.values())


def test_a_block_that_keeps_the_gil_counts_as_not_released():
    m.reset_nogil_stats()
    m.good_pattern([1.0, 2.0], release=False)
    (site,) = by_line(m.nogil_stats()).values()
    assert (site["blocks"], site["not_released"], site["released_s"]) == (1, 1, 0.0)


def test_threads_add_up():
    m.reset_nogil_stats()
    threads = [threading.Thread(target=m.bad_pattern, args=([1.0] * 500,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    (site,) = by_line(m.nogil_stats()).values()
    assert site["blocks"] == 2000
    assert site["not_released"] == 0


def test_reset_sets_every_counter_to_zero():
    m.good_pattern([1.0])
    m.reset_nogil_stats()
    assert all(s["blocks"] == 0 and s["released_s"] == 0.0 for s in m.nogil_stats())


def test_no_arguments_accepted():
    with pytest.raises(TypeError):
        m.nogil_stats(1)
    with pytest.raises(TypeError):
        m.reset_nogil_stats(x=1)


def test_a_block_that_takes_the_gil_back_counts_once():
    """compute_pi's block calls `progress` back (with_gil!) 100 times, each
    call ending one released stretch: the statistics count one block (its
    released stretches, each a GIL round trip, are what `short` counts). A
    block that kept the GIL counts once, as not released."""
    calls = []
    m.reset_nogil_stats()
    m.compute_pi(1_000_000, progress=calls.append)
    (site,) = by_line(m.nogil_stats()).values()
    assert len(calls) == 100
    assert (site["blocks"], site["not_released"]) == (1, 0), site
    assert 0 < site["max_released_s"] <= site["released_s"], site
    m.reset_nogil_stats()
    m.compute_pi(100, release=False, progress=calls.append)
    (site,) = by_line(m.nogil_stats()).values()
    assert (site["blocks"], site["not_released"]) == (1, 1), site


def _wait_bounded(pid, seconds):
    """The exit status of child `pid`, or None after killing it when it has
    not ended within `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.01)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("point", [0, 1, 2], ids=["lookup", "claimed", "linked"])
def test_a_child_forked_while_a_thread_is_in_the_site_registry_runs_and_counts(point):
    """A thread of the parent is stopped inside nuwa's registry of call sites
    (through its test hook: while a strict-form call site is looked up, or
    while a site is being put on the list of sites) when the main thread
    forks. The child runs a strict-form block at that same call site: it
    must end (a lock held by the stopped thread would hang it for good) and
    see the block counted (a site left half-registered would hide it)."""
    NATIVE._test_stats_pause(point)
    try:
        r, w = os.pipe()
        with warnings.catch_warnings():
            # 3.12+: "This process is multi-threaded, use of fork() may lead
            # to deadlocks in the child": which is what this test is about.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:
            code = 3
            try:
                os.close(r)
                m.reset_nogil_stats()
                line = NATIVE._test_stats_probe(point)
                found = [s for s in m.nogil_stats() if s["line"] == line and s["file"].endswith("stats.rs")]
                os.write(w, repr((line, found)).encode())
                ok = len(found) == 1 and (found[0]["blocks"], found[0]["not_released"]) == (1, 0)
                code = 0 if ok else 1
            finally:
                os._exit(code)
        os.close(w)
        status = _wait_bounded(pid, 30)
        with os.fdopen(r, "rb") as pipe:
            report = pipe.read().decode()
        assert status is not None, "the forked child hung (killed after 30 s)"
        assert os.waitstatus_to_exitcode(status) == 0, f"the child saw: {report}"
    finally:
        line = NATIVE._test_stats_resume()
    # The stopped thread went on and its block counted, in the parent.
    (site,) = [s for s in m.nogil_stats() if s["line"] == line and s["file"].endswith("stats.rs")]
    assert site["not_released"] >= 1, site
