"""Fixtures of the libnuwa_c_abi suite: the library (loaded with ctypes.PyDLL,
which keeps the GIL during a call, as an extension function does) and the
Rust host program.

The library is $NUWA_C_ABI_LIB, by default release/libnuwa_c_abi.so in
cargo's target directory (target/, or $CARGO_TARGET_DIR); the host is
$NUWA_C_ABI_HOST, by default release/nuwa-c-abi-host there. `make c-abi`
builds both.
"""

from __future__ import annotations

import pytest

import cabi


@pytest.fixture(scope="session")
def lib_path():
    path = cabi.lib_path()
    if not path.is_file():
        pytest.fail(
            f"the library under test is missing: {path} does not exist; "
            f"{cabi.BUILD_HINT}, or set NUWA_C_ABI_LIB to its path",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def host_path():
    path = cabi.host_path()
    if not path.is_file():
        pytest.fail(
            f"the host program is missing: {path} does not exist; "
            f"{cabi.BUILD_HINT}, or set NUWA_C_ABI_HOST to its path",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def lib(lib_path):
    return cabi.load(lib_path)


@pytest.fixture(autouse=True)
def every_release_taken_back(request):
    """After each test, no block is left running: releases == reacquires."""
    yield
    if "lib" in request.fixturenames:
        lib = request.getfixturevalue("lib")
        releases, reacquires = cabi.counters(lib)
        assert releases == reacquires, f"{releases} releases, {reacquires} reacquires"
