"""Each function, called once from a Python thread (which holds the GIL, as
ctypes.PyDLL keeps it): the result is right, and the GIL was released and
taken back exactly as many times as the header says."""

from __future__ import annotations

import ctypes
import random
import re
import sys

import pytest

import cabi
from cabi import ERR_ARG, ERR_NULL, ERR_OVERFLOW, ERR_PANIC, OK


def released_by(lib, call):
    """Runs call(); returns its result and the (releases, reacquires) it made."""
    before = cabi.counters(lib)
    result = call()
    after = cabi.counters(lib)
    return result, (after[0] - before[0], after[1] - before[1])


def test_python_is_found(lib):
    assert lib.nuwa_python_found() == 1
    assert lib.nuwa_can_release() == 1


def test_describe_names_this_interpreter(lib):
    text = cabi.describe(lib)
    major, minor = sys.version_info[:2]
    assert text.startswith(f"CPython {major}.{minor} found: held check "), text
    if sys.version_info >= (3, 12):
        assert text.endswith("(thread-local)"), text
    else:
        assert "== PyGILState_GetThisThreadState" in text, text


def test_describe_truncates_like_snprintf(lib):
    text = cabi.describe(lib)
    buf = ctypes.create_string_buffer(b"\xff" * 10, 10)
    assert lib.nuwa_describe(buf, 10) == len(text)
    assert buf.raw == text.encode()[:9] + b"\0"
    assert lib.nuwa_describe(None, 0) == len(text)


@pytest.mark.parametrize("length", [0, 1, 2, 7, 1000])
def test_sum_of_squares(lib, length):
    rng = random.Random(length)
    data = [rng.uniform(-1e3, 1e3) for _ in range(length)]
    array = (ctypes.c_double * max(length, 1))(*data)
    out = ctypes.c_double(float("nan"))
    status, released = released_by(
        lib, lambda: lib.nuwa_sum_of_squares(array, length, ctypes.byref(out))
    )
    assert status == OK
    assert out.value == cabi.sum_of_squares(data)  # exactly: same order
    assert released == (1, 1)


def test_null_pointers_are_errors(lib):
    out = ctypes.c_double()
    assert lib.nuwa_sum_of_squares(None, 3, ctypes.byref(out)) == ERR_NULL
    assert lib.nuwa_sum_of_squares(None, 0, None) == ERR_NULL
    assert lib.nuwa_spin_sum(5, None) == ERR_NULL
    assert lib.nuwa_wait_for_flag(None, 1) == ERR_NULL
    assert lib.nuwa_set_flag(None) == ERR_NULL


def call_u64(function, *args):
    out = cabi.u64(cabi.MASK64)
    status = function(*args, ctypes.byref(out))
    return status, out.value


@pytest.mark.parametrize("n", [0, 1, 2, 3, 1000, 654_321])
def test_long_block(lib, n):
    result, released = released_by(lib, lambda: call_u64(lib.nuwa_spin_sum, n))
    assert result == (OK, cabi.spin_sum(n))
    assert released == (1, 1)


def test_empty_block(lib):
    result, released = released_by(lib, lambda: call_u64(lib.nuwa_empty_block, 0xF00D))
    assert result == (OK, 0xF00D)
    assert released == (1, 1)


@pytest.mark.parametrize("n", [0, 5, 100_000])
def test_nested_blocks_release_once(lib, n):
    result, released = released_by(lib, lambda: call_u64(lib.nuwa_nested_blocks, n))
    assert result == (OK, cabi.nested_blocks(n))
    assert released == (1, 1)


@pytest.mark.parametrize("n, stop", [(10, 3), (10, 0), (10, 10), (10, 11), (0, 0), (99_999, 50_000)])
def test_early_return(lib, n, stop):
    result, released = released_by(lib, lambda: call_u64(lib.nuwa_early_return, n, stop))
    assert result == cabi.early_return(n, stop)
    assert released == (1, 1)


@pytest.mark.parametrize("base, exp", [(2, 63), (2, 64), (3, 40), (3, 41), (10, 19), (10, 20), (0, 9), (9, 0)])
def test_question_mark_exit(lib, base, exp):
    out = cabi.u64(12345)
    status, released = released_by(
        lib, lambda: lib.nuwa_checked_power(base, exp, ctypes.byref(out))
    )
    expected_status, expected_value = cabi.checked_power(base, exp)
    assert status == expected_status
    assert out.value == (12345 if expected_status == ERR_OVERFLOW else expected_value)
    assert released == (1, 1)


@pytest.mark.parametrize("site", [0, 1, 2])
def test_panic_comes_back_as_a_status_with_the_gil_held(lib, site):
    status, released = released_by(lib, lambda: lib.nuwa_panic_in_block(site, 0))
    # NUWA_ERR_PANIC (not NUWA_ERR_BREACH): the library checked that the
    # GIL is held again after the panic, as before it.
    assert status == ERR_PANIC
    assert released == (3, 3)  # a probe, the block, a probe
    # And this thread runs Python again: it holds the GIL.
    assert sum(range(10)) == 45


def test_panic_site_out_of_range(lib):
    assert released_by(lib, lambda: lib.nuwa_panic_in_block(3, 0)) == (ERR_ARG, (0, 0))


def test_blocks_in_a_rust_thread(lib):
    n = 77_777
    result, released = released_by(lib, lambda: call_u64(lib.nuwa_blocks_in_rust_thread, n, 0))
    assert result == (OK, cabi.blocks_in_rust_thread(n))
    assert released == (1, 1)  # the calling thread's block only


def test_panic_in_a_rust_thread(lib):
    result, released = released_by(lib, lambda: call_u64(lib.nuwa_blocks_in_rust_thread, 10, 1))
    assert result[0] == ERR_PANIC
    assert released == (1, 1)


def test_probes(lib):
    assert released_by(lib, lib.nuwa_probe_release) == (1, (1, 1))
    assert released_by(lib, lib.nuwa_probe_nested) == (0b01, (1, 1))
    assert released_by(lib, lambda: lib.nuwa_probe_release_after(1)) == (1, (1, 1))
    assert released_by(lib, lib.nuwa_probe_release_in_rust_thread) == (0, (0, 0))


def test_functions_without_blocks_release_nothing(lib):
    for call in (lib.nuwa_python_found, lib.nuwa_can_release, lib.nuwa_waiters, lambda: cabi.describe(lib)):
        assert released_by(lib, call)[1] == (0, 0)


def test_every_header_function_is_exported(lib):
    header = (cabi.REPO_ROOT / "examples" / "c_abi" / "nuwa_c_abi.h").read_text()
    declared = set(re.findall(r"^\w[\w\s\*]*?\b(nuwa_\w+)\(", header, re.M))
    assert declared == set(cabi.SIGNATURES), "the header and cabi.SIGNATURES differ"
    for name in declared:
        assert hasattr(lib, name), name
