"""Shared helpers for the pyo3_extension tests.

maturin installs the module as ``pyo3_extension/pyo3_extension.*.so`` inside
a package whose ``__init__`` star-imports its public names. The ``_test_``
hooks (not public API) are reached on the native module itself: ``NATIVE``.
"""

from __future__ import annotations

import sys

import pytest

import pyo3_extension

NATIVE = getattr(pyo3_extension, "pyo3_extension", pyo3_extension)


@pytest.fixture
def native():
    """The extension module object, with the ``_test_`` hooks."""
    return NATIVE


def gil_enabled() -> bool:
    """False only on a free-threaded build running without the GIL."""
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else check()
