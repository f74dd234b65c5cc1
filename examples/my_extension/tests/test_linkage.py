"""The extension does not link libpython: nuwa finds CPython's functions at run
time, and the module's own C-API symbols are left for the interpreter that
loads it to provide. Checked on the ELF file itself (what ``readelf -d``
shows as NEEDED), with a small reader so that no binutils are needed."""

from __future__ import annotations

import struct
import sys

import pytest

from conftest import NATIVE

DT_NEEDED, DT_STRTAB, SHT_DYNAMIC = 1, 5, 6


def needed_libraries(path: str) -> list[str]:
    """The DT_NEEDED entries of a 64-bit little-endian ELF shared object."""
    data = open(path, "rb").read()
    assert data[:4] == b"\x7fELF", f"{path} is not an ELF file"
    assert data[4] == 2 and data[5] == 1, "only 64-bit little-endian ELF is handled"
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    dynamic = next(s for s in sections if s[1] == SHT_DYNAMIC)
    # The dynamic section's sh_link names the string table its entries use.
    strtab_offset = sections[dynamic[6]][4]
    names = []
    for off in range(dynamic[4], dynamic[4] + dynamic[5], 16):
        tag, value = struct.unpack_from("<qQ", data, off)
        if tag == 0:
            break
        if tag == DT_NEEDED:
            start = strtab_offset + value
            names.append(data[start : data.index(b"\0", start)].decode())
    return names


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF check")
def test_extension_has_no_needed_libpython():
    needed = needed_libraries(NATIVE.__file__)
    assert needed, "the reader found no NEEDED entries at all (libc is always there)"
    assert any(n.startswith("libc.so") for n in needed), needed
    assert not [n for n in needed if "python" in n], f"links libpython: {needed}"


def test_the_reader_sees_libpython_where_it_is_linked():
    """Control: the interpreter's own binary (or libpython) does name it, or
    is it; so the check above can fail."""
    import sysconfig

    libdir, ldlibrary = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        pytest.skip("static interpreter: nothing links libpython")
    assert any("python" in n for n in needed_libraries(sys.executable)), (
        f"{sys.executable} should name {ldlibrary} (in {libdir}) as NEEDED"
    )
