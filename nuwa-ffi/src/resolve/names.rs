//! Which loaded objects may be CPython (or PyPy), by file name.
//!
//! Plain logic, compiled and tested on every host, including the Windows
//! names, whose lookup code is only compiled on Windows.

use std::string::String;
use std::vec::Vec;

/// The file name after the last `/` (or `\`).
fn base_name(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/' || b == b'\\') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// Whether a loaded object's path names a shared libpython 3:
/// `libpython3*.so*` (ELF) or `libpython3*.dylib` (Mach-O), any directory.
#[cfg_attr(
    not(nuwa_dl_iterate),
    allow(dead_code, reason = "used with dl_iterate_phdr")
)]
pub(crate) fn is_libpython(path: &[u8]) -> bool {
    is_shared_library(path, b"libpython3")
}

/// Whether a loaded object's path names PyPy's shared library
/// (`libpypy3.10-c.so`, `libpypy-c.so`, ...).
#[cfg_attr(
    not(nuwa_dl_iterate),
    allow(dead_code, reason = "used with dl_iterate_phdr")
)]
pub(crate) fn is_libpypy(path: &[u8]) -> bool {
    is_shared_library(path, b"libpypy")
}

/// Whether the file name in `path` starts with `prefix` and names a shared
/// library (`.so` anywhere in it, or ending in `.dylib`). One function for
/// both names: code that every extension carries.
#[cfg_attr(
    not(nuwa_dl_iterate),
    allow(dead_code, reason = "used with dl_iterate_phdr")
)]
#[inline(never)]
fn is_shared_library(path: &[u8], prefix: &[u8]) -> bool {
    let name = base_name(path);
    name.starts_with(prefix) && (contains(name, b".so") || name.ends_with(b".dylib"))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The highest CPython 3 minor version whose DLL names are tried.
#[cfg_attr(
    not(windows),
    allow(dead_code, reason = "used on Windows; tested everywhere")
)]
pub(crate) const MAX_MINOR: u32 = 99;

/// The Python DLLs that may be loaded in a Windows process, in the order
/// they are tried: every versioned DLL (`python3X.dll`, free-threaded
/// `python3Xt.dll`, debug `python3X_d.dll` and `python3Xt_d.dll`) from the
/// newest minor version down to 3.8, then the stable-ABI forwarders
/// (`python3.dll`, `python3t.dll` and their debug names).
///
/// A forwarder is tried last because it never has a held check (the current
/// thread state getters are not in the stable ABI), and it is only ever
/// loaded next to a versioned DLL, which is found first.
#[cfg_attr(
    not(windows),
    allow(dead_code, reason = "used on Windows; tested everywhere")
)]
pub(crate) fn windows_dll_candidates() -> Vec<String> {
    let mut names = Vec::with_capacity(4 * (MAX_MINOR as usize - 7) + 4);
    for minor in (8..=MAX_MINOR).rev() {
        for suffix in ["", "t", "_d", "t_d"] {
            names.push(format!("python3{minor}{suffix}.dll"));
        }
    }
    for name in [
        "python3.dll",
        "python3t.dll",
        "python3_d.dll",
        "python3t_d.dll",
    ] {
        names.push(name.into());
    }
    names
}

/// Whether a Windows DLL name is a stable-ABI forwarder (no held check).
#[cfg_attr(
    not(windows),
    allow(dead_code, reason = "used on Windows; tested everywhere")
)]
pub(crate) fn is_forwarder_dll(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "python3.dll" | "python3t.dll" | "python3_d.dll" | "python3t_d.dll"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpython_names() {
        for yes in [
            "/root/.pyenv/versions/3.12.1/lib/libpython3.12.so.1.0",
            "libpython3.13t.so.1.0",
            "libpython3.13d.so",
            "/usr/lib/x86_64-linux-gnu/libpython3.11.so.1",
            "libpython3.so",
            "/opt/homebrew/lib/libpython3.12.dylib",
        ] {
            assert!(is_libpython(yes.as_bytes()), "{yes}");
        }
        for no in [
            "",
            "libc.so.6",
            "/usr/lib/libpython2.7.so.1.0",
            "/home/libpython3.12.so/other.so",
            "libpython3.12.a",
            "/usr/lib/python3.12/lib-dynload/_ctypes.cpython-312-x86_64-linux-gnu.so",
            "my_libpython3.so",
        ] {
            assert!(!is_libpython(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn libpypy_names() {
        assert!(is_libpypy(b"/opt/pypy/bin/libpypy3.10-c.so"));
        assert!(is_libpypy(b"libpypy-c.so"));
        assert!(!is_libpypy(b"libpython3.12.so"));
    }

    #[test]
    fn windows_names_are_complete() {
        let names = windows_dll_candidates();
        let at = |n: &str| {
            names
                .iter()
                .position(|x| x == n)
                .unwrap_or_else(|| panic!("{n} missing"))
        };
        for n in [
            "python38.dll",
            "python38_d.dll",
            "python313.dll",
            "python313t.dll",
            "python313_d.dll",
            "python313t_d.dll",
            "python314t.dll",
            "python316.dll",
            "python316t.dll",
            "python320t_d.dll",
            "python399.dll",
            "python3.dll",
            "python3t.dll",
            "python3_d.dll",
            "python3t_d.dll",
        ] {
            at(n);
        }
        // No duplicates, nothing before 3.8.
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len());
        assert!(!names.iter().any(|n| n == "python37.dll"));
        // Newer versions first; every versioned DLL before any forwarder.
        assert!(at("python316.dll") < at("python313.dll"));
        let first_forwarder = names.iter().position(|n| is_forwarder_dll(n)).unwrap();
        assert_eq!(first_forwarder, names.len() - 4);
        assert!(
            names[..first_forwarder]
                .iter()
                .all(|n| !is_forwarder_dll(n))
        );
        assert!(is_forwarder_dll("PYTHON3.DLL"));
        assert!(!is_forwarder_dll("python313t.dll"));
    }
}
