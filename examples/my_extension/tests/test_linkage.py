"""The extension does not link libpython: nuwa finds CPython's functions at run
time, and the module's own C-API symbols are left for the interpreter that
loads it to provide. Checked on the ELF files themselves (what ``readelf -d``
shows as NEEDED, and ``readelf --dyn-syms`` as defined), with a small reader
so that no binutils are needed."""

from __future__ import annotations

import os
import struct
import sys

import pytest

from conftest import NATIVE

DT_NEEDED = 1
SHT_DYNSYM, SHT_DYNAMIC = 11, 6
SHN_UNDEF = 0
STB_WEAK = 2

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF check")

# What nuwa looks up at run time; an interpreter provides them, either from
# a libpython it links or from its own executable.
GIL_FUNCTIONS = ("PyEval_SaveThread", "PyEval_RestoreThread")


class Elf:
    """The dynamic section and dynamic symbols of a 64-bit little-endian ELF
    file (an executable or a shared object)."""

    def __init__(self, path: str) -> None:
        self.path = os.path.realpath(path)
        with open(self.path, "rb") as f:
            self.data = f.read()
        assert self.data[:4] == b"\x7fELF", f"{self.path} is not an ELF file"
        assert self.data[4] == 2 and self.data[5] == 1, "only 64-bit little-endian ELF is handled"
        shoff, = struct.unpack_from("<Q", self.data, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", self.data, 0x3A)
        # (sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link,
        #  sh_info, sh_addralign, sh_entsize)
        self.sections = [struct.unpack_from("<IIQQQQIIQQ", self.data, shoff + i * shentsize)
                         for i in range(shnum)]

    def _section(self, sh_type: int):
        return next((s for s in self.sections if s[1] == sh_type), None)

    def _string(self, strtab_section: int, offset: int) -> str:
        start = self.sections[strtab_section][4] + offset
        return self.data[start : self.data.index(b"\0", start)].decode()

    def needed(self) -> list[str]:
        """The DT_NEEDED entries: the libraries the loader must load."""
        dynamic = self._section(SHT_DYNAMIC)
        if dynamic is None:
            return []
        names = []
        for off in range(dynamic[4], dynamic[4] + dynamic[5], 16):
            tag, value = struct.unpack_from("<qQ", self.data, off)
            if tag == 0:
                break
            if tag == DT_NEEDED:
                # The dynamic section's sh_link names the string table its
                # entries use.
                names.append(self._string(dynamic[6], value))
        return names

    def dynamic_symbols(self) -> dict[str, bool]:
        """Every dynamic symbol's name, and whether this file defines it
        (False: it expects another object to)."""
        dynsym = self._section(SHT_DYNSYM)
        if dynsym is None:
            return {}
        symbols = {}
        # Elf64_Sym: st_name, st_info, st_other, st_shndx, st_value, st_size
        for off in range(dynsym[4] + 24, dynsym[4] + dynsym[5], 24):
            st_name, _, _, st_shndx, _, _ = struct.unpack_from("<IBBHQQ", self.data, off)
            name = self._string(dynsym[6], st_name)
            symbols[name] = symbols.get(name, False) or st_shndx != SHN_UNDEF
        return symbols

    def weak_undefined(self) -> set[str]:
        """The dynamic symbols this file references weakly without defining
        them: the loader fills them if some object exports them, and leaves
        them null otherwise; loading never fails on them."""
        dynsym = self._section(SHT_DYNSYM)
        if dynsym is None:
            return set()
        weak = set()
        for off in range(dynsym[4] + 24, dynsym[4] + dynsym[5], 24):
            st_name, st_info, _, st_shndx, _, _ = struct.unpack_from("<IBBHQQ", self.data, off)
            if st_shndx == SHN_UNDEF and st_info >> 4 == STB_WEAK:
                weak.add(self._string(dynsym[6], st_name))
        return weak


def provides_the_c_api(path: str) -> str | None:
    """How the program at ``path`` provides CPython's C API: "NEEDED
    libpython..." if it links a libpython, "exports ..." if it defines the
    GIL functions itself (a statically linked interpreter that exports its
    symbols, such as Debian's), or None."""
    elf = Elf(path)
    linked = [n for n in elf.needed() if n.startswith("libpython")]
    if linked:
        return f"NEEDED {linked[0]}"
    symbols = elf.dynamic_symbols()
    if all(symbols.get(name) for name in GIL_FUNCTIONS):
        return "exports " + ", ".join(GIL_FUNCTIONS)
    return None


def test_extension_has_no_needed_libpython():
    needed = Elf(NATIVE.__file__).needed()
    assert needed, "the reader found no NEEDED entries at all (libc is always there)"
    assert any(n.startswith("libc.so") for n in needed), needed
    assert not [n for n in needed if "python" in n], f"links libpython: {needed}"


def test_extension_leaves_the_c_api_to_the_interpreter():
    """The module uses the C API (PyModuleDef_Init at least) but defines none
    of it, and does not need the GIL functions: nuwa looks them up at run
    time. It may reference them weakly: nuwa-ffi's weak references, for a
    static libpython linked into the same object (a static embed), which
    never make loading fail and which nuwa uses only if they point into its
    own object (`static_embedding_fully_static` and the unit tests)."""
    elf = Elf(NATIVE.__file__)
    symbols = elf.dynamic_symbols()
    weak = elf.weak_undefined()
    assert symbols.get("PyInit_my_extension") is True, "the module's entry point is not exported"
    assert symbols.get("PyModuleDef_Init") is False, "PyModuleDef_Init should be undefined (provided by the interpreter)"
    strong = [n for n in GIL_FUNCTIONS if n in symbols and n not in weak]
    assert not strong, f"the GIL functions are linked, not looked up: {strong}"
    assert not [n for n in GIL_FUNCTIONS if symbols.get(n)], "the module defines GIL functions"
    assert provides_the_c_api(NATIVE.__file__) is None


def test_the_reader_sees_the_c_api_where_the_interpreter_has_it():
    """Control: the running interpreter gets CPython's C API from somewhere the
    reader can see, a NEEDED libpython or its own exported symbols, so the
    checks above can fail. Each test above would pass on a file the reader
    could not parse at all; this one would not."""
    executable = os.path.realpath(sys.executable)
    how = provides_the_c_api(executable)
    assert how is not None, f"{executable} neither links a libpython nor exports {GIL_FUNCTIONS}"
    if how.startswith("NEEDED"):
        # A shared build: the library it links defines the functions.
        import sysconfig

        library = os.path.join(sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME"))
        symbols = Elf(library).dynamic_symbols()
        assert all(symbols.get(name) for name in GIL_FUNCTIONS), f"{library} does not define {GIL_FUNCTIONS}"
