"""Tests of examples/minimal: the results, the bad inputs, and a proof that
the call releases the GIL which does not depend on timing."""

from __future__ import annotations

import gc
import os
import struct
import sys
import threading
import time
import zlib

import pytest

import minimal

NATIVE = getattr(minimal, "minimal", minimal)  # maturin wraps it in a package


@pytest.mark.parametrize(
    "data",
    [b"", b"a", b"Wikipedia", bytes(range(256)) * 100, b"\xff" * 5552, b"\xff" * 5553,
     b"\xff" * 1_000_000, os.urandom(100_003)],
    ids=lambda d: f"{len(d)} bytes",
)
def test_same_result_as_zlib(data):
    assert minimal.adler32(data) == zlib.adler32(data)


def test_known_value():
    assert minimal.adler32(b"Wikipedia") == 0x11E60398  # RFC 1950's algorithm, by hand


def test_bytes_subclass_is_bytes():
    class Tagged(bytes):
        pass

    assert minimal.adler32(Tagged(b"abc")) == zlib.adler32(b"abc")


@pytest.mark.parametrize(
    "bad, type_name",
    [("text", "str"), (bytearray(b"x"), "bytearray"), (memoryview(b"x"), "memoryview"),
     (None, "NoneType"), (42, "int"), ([1, 2], "list")],
)
def test_not_bytes_is_a_type_error(bad, type_name):
    with pytest.raises(TypeError, match=rf"^adler32\(\) argument must be bytes, not {type_name}$"):
        minimal.adler32(bad)


@pytest.mark.parametrize(
    "call",
    [lambda: minimal.adler32(), lambda: minimal.adler32(b"a", b"b"),
     lambda: minimal.adler32(data=b"a")],
    ids=["no argument", "two arguments", "keyword"],
)
def test_wrong_arguments_are_a_type_error(call):
    with pytest.raises(TypeError, match=r"adler32\(\)"):
        call()


def released_during(call, attempts: int = 100) -> bool:
    """Whether another Python thread ran while `call()` was running.

    A watcher thread sets `seen` if it finds `calling` true. This thread sets
    `calling` just around the call, with the switch interval at 100 s and the
    garbage collector off: nothing makes it hand the GIL over between the two
    assignments, except the call itself releasing the GIL. So the watcher can
    set `seen` only if the call released it; a call that holds the GIL leaves
    it unset, every time. A released call lets the watcher, already waiting
    for the GIL, run: up to `attempts` calls give it the chance.
    """
    state = {"calling": False, "seen": False, "stop": False}

    def watch():
        while not state["stop"]:
            if state["calling"]:
                state["seen"] = True
            time.sleep(0.0001)  # sleeps without the GIL: hands it back

    old_interval = sys.getswitchinterval()
    # Before the thread starts, so that it never waits for the GIL with a
    # shorter interval (a waiter that times out asks this thread to let go).
    sys.setswitchinterval(100)
    gc.disable()
    watcher = threading.Thread(target=watch, daemon=True)
    try:
        watcher.start()
        for _ in range(attempts):
            state["calling"] = True
            call()
            state["calling"] = False
            if state["seen"]:
                break
    finally:
        sys.setswitchinterval(old_interval)
        gc.enable()
        state["stop"] = True
        watcher.join(10)
    assert not watcher.is_alive()
    return state["seen"]


def gil_enabled() -> bool:
    return getattr(sys, "_is_gil_enabled", lambda: True)()


@pytest.mark.skipif(not gil_enabled(), reason="no GIL to release on a free-threaded build")
def test_adler32_releases_the_gil():
    data = bytes(16 << 20)  # 16 MiB: a few milliseconds per call
    assert released_during(lambda: minimal.adler32(data))


@pytest.mark.skipif(not gil_enabled(), reason="no GIL to hold on a free-threaded build")
def test_controls_a_call_that_holds_the_gil_and_one_that_releases_it():
    """The check can fail: `bytes.count` runs in C holding the GIL, and is
    never seen; `time.sleep` releases it, and is."""
    data = bytes(16 << 20)
    assert not released_during(lambda: data.count(b"\x01"), attempts=20)
    assert released_during(lambda: time.sleep(0.001))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads an ELF file")
def test_no_link_to_libpython():
    """The module's NEEDED libraries (what `readelf -d` lists): no libpython."""
    data = open(NATIVE.__file__, "rb").read()
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    dynamic = next(s for s in sections if s[1] == 6)  # SHT_DYNAMIC
    strtab = sections[dynamic[6]][4]
    needed = []
    for offset in range(dynamic[4], dynamic[4] + dynamic[5], 16):
        tag, value = struct.unpack_from("<qQ", data, offset)
        if tag == 1:  # DT_NEEDED
            needed.append(data[strtab + value : data.index(b"\0", strtab + value)].decode())
    assert any(name.startswith("libc.so") for name in needed), needed
    assert not [name for name in needed if "python" in name], needed
