//! The version decision: from the symbols of one object, which functions
//! to use, and how.

use core::ffi::{CStr, c_char, c_ulong, c_void};

use super::report::{HeldCheck, State};
use super::{Api, Check, Platform, Reacquire, Release, Restore};

/// A place to look symbols up in: one object (and, for a handle, what it
/// depends on).
pub(crate) trait Lookup {
    /// The address of `name` (NUL-terminated), if present and not null.
    fn lookup(&self, name: &CStr) -> Option<*mut c_void>;
}

type GetVersionFn = unsafe extern "C" fn() -> *const c_char;

/// The GIL pair, which says whether CPython is there at all.
pub(crate) const GIL_PAIR: [&CStr; 2] = [c"PyEval_SaveThread", c"PyEval_RestoreThread"];

/// A symbol that only PyPy's C API emulation defines (PyPy prefixes every
/// C API name with `PyPy`).
pub(crate) const PYPY_MARK: &CStr = c"PyPyEval_SaveThread";

/// Decides, from the symbols present in one object, which functions to use.
pub(crate) fn decide(symbols: &dyn Lookup, platform: Platform) -> State {
    let save = symbols.lookup(GIL_PAIR[0]);
    let restore = symbols.lookup(GIL_PAIR[1]);
    let (Some(save), Some(restore)) = (save, restore) else {
        return State::NotFound {
            pypy: symbols.lookup(PYPY_MARK).is_some(),
        };
    };
    let version = read_version(symbols);
    let this_thread = symbols.lookup(c"PyGILState_GetThisThreadState");

    let (current, held_check, check) =
        if let Some(f) = symbols.lookup(c"PyThreadState_GetUnchecked") {
            // 3.13 and later: the public name, thread-local.
            let symbol = "PyThreadState_GetUnchecked";
            (f, HeldCheck::ThreadLocal { symbol }, Check::ThreadLocal)
        } else if let Some(f) = symbols.lookup(c"_PyThreadState_UncheckedGet") {
            let symbol = "_PyThreadState_UncheckedGet";
            match (version, this_thread) {
                // 3.12: thread-local.
                (Some(v), _) if v >= (3, 12) => {
                    (f, HeldCheck::ThreadLocal { symbol }, Check::ThreadLocal)
                }
                // 3.11 and older (or unknown): process-global, compare.
                (_, Some(t)) => {
                    // SAFETY: the address of `PyGILState_GetThisThreadState`,
                    // whose C signature is `PyThreadState *(void)`.
                    let this_thread = unsafe { as_fn::<super::GetThreadStateFn>(t) };
                    (
                        f,
                        HeldCheck::CompareWithThisThread { symbol },
                        Check::Compare { this_thread },
                    )
                }
                (_, None) => {
                    return State::NoHeldCheck {
                        version,
                        missing: &["PyGILState_GetThisThreadState"],
                    };
                }
            }
        } else {
            return State::NoHeldCheck {
                version,
                missing: &["PyThreadState_GetUnchecked", "_PyThreadState_UncheckedGet"],
            };
        };

    let reacquire = choose_reacquire(symbols, version, platform);
    // 3.12 and later: `PyThreadState_Swap` detaches only an attached state
    // (and takes the GIL with the one it attaches); before 3.12 it only
    // swaps the pointer, so it cannot release.
    let swap = symbols
        .lookup(c"PyThreadState_Swap")
        .filter(|_| matches!(check, Check::ThreadLocal) && version.is_some_and(|v| v >= (3, 12)));
    let (release, restore_kind) = choose_path(swap, version, reacquire, platform);
    // SAFETY: each pointer is the non-null address of the CPython function
    // of that name, whose C signature is the one its type spells out.
    let api = unsafe {
        Api {
            release,
            restore_kind,
            save: as_fn(save),
            restore: as_fn(restore),
            current: as_fn(current),
            check,
            reacquire,
            restore_entry: crate::cpython::restore_entry(reacquire),
            check_signals: symbols
                .lookup(c"PyErr_CheckSignals")
                .map(|f| as_fn::<super::CheckSignalsFn>(f)),
            #[cfg(nuwa_exit_unwinds)]
            is_finalizing: symbols
                .lookup(c"Py_IsFinalizing")
                .or_else(|| symbols.lookup(c"_Py_IsFinalizing"))
                .map(|f| as_fn::<super::IsFinalizingFn>(f)),
        }
    };
    State::Ready {
        version,
        held_check,
        api,
    }
}

