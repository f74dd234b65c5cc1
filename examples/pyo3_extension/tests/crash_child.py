"""Runs the crashing patterns of ``_test_crash`` in child processes.

Each pattern is PyO3 code inside an in-place ``nuwa_ffi::nogil!`` block in a
``#[pyfunction]`` (the last one: inside nuwa's strict form with the CPython
backend): safe Rust that compiles without a warning, and that the README
says crashes the interpreter. ``run_pattern`` runs one in a fresh
interpreter (bounded by a timeout, core dumps off) and says how it ended.

Run as a script, it prints one Markdown table row for this interpreter
(the README's per-version table is made of such rows)::

    python examples/pyo3_extension/tests/crash_child.py
"""

from __future__ import annotations

import os
import platform
import re
import signal
import subprocess
import sys
import sysconfig
from dataclasses import dataclass

PATTERNS = ["attach_eval", "drop_py", "detach", "list_append", "strict_cpython_attach"]
ENTERED = "nuwa-crash-test: in the block"
SURVIVED = "nuwa-crash-test: survived"
TIMEOUT = 60  # seconds; a pattern that hangs instead of crashing fails the test

CHILD = """
import pyo3_extension
native = getattr(pyo3_extension, "pyo3_extension", pyo3_extension)
native._test_crash({pattern!r})
"""


@dataclass
class Outcome:
    pattern: str
    returncode: int | None  # None: timed out
    stderr: str

    @property
    def entered(self) -> bool:
        return ENTERED in self.stderr

    @property
    def survived(self) -> bool:
        return SURVIVED in self.stderr

    @property
    def signal(self) -> str | None:
        if self.returncode is None or self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return f"signal {-self.returncode}"

    @property
    def fatal_error(self) -> str | None:
        """CPython's own "Fatal Python error: ..." line, if it printed one."""
        m = re.search(r"Fatal Python error: ([^\n]*)", self.stderr)
        return m.group(1).strip() if m else None

    def describe(self) -> str:
        if self.returncode is None:
            return f"hung (killed after {TIMEOUT} s)"
        if self.signal is None:
            return f"exit status {self.returncode}" + (" (block survived)" if self.survived else "")
        kind = {"SIGSEGV": "SIGSEGV", "SIGABRT": "abort (SIGABRT)"}.get(self.signal, self.signal)
        fatal = self.fatal_error
        if fatal:
            # "PyThreadState_Get: the function must be called with the GIL held, but ..."
            fatal = fatal.split(",")[0]
            return f'{kind}: "{fatal}"'
        return kind


def _no_core_dumps() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_pattern(pattern: str, python: str = sys.executable) -> Outcome:
    env = dict(os.environ)
    for name in ("RUST_BACKTRACE", "PYTHONFAULTHANDLER", "PYTHONDEVMODE"):
        env.pop(name, None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    try:
        done = subprocess.run(
            [python, "-c", CHILD.format(pattern=pattern)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=env,
            preexec_fn=_no_core_dumps,
        )
    except subprocess.TimeoutExpired as e:
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        return Outcome(pattern, None, err)
    return Outcome(pattern, done.returncode, done.stderr)


def interpreter_label() -> str:
    build = ""
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        build = " (free-threaded)"
    elif hasattr(sys, "gettotalrefcount"):
        build = " (debug)"
    return platform.python_version() + build


def main() -> None:
    cells = [run_pattern(p).describe() for p in PATTERNS]
    print(f"| {interpreter_label()} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
