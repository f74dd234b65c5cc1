"""Misuse with a defined result: a block on a thread that does not hold the
GIL releases nothing, and racing first calls all resolve to the same answer.

The scenarios that need a fresh interpreter run in child.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import cabi

CHILD = cabi.REPO_ROOT / "examples" / "c_abi" / "tests" / "child.py"


def run_child(mode, lib_path, seed=0, timeout=60):
    proc = subprocess.run(
        [sys.executable, str(CHILD), mode, str(lib_path), str(seed)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONFAULTHANDLER="1"),
    )
    assert proc.returncode == 0, f"child {mode} exited with {proc.returncode}:\n{proc.stderr}"
    return json.loads(proc.stdout)


def test_blocks_on_a_rust_thread_release_nothing(lib):
    before = cabi.counters(lib)
    assert [lib.nuwa_probe_release_in_rust_thread() for _ in range(50)] == [0] * 50
    assert cabi.counters(lib) == before


def test_a_nested_block_releases_nothing(lib):
    before = cabi.counters(lib)
    assert [lib.nuwa_probe_nested() for _ in range(100)] == [0b01] * 100
    after = cabi.counters(lib)
    assert (after[0] - before[0], after[1] - before[1]) == (100, 100)


@pytest.mark.timeout(120)
def test_a_python_thread_without_the_gil_releases_nothing_while_another_holds_it(lib_path):
    """Through ctypes.CDLL the calling thread has released the GIL, and a
    pure-Python thread holds it. On CPython <= 3.11 the "current thread
    state" is then the other thread's: nuwa must compare it with this
    thread's own and release nothing (PyEval_SaveThread here would be a
    fatal error)."""
    result = run_child("gil_held_elsewhere", lib_path)
    assert result["holder_ran"]
    assert result["released"] == [0, 0], result
    assert result["spin_sum"] == [cabi.OK, True], result
    assert result["probes"] == {
        "probe_release_after": 0,
        "probe_release": 0,
        "probe_nested": 0,
        "probe_release_in_rust_thread": 0,
    }, result


@pytest.mark.timeout(300)
@pytest.mark.parametrize("run", range(10))
def test_racing_first_calls_agree(lib_path, run):
    """16 threads make their first call into a freshly loaded library at the
    same moment (a fresh interpreter each time, so this is the first
    resolution): they all get the same answer, and each probe releases the
    GIL exactly when its thread held it (PyDLL) and not otherwise (CDLL)."""
    outcome = run_child("first_call", lib_path, seed=run)
    results = outcome["results"]
    texts = {r["describe"] for r in results}
    assert len(texts) == 1, texts
    (text,) = texts
    major, minor = sys.version_info[:2]
    assert text.startswith(f"CPython {major}.{minor} found: held check"), text
    assert all(r["python_found"] == 1 for r in results)
    for r in results:
        if r["first"] == "describe":
            assert r["value"] == text
        else:
            assert r["value"] == (1 if r["via"] == "PyDLL" else 0), r
    probes_with_gil = sum(1 for r in results if r["first"] == "probe" and r["via"] == "PyDLL")
    assert outcome["counters"] == [probes_with_gil, probes_with_gil]
