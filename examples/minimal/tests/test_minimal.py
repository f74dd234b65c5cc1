"""Tests of examples/minimal: the results, the bad inputs, and a proof that
the call releases the GIL which does not depend on timing. Panics:
test_panic.py."""

from __future__ import annotations

import errno
import os
import platform
import select
import struct
import subprocess
import sys
import threading
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
     (None, "None"), (42, "int"), ([1, 2], "list")],  # CPython says "None" for None
)
def test_not_bytes_is_a_type_error(bad, type_name):
    with pytest.raises(TypeError, match=rf"^adler32\(\) argument 1 must be bytes, not {type_name}$"):
        minimal.adler32(bad)


@pytest.mark.parametrize(
    "call, message",
    [(lambda: minimal.adler32(), r"takes at least 1 argument \(0 given\)"),
     (lambda: minimal.adler32(b"a", 1, 2), r"takes at most 2 arguments \(3 given\)"),
     (lambda: minimal.adler32(data=b"a"), "takes no keyword arguments"),
     (lambda: minimal.adler32(b"a", value=1), "takes no keyword arguments")],
    ids=["no argument", "three arguments", "data by keyword", "value by keyword"],
)
def test_wrong_arguments_are_a_type_error(call, message):
    with pytest.raises(TypeError, match=rf"^adler32\(\) {message}$"):
        call()


# `value`, the checksum to continue from, as in zlib.adler32.

def test_value_continues_a_checksum():
    first, second = os.urandom(10_000), os.urandom(7)
    assert minimal.adler32(second, minimal.adler32(first)) == minimal.adler32(first + second)
    assert minimal.adler32(b"abc", 1) == minimal.adler32(b"abc")


@pytest.mark.parametrize("value", [0, 1, 65520, 65520 << 16, 65520 << 16 | 65520, 0x11E60398, True])
def test_value_same_result_as_zlib(value):
    data = bytes(range(256)) * 50
    assert minimal.adler32(data, value) == zlib.adler32(data, value)
    assert minimal.adler32(b"", value) == value


class IndexOnly:
    """Not an int, but has __index__ (as a NumPy integer has)."""

    def __init__(self, index):
        self.index = index

    def __index__(self):
        return self.index


class OddInt(int):
    """An int whose __index__ disagrees with its value: the value counts, as
    everywhere in CPython (__index__ is not called on an int)."""

    def __index__(self):
        return 5


def test_value_by_index():
    assert minimal.adler32(b"x", IndexOnly(12345)) == zlib.adler32(b"x", 12345)
    assert minimal.adler32(b"x", OddInt(7)) == zlib.adler32(b"x", 7)


@pytest.mark.parametrize(
    "value",
    [-1, 2**32, 2**63, 2**64, -(2**63) - 1, 10**100_000, -(10**100_000), IndexOnly(2**32),
     IndexOnly(-1)],
    # 10**100_000 has too many digits for str() on 3.11+: the error must not need it.
    ids=["-1", "2**32", "2**63", "2**64", "-2**63-1", "10**100000", "-10**100000",
         "__index__ 2**32", "__index__ -1"],
)
def test_value_out_of_range_is_an_overflow_error(value):
    with pytest.raises(OverflowError, match=r"^adler32\(\) value must be from 0 to 2\*\*32 - 1$"):
        minimal.adler32(b"x", value)


@pytest.mark.parametrize("value", [65521, 65521 << 16, 0xFFFF, 0xFFFFFFFF, 65521 << 16 | 65520])
def test_value_that_no_adler32_has_is_a_value_error(value):
    with pytest.raises(ValueError, match=rf"^adler32\(\) value {value} is not an Adler-32 checksum: "
                                         r"both 16-bit halves must be below 65521$"):
        minimal.adler32(b"x", value)


@pytest.mark.parametrize("value, type_name", [("1", "str"), (1.0, "float"), (None, "NoneType"),
                                               (b"\x01", "bytes"), (IndexOnly("1"), None)])
def test_value_not_an_integer_is_a_type_error(value, type_name):
    # CPython's own message (as zlib.adler32's on 3.10+), from `__index__`;
    # one returning a str is said differently by 3.15.
    message = (rf"^'{type_name}' object cannot be interpreted as an integer$" if type_name
               else r"__index__.*(returned non-int \(type str\)|must return an int, not str)")
    with pytest.raises(TypeError, match=message):
        minimal.adler32(b"x", value)


def test_an_exception_from_index_comes_through():
    class Broken:
        def __index__(self):
            raise KeyError("from __index__")

    with pytest.raises(KeyError, match="from __index__"):
        minimal.adler32(b"x", Broken())