/// How blocks release and take the GIL back on `version`: the cheapest of
/// the ways that keep the guarantees, by the instruction counts in
/// BENCHMARKS.md.
fn choose_path(
    swap: Option<*mut c_void>,
    version: Option<(u8, u8)>,
    reacquire: Reacquire,
    platform: Platform,
) -> (Release, Restore) {
    // SAFETY: `swap` is the address of `PyThreadState_Swap`, whose C
    // signature is `PyThreadState *(PyThreadState *)`.
    let swap = swap.map(|f| unsafe { as_fn::<super::SwapFn>(f) });
    let (Some(swap), Some(version)) = (swap, version) else {
        return (Release::HeldCheck, Restore::Checked);
    };
    let release = if version <= (3, 13) {
        Release::Swap(swap)
    } else {
        Release::HeldCheck
    };
    // `PyEval_RestoreThread` keeps the thread's last-error value
    // (`GetLastError`) across the wait for the GIL; the swap does not.
    let restore = if version >= (3, 13) && !platform.last_error {
        Restore::Swap {
            swap,
            entry: crate::cpython::swap_entry(reacquire),
        }
    } else {
        Restore::Checked
    };
    (release, restore)
}

/// How blocks take the GIL back on `version` and this target.
fn choose_reacquire(
    symbols: &dyn Lookup,
    version: Option<(u8, u8)>,
    platform: Platform,
) -> Reacquire {
    // 3.14 and later hang a thread that takes the GIL back during
    // finalization instead of ending it (gh-87135): nothing to catch.
    if version.is_some_and(|v| v >= (3, 14)) {
        return Reacquire::Direct;
    }
    if platform.shim && platform.exit_unwinds {
        return Reacquire::Shim;
    }
    if platform.shim {
        // `pthread_exit` does not unwind here: the C frame would never act.
        let finalizing = symbols
            .lookup(c"Py_IsFinalizing")
            .or_else(|| symbols.lookup(c"_Py_IsFinalizing"));
        if let Some(f) = finalizing {
            // SAFETY: `Py_IsFinalizing` (3.13) and `_Py_IsFinalizing`
            // (3.8-3.12) have the C signature `int (void)`.
            return Reacquire::CheckFinalizing(unsafe { as_fn(f) });
        }
    }
    Reacquire::Direct
}

/// Reinterprets a symbol's address as a function pointer.
///
/// # Safety
///
/// `p` is the address of a function whose signature is `F`.
unsafe fn as_fn<F: Copy>(p: *mut c_void) -> F {
    const { assert!(size_of::<F>() == size_of::<*mut c_void>()) };
    // SAFETY: the caller's contract; `F` is a function pointer type of the
    // same size as a data pointer (checked above).
    unsafe { core::mem::transmute_copy::<*mut c_void, F>(&p) }
}

/// Reads `(major, minor)` from `Py_Version` (3.11+) or `Py_GetVersion()`.
fn read_version(symbols: &dyn Lookup) -> Option<(u8, u8)> {
    if let Some(p) = symbols.lookup(c"Py_Version") {
        // SAFETY: `Py_Version` is a `const unsigned long` with the version
        // packed as 0xMMmmPPRS (major, minor, patch, release level, serial).
        #[allow(clippy::useless_conversion, reason = "c_ulong is 32 bits on Windows")]
        let packed = u64::from(unsafe { *(p as *const c_ulong) });
        return Some(((packed >> 24) as u8, (packed >> 16) as u8));
    }
    let p = symbols.lookup(c"Py_GetVersion")?;
    // SAFETY: `Py_GetVersion` has this signature and returns a pointer to a
    // static NUL-terminated string such as "3.10.13 (main, ...)"; it may be
    // called before the interpreter is initialised.
    let text = unsafe {
        let get_version = as_fn::<GetVersionFn>(p);
        let s = get_version();
        if s.is_null() {
            return None;
        }
        CStr::from_ptr(s)
    };
    parse_version(text.to_bytes())
}

/// Parses the leading `major.minor` of a version string.
pub(crate) fn parse_version(text: &[u8]) -> Option<(u8, u8)> {
    let mut parts = text.split(|&b| b == b'.' || b == b' ' || b == b'+');
    let number = |part: Option<&[u8]>| -> Option<u8> {
        let digits = part?;
        if digits.is_empty() || digits.len() > 3 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        core::str::from_utf8(digits).ok()?.parse().ok()
    };
    Some((number(parts.next())?, number(parts.next())?))
}

#[cfg(test)]
mod tests {
    use super::super::report::{Resolution, RestorePath, Status, Via};
    use super::*;

