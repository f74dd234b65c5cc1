"""Every bad input raises the right exception with a message like CPython's."""

from __future__ import annotations

import re

import pytest

import my_extension
from conftest import NATIVE

m = my_extension
FLAG = NATIVE._test_new_flag()

CASES = [
    # compute_pi: iterations
    (m.compute_pi, (0,), {}, ValueError, "iterations must be >= 1, got 0"),
    (m.compute_pi, (-1,), {}, ValueError, "iterations must be >= 1, got -1"),
    (m.compute_pi, (-(2**70),), {}, ValueError, f"iterations must be >= 1, got {-(2**70)}"),
    (m.compute_pi, (2**64,), {}, OverflowError, f"iterations must be < 2**64, got {2**64}"),
    (m.compute_pi, (1.0,), {}, TypeError, "compute_pi() argument 'iterations' must be int, not float"),
    (m.compute_pi, ("10",), {}, TypeError, "compute_pi() argument 'iterations' must be int, not str"),
    (m.compute_pi, (None,), {}, TypeError, "compute_pi() argument 'iterations' must be int, not NoneType"),
    # compute_pi: seed
    (m.compute_pi, (10, -1), {}, ValueError, "seed must be >= 0, got -1"),
    (m.compute_pi, (10,), {"seed": 2**64}, OverflowError, f"seed must be < 2**64, got {2**64}"),
    (m.compute_pi, (10, 0.5), {}, TypeError, "compute_pi() argument 'seed' must be int, not float"),
    # compute_pi: the call itself
    (m.compute_pi, (), {}, TypeError, "compute_pi() missing required argument 'iterations'"),
    (m.compute_pi, (), {"seed": 1}, TypeError, "compute_pi() missing required argument 'iterations'"),
    (m.compute_pi, (1, 2, 3), {}, TypeError, "compute_pi() takes from 1 to 2 positional arguments but 3 were given"),
    (m.compute_pi, (1,), {"x": 2}, TypeError, "compute_pi() got an unexpected keyword argument 'x'"),
    (m.compute_pi, (1,), {"iterations": 2}, TypeError, "compute_pi() got multiple values for argument 'iterations'"),
    (m.compute_pi, (1, 2), {"seed": 2}, TypeError, "compute_pi() got multiple values for argument 'seed'"),
    (m.compute_pi, (1,), {"release": 1}, TypeError, "compute_pi() argument 'release' must be bool, not int"),
    (m.compute_pi, (1,), {"release": None}, TypeError, "compute_pi() argument 'release' must be bool, not NoneType"),
    # release is keyword-only
    (m.compute_pi, (1, 2, True), {}, TypeError, "compute_pi() takes from 1 to 2 positional arguments but 3 were given"),
    # process_image
    (m.process_image, (bytearray(b"ab"),), {}, TypeError, "process_image() argument 'data' must be bytes, not bytearray"),
    (m.process_image, (memoryview(b"ab"),), {}, TypeError, "process_image() argument 'data' must be bytes, not memoryview"),
    (m.process_image, ("ab",), {}, TypeError, "process_image() argument 'data' must be bytes, not str"),
    (m.process_image, ([1, 2],), {}, TypeError, "process_image() argument 'data' must be bytes, not list"),
    (m.process_image, (), {}, TypeError, "process_image() missing required argument 'data'"),
    (m.process_image, (b"", b""), {}, TypeError, "process_image() takes 1 positional argument but 2 were given"),
    (m.process_image, (b"",), {"data": b""}, TypeError, "process_image() got multiple values for argument 'data'"),
    (m.process_image, (), {"image": b""}, TypeError, "process_image() got an unexpected keyword argument 'image'"),
    (m.process_image, (b"",), {"release": "no"}, TypeError, "process_image() argument 'release' must be bool, not str"),
    # expensive_computation
    (m.expensive_computation, (-1,), {}, ValueError, "n must be >= 0, got -1"),
    (m.expensive_computation, (10.0,), {}, TypeError, "expensive_computation() argument 'n' must be int, not float"),
    (m.expensive_computation, ("3",), {}, TypeError, "expensive_computation() argument 'n' must be int, not str"),
    (
        m.expensive_computation,
        (3_810_779,),
        {},
        OverflowError,
        "expensive_computation(3810779): the sum of i*i for i < 3810779 does not fit in 64 bits "
        "(the largest n that fits is 3810778)",
    ),
    (m.expensive_computation, (), {"m": 1}, TypeError, "expensive_computation() got an unexpected keyword argument 'm'"),
    (m.expensive_computation, (), {}, TypeError, "expensive_computation() missing required argument 'n'"),
    # good_pattern / bad_pattern
    (m.good_pattern, (5,), {}, TypeError, "good_pattern() argument 'data' must be an iterable of real numbers, not int"),
    (m.good_pattern, ([1.0, "2"],), {}, TypeError, "good_pattern() argument 'data' item 1 must be a real number, not str"),
    (m.bad_pattern, ([1.0, 2.0, None],), {}, TypeError, "bad_pattern() argument 'data' item 2 must be a real number, not NoneType"),
    (m.bad_pattern, ("abc",), {}, TypeError, "bad_pattern() argument 'data' item 0 must be a real number, not str"),
    (m.good_pattern, ([1j],), {}, TypeError, "good_pattern() argument 'data' item 0 must be a real number, not complex"),
    (m.good_pattern, ([10**400],), {}, OverflowError, "int too large to convert to float"),
    (m.bad_pattern, (), {}, TypeError, "bad_pattern() missing required argument 'data'"),
    (m.bad_pattern, ([],), {"release": 0}, TypeError, "bad_pattern() argument 'release' must be bool, not int"),
    # test hooks
    (NATIVE._test_new_flag, (1,), {}, TypeError, "_test_new_flag() takes 0 positional arguments but 1 was given"),
    (NATIVE._test_set_flag, (2**40,), {}, ValueError, f"no flag with id {2**40}"),
    (NATIVE._test_set_flag, (-1,), {}, ValueError, "flag must be >= 0, got -1"),
    (NATIVE._test_wait_for_flag, (FLAG, -1.0), {}, ValueError, "timeout must be a finite number of seconds >= 0, got -1.0"),
    (NATIVE._test_wait_for_flag, (FLAG, float("nan")), {}, ValueError, "timeout must be a finite number of seconds >= 0, got nan"),
    (NATIVE._test_wait_for_flag, (FLAG, "1"), {}, TypeError, "_test_wait_for_flag() argument 'timeout' must be a real number, not str"),
    (NATIVE._test_sleep_in_block, (float("inf"),), {}, ValueError, "seconds must be a finite number of seconds >= 0, got inf"),
    (NATIVE._test_sleep_in_block, (0,), {"entered": 2**40}, ValueError, f"no flag with id {2**40}"),
    (NATIVE._test_sleep_in_block, (0, FLAG), {}, TypeError, "_test_sleep_in_block() takes 1 positional argument but 2 were given"),
    (NATIVE._test_work_until_interrupted, (1,), {"until": 2**40}, ValueError, f"no flag with id {2**40}"),
    (NATIVE._test_work_until_interrupted, (1,), {"until": "x"}, TypeError, "_test_work_until_interrupted() argument 'until' must be int, not str"),
    (NATIVE._test_panic, (1,), {}, TypeError, "_test_panic() argument 'message' must be str, not int"),
]


