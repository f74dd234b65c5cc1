"""One build for every CPython from 3.9: the module is a stable-ABI (abi3)
build, and it declares the module slots that the running CPython knows,
decided when it is imported (3.9 to 3.11 refuse a slot they do not know)."""

from __future__ import annotations

import importlib.machinery
import os
import sys
import sysconfig

import pytest

from conftest import NATIVE

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


@pytest.mark.skipif(FREE_THREADED, reason="free-threaded builds have no abi3 (pyo3 builds a version-specific module)")
def test_the_module_is_the_abi3_build():
    name = os.path.basename(NATIVE.__file__)
    assert name.endswith(".abi3.so"), f"{name} is a version-specific build, not abi3"
    # And the running interpreter loads abi3 modules at all.
    assert ".abi3.so" in importlib.machinery.EXTENSION_SUFFIXES


def expected_slots(version: tuple[int, int]) -> list[str]:
    slots = ["exec"]
    if version >= (3, 12):
        slots.append("multiple_interpreters")
    if version >= (3, 13):
        slots.append("gil")
    return slots


def test_slots_match_the_running_version():
    """Without the 3.12 slot, CPython would refuse to load the module into an
    interpreter with its own GIL (test_subinterpreters.py does that load);
    without the 3.13 one, a free-threaded build would turn the GIL on."""
    assert NATIVE._test_module_slots() == expected_slots(sys.version_info[:2])