    /// A fake process: named symbols at fake (never called) addresses.
    struct Fake(&'static [&'static str], Option<u64>);

    impl Lookup for Fake {
        fn lookup(&self, name: &CStr) -> Option<*mut c_void> {
            let name = name.to_str().unwrap();
            if name == "Py_Version" {
                return self
                    .1
                    .map(|v| Box::leak(Box::new(v as c_ulong)) as *mut c_ulong as *mut c_void);
            }
            self.0
                .iter()
                .position(|s| *s == name)
                .map(|i| (0x1000 + i * 16) as *mut c_void)
        }
    }

    const GIL: &[&str] = &["PyEval_SaveThread", "PyEval_RestoreThread"];
    const OLD: &[&str] = &[
        "PyEval_SaveThread",
        "PyEval_RestoreThread",
        "_PyThreadState_UncheckedGet",
        "PyGILState_GetThisThreadState",
        "PyThread_get_thread_ident",
        "_Py_IsFinalizing",
    ];

    const GLIBC: Platform = Platform {
        shim: true,
        exit_unwinds: true,
        last_error: false,
    };
    const MUSL: Platform = Platform {
        shim: true,
        exit_unwinds: false,
        last_error: false,
    };
    const WINDOWS: Platform = Platform {
        shim: false,
        exit_unwinds: false,
        last_error: true,
    };

    unsafe extern "C-unwind" fn fake_swap(
        state: crate::resolve::ThreadStatePtr,
    ) -> crate::resolve::ThreadStatePtr {
        state
    }

    #[test]
    fn the_swap_takes_the_gil_back_on_3_13_and_later_except_on_windows() {
        let swap = Some(fake_swap as *mut c_void);
        let restore =
            |version, platform| choose_path(swap, Some(version), Reacquire::Direct, platform).1;
        assert!(matches!(restore((3, 12), GLIBC), Restore::Checked));
        assert!(matches!(restore((3, 13), GLIBC), Restore::Swap { .. }));
        assert!(matches!(restore((3, 15), MUSL), Restore::Swap { .. }));
        // Windows: PyEval_RestoreThread keeps GetLastError(), the swap does not.
        assert!(matches!(restore((3, 13), WINDOWS), Restore::Checked));
        assert!(matches!(restore((3, 14), WINDOWS), Restore::Checked));
        assert!(matches!(
            choose_path(None, Some((3, 13)), Reacquire::Direct, GLIBC).1,
            Restore::Checked
        ));
    }

    fn resolve_on(names: &[&'static str], version: Option<u64>, platform: Platform) -> Resolution {
        let all: &'static [&'static str] = Box::leak(names.to_vec().into_boxed_slice());
        Resolution {
            state: decide(&Fake(all, version), platform),
            via: Via::GlobalScope,
            place: "a fake process".into(),
        }
    }

    fn resolve(names: &[&'static str], version: Option<u64>) -> Resolution {
        resolve_on(names, version, GLIBC)
    }

    #[test]
    fn nothing_found_means_no_python() {
        let r = resolve(&[], None);
        assert!(!r.python_found() && !r.can_release());
        assert_eq!(r.status(), Status::NotFound);
        assert_eq!(r.held_check(), HeldCheck::Unavailable);
        assert!(r.to_string().starts_with("no Python found"), "{r}");
    }

    #[test]
    fn pypy_is_named_not_supported() {
        let r = resolve(&["PyPyEval_SaveThread", "PyPyEval_RestoreThread"], None);
        assert_eq!(r.status(), Status::PyPyNotSupported);
        assert!(!r.python_found() && !r.can_release());
        assert!(r.to_string().contains("PyPy is not supported"), "{r}");
        assert!(!r.to_string().contains("no Python found"), "{r}");
    }

    #[test]
    fn python_3_13_uses_the_public_thread_local_getter() {
        let r = resolve(
            &[GIL[0], GIL[1], "PyThreadState_GetUnchecked"],
            Some(0x030d00f0),
        );
        assert!(r.can_release());
        assert_eq!(r.status(), Status::Ready);
        assert_eq!(r.version(), Some((3, 13)));
        let symbol = "PyThreadState_GetUnchecked";
        assert_eq!(r.held_check(), HeldCheck::ThreadLocal { symbol });
        assert_eq!(r.compares(), Some(false));
        assert_eq!(r.restore_path(), Some(RestorePath::ParkingFrame));
    }

    #[test]
    fn python_3_12_private_getter_is_thread_local() {
        let r = resolve(OLD, Some(0x030c01f0));
        let symbol = "_PyThreadState_UncheckedGet";
        assert_eq!(r.held_check(), HeldCheck::ThreadLocal { symbol });
        assert_eq!(r.compares(), Some(false));
    }

    #[test]
    fn python_3_8_to_3_11_compare_pointers_only() {
        let symbol = "_PyThreadState_UncheckedGet";
        // `OLD` names PyThread_get_thread_ident: it is not asked for. A
        // state's `thread_id` names the thread that made it, not the one
        // that uses it, so no fallback reads it.
        for hex in [0x030812f0, 0x030912f0, 0x030a0df0, 0x030b07f0] {
            for platform in [GLIBC, MUSL, WINDOWS] {
                let r = resolve_on(OLD, Some(hex), platform);
                assert_eq!(
                    r.held_check(),
                    HeldCheck::CompareWithThisThread { symbol },
                    "{hex:x}"
                );
                assert_eq!(r.compares(), Some(true));
                assert!(!r.to_string().contains("thread_id"), "{r}");
            }
        }
        // Unknown version: the same.
        let r = resolve(OLD, None);
        assert_eq!(r.version(), None);
        assert_eq!(r.held_check(), HeldCheck::CompareWithThisThread { symbol });
    }

    #[test]
    fn old_python_without_gilstate_getter_releases_nothing() {
        let r = resolve(
            &[GIL[0], GIL[1], "_PyThreadState_UncheckedGet"],
            Some(0x030b00f0),
        );
        assert!(r.python_found() && !r.can_release());
        assert_eq!(r.status(), Status::FoundWithoutHeldCheck);
        assert_eq!(r.missing(), ["PyGILState_GetThisThreadState"]);
        assert!(
            r.to_string()
                .contains("missing PyGILState_GetThisThreadState"),
            "{r}"
        );
    }

    #[test]
    fn renamed_getter_degrades_to_nothing_released() {
        // A future CPython without either getter: found, but never released.
        let r = resolve(
            &[GIL[0], GIL[1], "PyGILState_GetThisThreadState"],
            Some(0x030f00a0),
        );
        assert!(r.python_found() && !r.can_release());
        assert_eq!(r.held_check(), HeldCheck::Unavailable);
        assert_eq!(r.restore_path(), None);
    }

    #[test]
    fn half_the_gil_functions_is_no_python() {
        let r = resolve(
            &["PyEval_SaveThread", "PyThreadState_GetUnchecked"],
            Some(0x030d0000),
        );
        assert!(!r.python_found() && !r.can_release());
    }

    #[test]
    fn restore_path_by_version_and_target() {
        let new = &[
            GIL[0],
            GIL[1],
            "PyThreadState_GetUnchecked",
            "Py_IsFinalizing",
        ];
        let path = |names, hex, p| resolve_on(names, Some(hex), p).restore_path();
        // 3.14+ hangs the thread itself: no C frame anywhere.
        assert_eq!(path(new, 0x030e00f0, GLIBC), Some(RestorePath::Direct));
        assert_eq!(path(new, 0x030f00a0, MUSL), Some(RestorePath::Direct));
        // 3.13 and older: the C frame where pthread_exit unwinds, ...
        assert_eq!(
            path(new, 0x030d00f0, GLIBC),
            Some(RestorePath::ParkingFrame)
        );
        assert_eq!(
            path(OLD, 0x030812f0, GLIBC),
            Some(RestorePath::ParkingFrame)
        );
        // ... the finalizing check where it does not, ...
        assert_eq!(
            path(new, 0x030d00f0, MUSL),
            Some(RestorePath::CheckFinalizing)
        );
        assert_eq!(
            path(OLD, 0x030812f0, MUSL),
            Some(RestorePath::CheckFinalizing)
        );
        // ... and Windows, whose thread exit does not unwind.
        assert_eq!(path(new, 0x030d00f0, WINDOWS), Some(RestorePath::Direct));
        // Unknown version: the C frame (safe on every version).
        let r = resolve_on(OLD, None, GLIBC);
        assert_eq!(r.restore_path(), Some(RestorePath::ParkingFrame));
    }

    #[test]
    fn version_strings_parse() {
        assert_eq!(parse_version(b"3.10.13 (main, Jan 1 2024)"), Some((3, 10)));
        assert_eq!(parse_version(b"3.9.18+ (heads/3.9)"), Some((3, 9)));
        assert_eq!(parse_version(b"3.13"), Some((3, 13)));
        assert_eq!(parse_version(b"3"), None);
        assert_eq!(parse_version(b"x.y"), None);
        assert_eq!(parse_version(b""), None);
    }
}
