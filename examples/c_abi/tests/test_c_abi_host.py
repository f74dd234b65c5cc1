"""The same library in programs with no Python in the process: the Rust host
(examples/c_abi_host: every function works, nothing is found, nothing is
released, 8 threads racing to make the first call agree) and a C program on
the header."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

import pytest


def run_host(host_path, lib_path, env=None):
    return subprocess.run(
        [str(host_path), str(lib_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


@pytest.mark.timeout(150)
def test_host_without_python(host_path, lib_path):
    proc = run_host(host_path, lib_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAIL" not in proc.stdout
    assert proc.stdout.rstrip().splitlines()[-1].startswith("all "), proc.stdout
    assert "first load: 8 racing first calls agree" in proc.stdout
    assert "fresh copy 16: 8 racing first calls agree" in proc.stdout


@pytest.mark.timeout(150)
def test_host_fails_when_python_is_in_its_process(host_path, lib_path):
    """The host's checks can fail: with this interpreter's libpython
    preloaded, the library finds CPython's functions, and the host says so."""
    libpython = pathlib.Path(sysconfig.get_config_var("LIBDIR") or "") / (
        sysconfig.get_config_var("LDLIBRARY") or ""
    )
    if not sysconfig.get_config_var("Py_ENABLE_SHARED") or not libpython.is_file():
        pytest.skip(f"{sys.executable} has no shared libpython to preload")
    env = dict(os.environ, LD_PRELOAD=str(libpython))
    proc = run_host(host_path, lib_path, env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL  python_found: got 1, expected 0" in proc.stdout, proc.stdout
    assert "FAIL  first load: 8 racing first calls agree" in proc.stdout, proc.stdout


def test_host_rejects_a_missing_library(host_path, tmp_path):
    proc = run_host(host_path, tmp_path / "missing.so")
    assert proc.returncode == 2
    assert "cannot load" in proc.stderr


@pytest.mark.timeout(120)
def test_c_program_on_the_header(lib_path, tmp_path):
    """A C program compiled against nuwa_c_abi.h (strict C99, warnings as
    errors) and linked to the library: the header and the library agree."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        pytest.skip("no C compiler (cc, or $CC)")
    here = pathlib.Path(__file__).resolve().parent
    program = tmp_path / "c_smoke"
    lib = lib_path.resolve()
    # The rpath: a rustc that gives the library a soname (Debian's 1.97
    # does) makes the program look it up by that name, not by this path.
    subprocess.run(
        [
            compiler, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic",
            f"-I{here.parent}", str(here / "c_smoke.c"), str(lib),
            f"-Wl,-rpath,{lib.parent}", "-o", str(program),
        ],
        check=True,
        timeout=100,
    )
    proc = subprocess.run([str(program)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all checks passed" in proc.stdout
