//! The few C library functions and types nuwa needs on Unix (the lookup's
//! `dlopen` family and `dl_iterate_phdr`, `write` for a message before an
//! abort, `dlsym` for glibc's cleanup handlers), declared here rather than
//! taken from a crate: nuwa's runtime dependencies are
//! kept to `spin`, `libloading` (Windows) and `static_assertions`.
//!
//! The declarations follow each C library's `<dlfcn.h>`, `<link.h>` and
//! `<unistd.h>`; the flag values are those of the targets
//! on which `build.rs` sets `nuwa_dl_noload`.

use core::ffi::{c_char, c_int, c_void};

/// `RTLD_LAZY`: 1 on every Unix.
pub(crate) const RTLD_LAZY: c_int = 1;

/// `RTLD_NOLOAD`: return a handle only if the object is already loaded.
#[cfg(all(nuwa_dl_noload, any(target_os = "linux", target_os = "android")))]
pub(crate) const RTLD_NOLOAD: c_int = 0x4;
#[cfg(all(nuwa_dl_noload, any(target_os = "freebsd", target_os = "dragonfly")))]
pub(crate) const RTLD_NOLOAD: c_int = 0x2000;
#[cfg(all(nuwa_dl_noload, target_os = "openbsd"))]
pub(crate) const RTLD_NOLOAD: c_int = 0x800;
#[cfg(all(nuwa_dl_noload, any(target_os = "macos", target_os = "ios")))]
pub(crate) const RTLD_NOLOAD: c_int = 0x10;

/// `RTLD_NODELETE`: never unmap the object, even after its last `dlclose`.
#[cfg(all(
    nuwa_dl_noload,
    any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_os = "dragonfly"
    )
))]
pub(crate) const RTLD_NODELETE: c_int = 0x1000;
#[cfg(all(nuwa_dl_noload, target_os = "openbsd"))]
pub(crate) const RTLD_NODELETE: c_int = 0x400;
#[cfg(all(nuwa_dl_noload, any(target_os = "macos", target_os = "ios")))]
pub(crate) const RTLD_NODELETE: c_int = 0x80;

/// `Dl_info`, filled by `dladdr` (the same four fields on every Unix).
#[repr(C)]
pub(crate) struct DlInfo {
    pub(crate) dli_fname: *const c_char,
    pub(crate) dli_fbase: *mut c_void,
    pub(crate) dli_sname: *const c_char,
    pub(crate) dli_saddr: *mut c_void,
}

/// The first six fields of `struct dl_phdr_info` (the same in glibc, musl
/// and the BSDs), which is only ever read through the pointer
/// `dl_iterate_phdr` passes, and the counters only if the size it passes
/// covers them (its later fields vary).
#[cfg(nuwa_dl_iterate)]
#[repr(C)]
pub(crate) struct DlPhdrInfo {
    pub(crate) dlpi_addr: usize,
    pub(crate) dlpi_name: *const c_char,
    pub(crate) dlpi_phdr: *const c_void,
    pub(crate) dlpi_phnum: u16,
    /// Objects loaded so far, by the whole process.
    pub(crate) dlpi_adds: u64,
    /// Objects unloaded so far.
    pub(crate) dlpi_subs: u64,
}

// The same link as libloading's: libdl where glibc keeps it apart (older
// than 2.34; a stub library since), the C library elsewhere.
#[cfg_attr(
    any(
        all(target_os = "linux", not(target_env = "musl")),
        target_os = "android"
    ),
    link(name = "dl")
)]
unsafe extern "C" {
    pub(crate) fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
    pub(crate) fn dlclose(handle: *mut c_void) -> c_int;
    pub(crate) fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    pub(crate) fn dlerror() -> *mut c_char;
    pub(crate) fn dladdr(addr: *const c_void, info: *mut DlInfo) -> c_int;
}

unsafe extern "C" {
    /// `write(2)`: nuwa's last words before an abort, without `std::io`'s
    /// formatting machinery in every extension.
    pub(crate) fn write(fd: c_int, buf: *const c_void, count: usize) -> isize;
}

/// `Elf32_Phdr` / `Elf64_Phdr`, only the fields read: a segment's type,
/// its address (relative to `dlpi_addr`) and its size in memory.
#[cfg(all(nuwa_dl_iterate, target_pointer_width = "64"))]
#[repr(C)]
pub(crate) struct Phdr {
    pub(crate) p_type: u32,
    pub(crate) p_flags: u32,
    pub(crate) p_offset: u64,
    pub(crate) p_vaddr: u64,
    pub(crate) p_paddr: u64,
    pub(crate) p_filesz: u64,
    pub(crate) p_memsz: u64,
    pub(crate) p_align: u64,
}
#[cfg(all(nuwa_dl_iterate, target_pointer_width = "32"))]
#[repr(C)]
pub(crate) struct Phdr {
    pub(crate) p_type: u32,
    pub(crate) p_offset: u32,
    pub(crate) p_vaddr: u32,
    pub(crate) p_paddr: u32,
    pub(crate) p_filesz: u32,
    pub(crate) p_memsz: u32,
    pub(crate) p_flags: u32,
    pub(crate) p_align: u32,
}

/// `PT_LOAD`: a segment mapped from the file.
#[cfg(nuwa_dl_iterate)]
pub(crate) const PT_LOAD: u32 = 1;

#[cfg(nuwa_dl_iterate)]
unsafe extern "C" {
    /// Registers fork handlers (in the C library, or `libc_nonshared.a`
    /// on glibc, which passes the caller's object so that `dlclose`
    /// removes them).
    pub(crate) fn pthread_atfork(
        prepare: Option<unsafe extern "C" fn()>,
        parent: Option<unsafe extern "C" fn()>,
        child: Option<unsafe extern "C" fn()>,
    ) -> c_int;
}

#[cfg(nuwa_dl_iterate)]
unsafe extern "C" {
    pub(crate) fn getpid() -> c_int;
}

#[cfg(nuwa_dl_iterate)]
unsafe extern "C" {
    pub(crate) fn dl_iterate_phdr(
        callback: Option<unsafe extern "C" fn(*mut DlPhdrInfo, usize, *mut c_void) -> c_int>,
        data: *mut c_void,
    ) -> c_int;
}
