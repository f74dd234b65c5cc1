"""Shared helpers for the my_extension tests.

maturin installs the extension as ``my_extension/my_extension.*.so`` inside
a package whose ``__init__`` star-imports the public names (those in
``__all__``). The ``_test_`` hooks, which are not public API, stay on the
extension module itself: ``NATIVE`` is that module, whatever the layout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import my_extension

NATIVE = getattr(my_extension, "my_extension", my_extension)


@pytest.fixture
def native():
    """The extension module object, with the ``_test_`` hooks."""
    return NATIVE


def gil_enabled() -> bool:
    """False only on a free-threaded build running without the GIL."""
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else check()


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter (this one's executable, so the
    extension is importable) and returns the finished process."""
    env = dict(os.environ)
    env.pop("RUST_BACKTRACE", None)
    # A rerun of a subprocess test must not find half-written bytecode.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