def test_bytes_subclass_that_lies_about_its_length():
    class Long(bytes):
        def __len__(self):
            return 10**9

    assert minimal.adler32(Long(b"abc")) == zlib.adler32(b"abc")


def test_many_threads_at_once():
    """Each thread gets its own right result while the others compute."""
    inputs = [(os.urandom(200_000 + i), i * 7919 % 65521) for i in range(8)]
    barrier = threading.Barrier(len(inputs))
    results = [None] * len(inputs)

    def work(i):
        data, value = inputs[i]
        barrier.wait(timeout=60)
        results[i] = [minimal.adler32(data, value) for _ in range(20)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [[zlib.adler32(data, value)] * 20 for data, value in inputs]


def gil_enabled() -> bool:
    return getattr(sys, "_is_gil_enabled", lambda: True)()


# The proof that a call releases the GIL, without timing and without a hook in
# the extension. One page in the middle of the input is dropped and registered
# with a userfaultfd (Linux): the first read of it stops the reading thread
# until someone fills the page in. That someone is a Python thread, blocked in
# `os.read` on the userfaultfd (which it does without the GIL); to fill the
# page it must run Python, so it must take the GIL. If the call released the
# GIL, the handler takes it, fills the page with zeros (what was there) and
# the call goes on to return the right result. If the call holds the GIL,
# nothing can ever fill the page: the call waits forever. The outcome follows
# from who holds the GIL when the read faults, whatever the scheduler does. It
# runs in a child interpreter, killed if it has not returned within a bound.

NOT_RUN = 3  # the child's exit status when this machine cannot run the proof
SIZE = 16 << 20  # zeros; the page dropped is wholly inside, so nothing else is touched
CALLS = {
    "minimal.adler32": lambda data: minimal.adler32(data),
    "bytes.count": lambda data: data.count(b"\x01"),  # C, GIL held throughout
    "zlib.adler32": zlib.adler32,  # releases the GIL for more than 5 KiB
}


def userfaultfd_syscall():
    """The number of the userfaultfd system call for this process, or None."""
    machine = platform.machine()
    if struct.calcsize("P") == 8:
        return {"x86_64": 323, "aarch64": 282, "riscv64": 282, "s390x": 355,
                "ppc64": 364, "ppc64le": 364}.get(machine)
    if machine in ("i386", "i486", "i586", "i686", "x86_64"):  # also x86_64's 32-bit ABI
        return 374
    if machine.startswith("arm") or machine == "aarch64":  # also aarch64's 32-bit ABI
        return 388
    return None


def uffd_ioctl(nr: int, size: int, write: bool = True) -> int:
    """`_IOWR(0xAA, nr, size)` (or `_IOR` without `write`), as <asm/ioctl.h>."""
    if platform.machine().startswith("ppc"):
        size_bits, read_bit, write_bit = 13, 2, 4
    else:
        size_bits, read_bit, write_bit = 14, 2, 1
    direction = read_bit | (write_bit if write else 0)
    return direction << (16 + size_bits) | size << 16 | 0xAA << 8 | nr


def call_with_a_faulting_page(name: str) -> None:
    """In the child: call `CALLS[name]` on bytes with a page that faults to a
    Python thread. Prints "calling" just before the call, "returned" after
    it; exits with NOT_RUN (and says why) if the machine has no userfaultfd."""
    import ctypes
    import fcntl
    import mmap

    def not_run(why: str):
        print(f"not run: {why}", flush=True)
        sys.exit(NOT_RUN)

    page = mmap.PAGESIZE
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    number = userfaultfd_syscall()
    if number is None:
        not_run(f"no userfaultfd number known for {platform.machine()}")
    # UFFD_USER_MODE_ONLY (Linux 5.11+) lets a process without privileges
    # handle the faults raised in user mode, which a read by the call is.
    uffd = libc.syscall(ctypes.c_long(number), ctypes.c_long(os.O_CLOEXEC | 1))
    if uffd < 0 and ctypes.get_errno() == errno.EINVAL:  # an older kernel
        uffd = libc.syscall(ctypes.c_long(number), ctypes.c_long(os.O_CLOEXEC))
    if uffd < 0:
        not_run(f"userfaultfd(): {os.strerror(ctypes.get_errno())}")
    try:
        fcntl.ioctl(uffd, uffd_ioctl(0x3F, 24), bytearray(struct.pack("QQQ", 0xAA, 0, 0)), True)
    except OSError as error:
        not_run(f"UFFDIO_API: {error}")

    call = CALLS[name]
    data = bytes(SIZE)
    expected = call(data)  # before the page is dropped
    # A `c_char_p` made from a bytes points at the bytes' own buffer, which
    # starts where the bytes object's fixed part ends (its size less 1: the
    # fixed part counts the terminating NUL). Both must agree, or no madvise.
    start = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
    assert start == id(data) + bytes.__basicsize__ - 1, (start, id(data))
    target = (start + SIZE // 2) & ~(page - 1)  # a whole page, inside `data`
    register = bytearray(struct.pack("QQQQ", target, page, 1, 0))  # MODE_MISSING
    try:
        fcntl.ioctl(uffd, uffd_ioctl(0x00, 32), register, True)  # UFFDIO_REGISTER
    except OSError as error:
        not_run(f"UFFDIO_REGISTER: {error}")
    if not struct.unpack_from("Q", register, 24)[0] & 1 << 0x04:
        not_run("no UFFDIO_ZEROPAGE for this memory")
    assert libc.madvise(target, page, 4) == 0, os.strerror(ctypes.get_errno())  # DONTNEED

    faults = []

    def handle_the_fault():
        message = os.read(uffd, 32)  # struct uffd_msg, blocks without the GIL
        # Here the GIL is needed: for the code below, and to return from read.
        event, = struct.unpack_from("B", message, 0)
        address, = struct.unpack_from("Q", message, 16)
        faults.append((event, address & ~(page - 1)))
        zeropage = bytearray(struct.pack("QQQq", target, page, 0, 0))
        fcntl.ioctl(uffd, uffd_ioctl(0x04, 32), zeropage, True)  # UFFDIO_ZEROPAGE

    handler = threading.Thread(target=handle_the_fault, daemon=True)
    handler.start()
    print("calling", flush=True)
    result = call(data)
    handler.join()
    fcntl.ioctl(uffd, uffd_ioctl(0x01, 16, write=False), struct.pack("QQ", target, page))
    os.close(uffd)
    assert faults == [(0x12, target)], faults  # UFFD_EVENT_PAGEFAULT, once
    assert result == expected, (result, expected)
    print("returned", flush=True)


def returns_with_a_faulting_page(name: str, wait: float) -> bool:
    """Whether `CALLS[name]`, run in a child interpreter on bytes with a page
    whose fault only a Python thread can resolve, returns: False if it is
    still waiting `wait` seconds after the child started it (then killed)."""
    # Unbuffered: a buffered readline could take "returned" with "calling",
    # out of the reach of communicate(), which reads the pipe itself.
    child = subprocess.Popen([sys.executable, __file__, name], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, bufsize=0)
    try:
        # Up to the call: bounded, but generous, since the outcome does not
        # depend on it and a loaded machine may start Python slowly.
        ready, _, _ = select.select([child.stdout], [], [], 120)
        first = child.stdout.readline().decode() if ready else ""
        if first != "calling\n":
            if not first.startswith("not run: "):  # else it exits by itself
                child.kill()
            rest, errors = child.communicate(timeout=120)
            if first.startswith("not run: ") and child.returncode == NOT_RUN:
                pytest.skip(first[len("not run: "):].strip())
            pytest.fail(f"the child did not reach the call: {first + rest.decode()!r}\n"
                        f"{errors.decode()}")
        try:
            rest, errors = child.communicate(timeout=wait)
        except subprocess.TimeoutExpired:
            return False
        assert (child.returncode, rest) == (0, b"returned\n"), errors.decode()
        return True
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()


linux_with_a_gil = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not gil_enabled(),
    reason="needs Linux's userfaultfd, and a GIL (none on a free-threaded build)")


@linux_with_a_gil
def test_adler32_releases_the_gil():
    """A call that held the GIL would wait forever: 60 s is only a bound."""
    assert returns_with_a_faulting_page("minimal.adler32", wait=60), (
        "adler32 did not return: it read its input holding the GIL, so the Python "
        "thread that resolves the page fault could not run")


@linux_with_a_gil
def test_controls_a_call_that_holds_the_gil_and_one_that_releases_it():
    """The proof can fail: `bytes.count` reads the bytes in C with the GIL
    held, and never returns (5 s bound the wait for a deadlock); `zlib.adler32`
    releases it for large buffers, and returns."""
    assert not returns_with_a_faulting_page("bytes.count", wait=5), (
        "bytes.count returned: the page fault was resolved with the GIL held")
    assert returns_with_a_faulting_page("zlib.adler32", wait=60), "zlib.adler32 did not return"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads an ELF file")
def test_no_link_to_libpython():
    """The module's NEEDED libraries (what `readelf -d` lists): no libpython."""
    with open(NATIVE.__file__, "rb") as file:
        data = file.read()
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


if __name__ == "__main__":  # the child of returns_with_a_faulting_page
    call_with_a_faulting_page(sys.argv[1])
