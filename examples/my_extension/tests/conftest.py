"""Shared helpers for the my_extension tests.

maturin installs the extension as ``my_extension/my_extension.*.so`` inside
a package whose ``__init__`` star-imports the public names (those in
``__all__``). The ``_test_`` hooks, which are not public API, stay on the
extension module itself: ``NATIVE`` is that module, whatever the layout.
"""

from __future__ import annotations

import importlib.util
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


#: CPython 3.12+ with a module that makes subinterpreters with their own GIL.
HAVE_SUBINTERPRETERS = sys.version_info >= (3, 12) and any(
    importlib.util.find_spec(name) is not None for name in ("_interpreters", "_xxsubinterpreters")
)

#: The start of a ``run_python`` script that uses subinterpreters:
#: ``interpreters`` (3.13's ``_interpreters`` or 3.12's
#: ``_xxsubinterpreters``), ``create()`` (a subinterpreter with its own GIL)
#: and ``run(interp, code)`` (raises ``RuntimeError`` if ``code`` raised).
SUBINTERPRETER_HELPERS = r"""
try:
    import _interpreters as interpreters  # 3.13
except ImportError:
    import _xxsubinterpreters as interpreters  # 3.12

def create():
    if interpreters.__name__ == "_interpreters":
        interp = interpreters.create("isolated")
        assert interpreters.get_config(interp).gil == "own"
        return interp
    return interpreters.create(isolated=True)  # 3.12: isolated means its own GIL

def run(interp, code):
    if hasattr(interpreters, "exec"):
        error = interpreters.exec(interp, code)
        if error is not None:
            raise RuntimeError(error)
    else:
        interpreters.run_string(interp, code)
"""
