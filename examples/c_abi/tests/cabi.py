"""ctypes bindings of libnuwa_c_abi (see ../nuwa_c_abi.h), shared by the
tests and by the child scripts they start.

Only the standard library: the child scripts run without pytest.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import pathlib
import subprocess
import sys
import sysconfig

REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]
BUILD_HINT = "build it with `make c-abi` (cargo build --release -p nuwa-c-abi-example -p nuwa-c-abi-host)"

OK = 0
STOPPED_EARLY = 1
ERR_NULL = -1
ERR_PANIC = -2
ERR_OVERFLOW = -3
ERR_BREACH = -4
ERR_THREAD = -5
ERR_ARG = -6

MASK64 = (1 << 64) - 1

u64 = ctypes.c_uint64
u64_p = ctypes.POINTER(ctypes.c_uint64)
u8_p = ctypes.POINTER(ctypes.c_uint8)
f64_p = ctypes.POINTER(ctypes.c_double)
c_int = ctypes.c_int

SIGNATURES = {
    "nuwa_sum_of_squares": (c_int, [f64_p, ctypes.c_size_t, f64_p]),
    "nuwa_python_found": (c_int, []),
    "nuwa_can_release": (c_int, []),
    "nuwa_describe": (ctypes.c_size_t, [ctypes.c_char_p, ctypes.c_size_t]),
    "nuwa_counters": (c_int, [u64_p, u64_p]),
    "nuwa_set_flag": (c_int, [u8_p]),
    "nuwa_waiters": (ctypes.c_uint32, []),
    "nuwa_wait_for_flag": (c_int, [u8_p, ctypes.c_uint32]),
    "nuwa_wait_for_flag_holding": (c_int, [u8_p, ctypes.c_uint32]),
    "nuwa_spin_sum": (c_int, [u64, u64_p]),
    "nuwa_empty_block": (c_int, [u64, u64_p]),
    "nuwa_nested_blocks": (c_int, [u64, u64_p]),
    "nuwa_early_return": (c_int, [u64, u64, u64_p]),
    "nuwa_checked_power": (c_int, [u64, ctypes.c_uint32, u64_p]),
    "nuwa_panic_in_block": (c_int, [ctypes.c_uint32, ctypes.c_uint32]),
    "nuwa_blocks_in_rust_thread": (c_int, [u64, c_int, u64_p]),
    "nuwa_probe_release": (c_int, []),
    "nuwa_probe_release_after": (c_int, [ctypes.c_uint32]),
    "nuwa_probe_release_in_rust_thread": (c_int, []),
    "nuwa_probe_nested": (c_int, []),
}


@functools.lru_cache(maxsize=None)
def cargo_target_dir() -> pathlib.Path:
    """Where cargo builds this workspace, as `cargo metadata` says: it honours
    CARGO_TARGET_DIR and a cargo config's `build.target-dir`. Where there is
    no cargo to ask (the test matrix runs this suite in a chroot without
    Rust, on a build it made under target/), the workspace's target/."""
    cargo = os.environ.get("CARGO", "cargo")
    try:
        out = subprocess.run(
            [cargo, "metadata", "--format-version", "1", "--no-deps", "--offline"],
            cwd=REPO_ROOT, capture_output=True, text=True,
        )
    except FileNotFoundError:
        return REPO_ROOT / "target"
    if out.returncode != 0:
        raise RuntimeError(f"`{cargo} metadata` failed, so the build is not found:\n{out.stderr}")
    return pathlib.Path(json.loads(out.stdout)["target_directory"])


def lib_path() -> pathlib.Path:
    """The library under test: $NUWA_C_ABI_LIB, or the release build."""
    path = os.environ.get("NUWA_C_ABI_LIB")
    return pathlib.Path(path) if path else cargo_target_dir() / "release" / "libnuwa_c_abi.so"


def host_path() -> pathlib.Path:
    """The Rust host program: $NUWA_C_ABI_HOST, or the release build."""
    path = os.environ.get("NUWA_C_ABI_HOST")
    return pathlib.Path(path) if path else cargo_target_dir() / "release" / "nuwa-c-abi-host"


def load(path, kind=ctypes.PyDLL):
    """Loads the library with its signatures declared.

    `ctypes.PyDLL` (the default) keeps the GIL during a call, as an extension
    function does; `ctypes.CDLL` releases it around the call. Both load the
    same instance of the library (one dlopen handle per file).
    """
    lib = kind(str(path))
    for name, (restype, argtypes) in SIGNATURES.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes
    return lib


def counters(lib):
    releases, reacquires = u64(), u64()
    assert lib.nuwa_counters(ctypes.byref(releases), ctypes.byref(reacquires)) == OK
    return releases.value, reacquires.value


def describe(lib) -> str:
    size = lib.nuwa_describe(None, 0)
    buf = ctypes.create_string_buffer(size + 1)
    assert lib.nuwa_describe(buf, len(buf)) == size
    return buf.value.decode()


def free_threaded() -> bool:
    """A free-threaded build running without the GIL."""
    return bool(sysconfig.get_config_var("Py_GIL_DISABLED")) and not getattr(
        sys, "_is_gil_enabled", lambda: True
    )()


# Expected values, computed here independently of the library.


def spin_sum(n: int) -> int:
    """sum(i * i for i in range(n)) mod 2**64, by the closed form."""
    return ((n - 1) * n * (2 * n - 1) // 6 if n else 0) & MASK64


def triangle(n: int) -> int:
    """sum(range(n))."""
    return n * (n - 1) // 2 if n else 0


def nested_blocks(n: int) -> int:
    return (spin_sum(n) + 3 * n) & MASK64


def early_return(n: int, stop: int):
    return (STOPPED_EARLY, triangle(stop)) if stop < n else (OK, triangle(n))


def checked_power(base: int, exp: int):
    value = base**exp
    return (OK, value) if value <= MASK64 else (ERR_OVERFLOW, None)


def blocks_in_rust_thread(n: int) -> int:
    return (spin_sum(n) + n + triangle(n // 2)) & MASK64


def sum_of_squares(data) -> float:
    acc = 0.0
    for x in data:
        acc += x * x
    return acc