@pytest.mark.parametrize(
    "function, args, kwargs, exception, message",
    CASES,
    ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)],
)
def test_bad_input(function, args, kwargs, exception, message):
    with pytest.raises(exception) as info:
        function(*args, **kwargs)
    assert type(info.value) is exception
    assert str(info.value) == message


def test_module_still_works_after_errors():
    for case in CASES:
        with pytest.raises(case[3]):
            case[0](*case[1], **case[2])
    assert m.compute_pi(100, 1) == m.compute_pi(100, 1, release=False)


def test_signatures_are_introspectable():
    import inspect

    assert str(inspect.signature(m.compute_pi)) == "(iterations, seed=0, *, release=True, progress=None)"
    assert str(inspect.signature(m.process_image)) == "(data, *, release=True)"
    assert str(inspect.signature(m.expensive_computation)) == "(n, *, release=True)"
    assert str(inspect.signature(m.good_pattern)) == "(data, *, release=True)"
    assert str(inspect.signature(m.bad_pattern)) == "(data, *, release=True)"
    for f in (m.compute_pi, m.process_image, m.expensive_computation, m.good_pattern, m.bad_pattern):
        assert f.__doc__ and "GIL" in f.__doc__


def test_public_api_and_stubs_agree():
    import ast
    import pathlib

    assert sorted(m.__all__) == [
        "PanicError",
        "bad_pattern",
        "compute_pi",
        "expensive_computation",
        "good_pattern",
        "nogil_stats",
        "process_image",
        "reset_nogil_stats",
    ]
    assert issubclass(m.PanicError, RuntimeError)
    assert m.PanicError.__module__ == "my_extension"
    stub = pathlib.Path(__file__).resolve().parent.parent / "my_extension.pyi"
    tree = ast.parse(stub.read_text())
    stubbed = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    native = {name for name in dir(NATIVE) if not name.startswith("__")}
    assert stubbed == native
