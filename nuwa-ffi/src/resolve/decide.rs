//! The version policy: from the symbols of one object, which functions a
//! block calls, and how ([`Plan`]). Pure logic: it reads symbols through
//! [`Lookup`] and calls nothing, so the tests below run it on fake symbol
//! tables, for every version family and every target ([`Platform`]).

use core::ffi::{CStr, c_char, c_ulong, c_void};

use super::report::{HeldCheck, State};
#[cfg(any(test, nuwa_restore_shim))]
use crate::capi::IsFinalizingFn;
use crate::capi::{GetThreadStateFn, SwapFn};
use crate::plan::{Plan, Way};
use crate::shutdown::{Exit, TakeBack};

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

/// What the build target does that the policy depends on, fixed at compile
/// time ([`Platform::THIS`], from `build.rs`'s cfgs): a build has only its
/// own target's variant, so the policy's branches for other targets are not
/// compiled. Test builds have all four, so that the policy of every target
/// is tested on any host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Platform {
    /// `pthread_exit` unwinds the stack (glibc, FreeBSD), so the C frame of
    /// `restore_shim.c` can park a thread CPython ends at shutdown.
    #[cfg(any(test, nuwa_exit_unwinds))]
    ExitUnwinds,
    /// `pthread_exit` just ends the thread (musl, macOS, the other BSDs).
    #[cfg(any(test, nuwa_check_finalizing))]
    ExitEnds,
    /// Windows: the thread exit does not unwind, and threads have a
    /// last-error value that `PyEval_RestoreThread` keeps and
    /// `PyThreadState_Swap` does not (`GetLastError`).
    #[cfg(any(test, windows))]
    Windows,
    /// Anything else (no C frame: wasm).
    #[cfg(any(test, not(any(nuwa_restore_shim, windows))))]
    Other,
}

impl Platform {
    /// The build target's.
    #[cfg(nuwa_exit_unwinds)]
    pub(crate) const THIS: Platform = Platform::ExitUnwinds;
    /// The build target's.
    #[cfg(nuwa_check_finalizing)]
    pub(crate) const THIS: Platform = Platform::ExitEnds;
    /// The build target's.
    #[cfg(windows)]
    pub(crate) const THIS: Platform = Platform::Windows;
    /// The build target's.
    #[cfg(not(any(nuwa_restore_shim, windows)))]
    pub(crate) const THIS: Platform = Platform::Other;
}

/// Decides, from the symbols present in one object, which functions to use
/// on this target.
pub(crate) fn decide(symbols: &dyn Lookup) -> State {
    decide_on(symbols, Platform::THIS)
}

/// [`decide`] for `platform`.
#[cfg_attr(not(test), inline)]
fn decide_on(symbols: &dyn Lookup, platform: Platform) -> State {
    let save = symbols.lookup(GIL_PAIR[0]);
    let restore = symbols.lookup(GIL_PAIR[1]);
    let (Some(save), Some(restore)) = (save, restore) else {
        return State::NotFound {
            pypy: symbols.lookup(PYPY_MARK).is_some(),
        };
    };
    let version = read_version(symbols);

    // The getter of the current state, and, where that state is
    // process-global, `PyGILState_GetThisThreadState` to compare it with.
    // The name this version defines is asked for first (a name the object
    // lacks costs the loader a search of every object in the scope and an
    // error message), the other one after it.
    let public = || symbols.lookup(c"PyThreadState_GetUnchecked");
    let private = || symbols.lookup(c"_PyThreadState_UncheckedGet");
    let older = before(version, (3, 13));
    let (current, held_check, this_thread) = if !older && let Some(f) = public() {
        // 3.13 and later: the public name, thread-local.
        let symbol = "PyThreadState_GetUnchecked";
        (f, HeldCheck::ThreadLocal { symbol }, None)
    } else if let Some(f) = private() {
        let symbol = "_PyThreadState_UncheckedGet";
        match version {
            // 3.12: thread-local.
            Some(v) if v >= (3, 12) => (f, HeldCheck::ThreadLocal { symbol }, None),
            // 3.11 and older (or unknown): process-global, compare.
            _ => {
                let Some(t) = symbols.lookup(c"PyGILState_GetThisThreadState") else {
                    return State::NoHeldCheck {
                        version,
                        missing: &["PyGILState_GetThisThreadState"],
                    };
                };
                // SAFETY: the address of `PyGILState_GetThisThreadState`,
                // whose C signature is `PyThreadState *(void)`.
                let this_thread = unsafe { as_fn::<GetThreadStateFn>(t) };
                (
                    f,
                    HeldCheck::CompareWithThisThread { symbol },
                    Some(this_thread),
                )
            }
        }
    } else if older && let Some(f) = public() {
        // The public name on a version said to be older (no such CPython):
        // thread-local, as it is documented.
        let symbol = "PyThreadState_GetUnchecked";
        (f, HeldCheck::ThreadLocal { symbol }, None)
    } else {
        return State::NoHeldCheck {
            version,
            missing: &["PyThreadState_GetUnchecked", "_PyThreadState_UncheckedGet"],
        };
    };

    // Only where a way may swap (see `choose_way`): 3.12 and later, with
    // the thread-local getter.
    let may_swap = this_thread.is_none() && version.is_some_and(|v| v >= (3, 12));
    let swap = may_swap
        .then(|| symbols.lookup(c"PyThreadState_Swap"))
        .flatten()
        .map(|f| {
            // SAFETY: the address of `PyThreadState_Swap`, whose C signature
            // is `PyThreadState *(PyThreadState *)`.
            unsafe { as_fn::<SwapFn>(f) }
        });
    let way = choose_way(this_thread, swap, version, platform);
    let exit = choose_exit(symbols, version, platform);
    // SAFETY: each pointer is the non-null address of the CPython function
    // of that name, whose C signature is the one its type spells out.
    let plan = unsafe {
        Plan::new(
            way,
            as_fn(current),
            as_fn(save),
            as_fn(restore),
            TakeBack::new(exit),
            symbols.lookup(c"PyErr_CheckSignals").map(|f| as_fn(f)),
        )
    };
    State::Ready {
        version,
        held_check,
        plan,
    }
}

/// How blocks release and take the GIL back on `version`: see [`Way`] for
/// why each family gets its way.
fn choose_way(
    this_thread: Option<GetThreadStateFn>,
    swap: Option<SwapFn>,
    version: Option<(u8, u8)>,
    platform: Platform,
) -> Way {
    if let Some(this_thread) = this_thread {
        return Way::Compare { this_thread };
    }
    // Before 3.12 `PyThreadState_Swap` only swaps the pointer, so it cannot
    // release; from 3.12 on it detaches only an attached state.
    let (Some(swap), Some(version)) = (swap, version) else {
        return Way::Local;
    };
    if version < (3, 12) {
        return Way::Local;
    }
    if let Some(way) = swap_in(swap, version, platform) {
        return way;
    }
    if version <= (3, 13) {
        Way::SwapOut { swap }
    } else {
        Way::Local
    }
}

/// The way of 3.13 and later where `PyThreadState_Swap` can take the GIL
/// back (not on Windows, see [`Way::SwapOut`]): on every block on 3.13, only
/// to repair a state left attached on 3.14 and later.
fn swap_in(swap: SwapFn, version: (u8, u8), platform: Platform) -> Option<Way> {
    #[cfg(any(test, not(windows)))]
    if version >= (3, 13) && !platform.keeps_last_error() {
        return Some(match version {
            (3, 13) => Way::SwapBoth { swap },
            _ => Way::LocalRepair { swap },
        });
    }
    #[cfg(not(any(test, not(windows))))]
    let _ = (swap, version, platform);
    None
}

impl Platform {
    /// Whether threads have a last-error value that `PyEval_RestoreThread`
    /// keeps and `PyThreadState_Swap` does not.
    #[cfg(any(test, not(windows)))]
    fn keeps_last_error(self) -> bool {
        #[cfg(test)]
        return self == Platform::Windows;
        #[cfg(not(test))]
        false
    }
}

/// What the take-back does about interpreter shutdown on `version` and
/// `platform` (see [`Exit`]).
#[allow(
    unreachable_patterns,
    reason = "outside tests, `Platform` has only the target's variant"
)]
fn choose_exit(symbols: &dyn Lookup, version: Option<(u8, u8)>, platform: Platform) -> Exit {
    // 3.14 and later hang a thread that takes the GIL back during
    // finalization instead of ending it (gh-87135): nothing to catch.
    if version.is_some_and(|v| v >= (3, 14)) {
        return Exit::Direct;
    }
    match platform {
        #[cfg(any(test, nuwa_exit_unwinds))]
        Platform::ExitUnwinds => Exit::Frame {
            is_finalizing: is_finalizing(symbols, version),
        },
        // `pthread_exit` does not unwind here: the C frame would never act.
        #[cfg(any(test, nuwa_check_finalizing))]
        Platform::ExitEnds => {
            is_finalizing(symbols, version).map_or(Exit::Direct, Exit::CheckFinalizing)
        }
        _ => {
            let _ = symbols;
            Exit::Direct
        }
    }
}

/// `Py_IsFinalizing` (3.13+) or `_Py_IsFinalizing` (3.8-3.12), if defined
/// (the name of `version` asked for first).
#[cfg(any(test, nuwa_restore_shim))]
fn is_finalizing(symbols: &dyn Lookup, version: Option<(u8, u8)>) -> Option<IsFinalizingFn> {
    let (first, then) = if before(version, (3, 13)) {
        (c"_Py_IsFinalizing", c"Py_IsFinalizing")
    } else {
        (c"Py_IsFinalizing", c"_Py_IsFinalizing")
    };
    let f = symbols.lookup(first).or_else(|| symbols.lookup(then))?;
    // SAFETY: `Py_IsFinalizing` (3.13) and `_Py_IsFinalizing` (3.8-3.12)
    // have the C signature `int (void)`.
    Some(unsafe { as_fn::<IsFinalizingFn>(f) })
}

/// Whether `version` is known and older than `than`.
fn before(version: Option<(u8, u8)>, than: (u8, u8)) -> bool {
    version.is_some_and(|v| v < than)
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

/// Parses the leading `major.minor` of a version string: two numbers of one
/// to three digits, each ended by `.`, ` `, `+` or the end of the text.
pub(crate) fn parse_version(text: &[u8]) -> Option<(u8, u8)> {
    let mut numbers = [0u16; 2];
    let mut i = 0;
    for number in &mut numbers {
        let start = i;
        while let Some(&digit @ b'0'..=b'9') = text.get(i) {
            if i - start == 3 {
                return None;
            }
            *number = *number * 10 + u16::from(digit - b'0');
            i += 1;
        }
        if i == start || !matches!(text.get(i), None | Some(b'.' | b' ' | b'+')) {
            return None;
        }
        i += 1;
    }
    Some((
        u8::try_from(numbers[0]).ok()?,
        u8::try_from(numbers[1]).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::super::report::{Details, Place, Resolution, RestorePath, Status, Via};
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

    use Platform::{ExitEnds as MUSL, ExitUnwinds as GLIBC, Other as WASM, Windows as WINDOWS};

    fn resolve_on(names: &[&'static str], version: Option<u64>, platform: Platform) -> Resolution {
        let all: &'static [&'static str] = Box::leak(names.to_vec().into_boxed_slice());
        Resolution {
            state: decide_on(&Fake(all, version), platform),
            via: Via::GlobalScope,
            place: Place::Object(c"a fake process".into()),
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

    /// The symbols a real libpython has: 3.8-3.12 (the private getter) and
    /// 3.13 and later (the public one). Every version defines
    /// `PyThreadState_Swap`; before 3.12 it cannot release.
    const PRIVATE: &[&str] = &[
        "PyEval_SaveThread",
        "PyEval_RestoreThread",
        "_PyThreadState_UncheckedGet",
        "PyGILState_GetThisThreadState",
        "PyThreadState_Swap",
        "_Py_IsFinalizing",
        "PyErr_CheckSignals",
    ];
    const PUBLIC: &[&str] = &[
        "PyEval_SaveThread",
        "PyEval_RestoreThread",
        "PyThreadState_GetUnchecked",
        "PyGILState_GetThisThreadState",
        "PyThreadState_Swap",
        "Py_IsFinalizing",
        "PyErr_CheckSignals",
    ];

    /// The fake address `Fake` hands out for `name`.
    fn addr(names: &[&str], name: &str) -> usize {
        0x1000 + 16 * names.iter().position(|s| *s == name).unwrap()
    }

    /// `names` without `gone`.
    fn without(names: &[&'static str], gone: &str) -> Vec<&'static str> {
        names.iter().copied().filter(|s| *s != gone).collect()
    }

    /// What a plan does, by name: its way (release and take-back), and its
    /// shutdown handling. Checks on the way that each function pointer is
    /// the address of the symbol it stands for.
    fn shape(names: &[&str], r: &Resolution) -> (&'static str, RestorePath) {
        let plan = r.plan().unwrap_or_else(|| panic!("cannot release: {r}"));
        let at = |name| addr(names, name);
        assert_eq!(plan.save as usize, at("PyEval_SaveThread"));
        assert_eq!(plan.restore as usize, at("PyEval_RestoreThread"));
        let getter = match r.held_check() {
            HeldCheck::ThreadLocal { symbol } | HeldCheck::CompareWithThisThread { symbol } => {
                symbol
            }
            HeldCheck::Unavailable => unreachable!(),
        };
        assert_eq!(plan.current as usize, at(getter));
        assert_eq!(
            plan.check_signals.map(|f| f as usize),
            names
                .contains(&"PyErr_CheckSignals")
                .then(|| at("PyErr_CheckSignals"))
        );
        let swap = || at("PyThreadState_Swap");
        let way = match plan.way() {
            Way::Compare { this_thread } => {
                assert_eq!(this_thread as usize, at("PyGILState_GetThisThreadState"));
                "compare, save, restore"
            }
            Way::Local => "thread-local check, save, restore",
            Way::SwapOut { swap: f } => {
                assert_eq!(f as usize, swap());
                "swap out, restore"
            }
            Way::SwapBoth { swap: f } => {
                assert_eq!(f as usize, swap());
                "swap out, swap in"
            }
            Way::LocalRepair { swap: f } => {
                assert_eq!(f as usize, swap());
                "thread-local check, save, restore, repair by swap"
            }
        };
        // The accessors the blocks use agree with the variant.
        use crate::plan::{Back, Out};
        assert_eq!(
            matches!(plan.out(), Out::Swap(_)),
            way.starts_with("swap out")
        );
        assert_eq!(
            matches!(plan.back(), Back::Swap(_)),
            way.ends_with("swap in")
        );
        assert_eq!(plan.this_thread().is_some(), way.starts_with("compare"));
        let finalizing = ["Py_IsFinalizing", "_Py_IsFinalizing"]
            .into_iter()
            .find(|name| names.contains(name))
            .map(at);
        match plan.take_back.exit() {
            Exit::Frame { is_finalizing } => {
                assert_eq!(is_finalizing.map(|f| f as usize), finalizing);
            }
            Exit::CheckFinalizing(is_finalizing) => {
                assert_eq!(Some(is_finalizing as usize), finalizing);
            }
            Exit::Direct => {}
        }
        (way, r.restore_path().unwrap())
    }

    #[test]
    fn the_plan_by_version_family_and_target() {
        use RestorePath::{CheckFinalizing as CHECK, Direct as DIRECT, ParkingFrame as FRAME};
        const COMPARE: &str = "compare, save, restore";
        const LOCAL: &str = "thread-local check, save, restore";
        const SWAP_OUT: &str = "swap out, restore";
        const SWAP_BOTH: &str = "swap out, swap in";
        const LOCAL_REPAIR: &str = "thread-local check, save, restore, repair by swap";
        let targets = [GLIBC, MUSL, WINDOWS, WASM];
        // Per version: the symbols, then per target (in the order above)
        // the way and the shutdown handling.
        #[allow(clippy::type_complexity, reason = "a table")]
        let table: &[(u64, &[&str], [(&str, RestorePath); 4])] = &[
            (
                0x030812f0,
                PRIVATE,
                [
                    (COMPARE, FRAME),
                    (COMPARE, CHECK),
                    (COMPARE, DIRECT),
                    (COMPARE, DIRECT),
                ],
            ),
            (
                0x030912f0,
                PRIVATE,
                [
                    (COMPARE, FRAME),
                    (COMPARE, CHECK),
                    (COMPARE, DIRECT),
                    (COMPARE, DIRECT),
                ],
            ),
            (
                0x030a0df0,
                PRIVATE,
                [
                    (COMPARE, FRAME),
                    (COMPARE, CHECK),
                    (COMPARE, DIRECT),
                    (COMPARE, DIRECT),
                ],
            ),
            (
                0x030b07f0,
                PRIVATE,
                [
                    (COMPARE, FRAME),
                    (COMPARE, CHECK),
                    (COMPARE, DIRECT),
                    (COMPARE, DIRECT),
                ],
            ),
            (
                0x030c01f0,
                PRIVATE,
                [
                    (SWAP_OUT, FRAME),
                    (SWAP_OUT, CHECK),
                    (SWAP_OUT, DIRECT),
                    (SWAP_OUT, DIRECT),
                ],
            ),
            (
                0x030d00f0,
                PUBLIC,
                [
                    (SWAP_BOTH, FRAME),
                    (SWAP_BOTH, CHECK),
                    (SWAP_OUT, DIRECT),
                    (SWAP_BOTH, DIRECT),
                ],
            ),
            (
                0x030e00f0,
                PUBLIC,
                [
                    (LOCAL_REPAIR, DIRECT),
                    (LOCAL_REPAIR, DIRECT),
                    (LOCAL, DIRECT),
                    (LOCAL_REPAIR, DIRECT),
                ],
            ),
            (
                0x030f00a0,
                PUBLIC,
                [
                    (LOCAL_REPAIR, DIRECT),
                    (LOCAL_REPAIR, DIRECT),
                    (LOCAL, DIRECT),
                    (LOCAL_REPAIR, DIRECT),
                ],
            ),
        ];
        for &(hex, names, expected) in table {
            for (platform, expected) in targets.into_iter().zip(expected) {
                let r = resolve_on(names, Some(hex), platform);
                assert_eq!(r.status(), Status::Ready, "{hex:x} on {platform:?}");
                assert_eq!(shape(names, &r), expected, "{hex:x} on {platform:?}");
            }
        }
    }

    #[test]
    fn missing_symbols_fall_back_to_the_safe_way() {
        let targets = [GLIBC, MUSL, WINDOWS, WASM];
        // No `PyThreadState_Swap` (an object that hides it): save and
        // restore, on every version and target.
        for (names, hex) in [
            (PRIVATE, 0x030c01f0),
            (PUBLIC, 0x030d00f0),
            (PUBLIC, 0x030e00f0),
        ] {
            let names = without(names, "PyThreadState_Swap");
            for platform in targets {
                let r = resolve_on(&names, Some(hex), platform);
                let (way, _) = shape(&names, &r);
                assert_eq!(
                    way, "thread-local check, save, restore",
                    "{hex:x} {platform:?}"
                );
            }
        }
        // A version that cannot be read: the swap is not used; the private
        // getter is taken for process-global (as on 3.11 and older), the
        // public one for thread-local; the exit is that of 3.13 and older.
        for platform in targets {
            let r = resolve_on(PRIVATE, None, platform);
            assert_eq!(shape(PRIVATE, &r).0, "compare, save, restore");
            let r = resolve_on(PUBLIC, None, platform);
            assert_eq!(shape(PUBLIC, &r).0, "thread-local check, save, restore");
        }
        assert_eq!(
            resolve_on(PUBLIC, None, GLIBC).restore_path(),
            Some(RestorePath::ParkingFrame)
        );
        // The public getter on a version before 3.12 (no such CPython): the
        // swap still does not release there.
        let r = resolve_on(PUBLIC, Some(0x030b07f0), GLIBC);
        assert_eq!(shape(PUBLIC, &r).0, "thread-local check, save, restore");
        // No `Py_IsFinalizing`: nothing to check with where the exit does
        // not unwind; the C frame still parks where it does, but a part
        // cannot tell finalization (shape checks `is_finalizing` is None).
        for (names, hex) in [(PRIVATE, 0x030b07f0), (PUBLIC, 0x030d00f0)] {
            let names: Vec<_> = without(names, "Py_IsFinalizing")
                .into_iter()
                .filter(|s| *s != "_Py_IsFinalizing")
                .collect();
            let r = resolve_on(&names, Some(hex), MUSL);
            assert_eq!(shape(&names, &r).1, RestorePath::Direct, "{hex:x}");
            let r = resolve_on(&names, Some(hex), GLIBC);
            assert_eq!(shape(&names, &r).1, RestorePath::ParkingFrame, "{hex:x}");
        }
        // No `PyErr_CheckSignals`: blocks still release (shape checks it
        // is None).
        let names = without(PUBLIC, "PyErr_CheckSignals");
        let r = resolve_on(&names, Some(0x030d00f0), GLIBC);
        assert_eq!(shape(&names, &r).0, "swap out, swap in");
        // No way to check: nothing is released, on any target.
        for platform in targets {
            let names = without(PRIVATE, "PyGILState_GetThisThreadState");
            let r = resolve_on(&names, Some(0x030b07f0), platform);
            assert_eq!(r.status(), Status::FoundWithoutHeldCheck);
            let names = without(PUBLIC, "PyThreadState_GetUnchecked");
            let r = resolve_on(&names, Some(0x030d00f0), platform);
            assert_eq!(r.status(), Status::FoundWithoutHeldCheck);
            let r = resolve_on(&without(PUBLIC, "PyEval_RestoreThread"), None, platform);
            assert_eq!(r.status(), Status::NotFound);
            let pypy = ["PyPyEval_SaveThread", "PyPyEval_RestoreThread"];
            let r = resolve_on(&pypy, Some(0x030a0df0), platform);
            assert_eq!(r.status(), Status::PyPyNotSupported);
        }
    }

    /// `Fake`, recording the names asked for that it lacks; with a
    /// `Py_GetVersion` that says 3.10 where it has no `Py_Version`.
    struct Asked(Fake, core::cell::RefCell<Vec<String>>);

    extern "C" fn version_3_10() -> *const c_char {
        c"3.10.13 (main, Jan 1 2024)".as_ptr()
    }

    impl Lookup for Asked {
        fn lookup(&self, name: &CStr) -> Option<*mut c_void> {
            if self.0.1.is_none() && name == c"Py_GetVersion" {
                return Some(version_3_10 as GetVersionFn as *mut c_void);
            }
            let found = self.0.lookup(name);
            if found.is_none() {
                self.1.borrow_mut().push(name.to_str().unwrap().into());
            }
            found
        }
    }

    /// A name the object lacks costs the loader a search of every object in
    /// the scope and an error message: the first lookup asks for none but
    /// `Py_Version` where the version must be read from `Py_GetVersion`
    /// (3.8-3.10), and for nothing it does not use.
    #[test]
    fn the_names_of_the_version_found_are_asked_for_first() {
        let private = without(PRIVATE, "PyThreadState_Swap");
        for (names, hex, lacked, unused) in [
            // 3.8-3.10: no `Py_Version`; the version is `Py_GetVersion`'s.
            (
                PRIVATE,
                None,
                &["Py_Version"][..],
                Some("PyThreadState_Swap"),
            ),
            (&private, Some(0x030b07f0), &[][..], None),
            (
                PRIVATE,
                Some(0x030b07f0),
                &[][..],
                Some("PyThreadState_Swap"),
            ),
            (
                PRIVATE,
                Some(0x030c01f0),
                &[][..],
                Some("PyGILState_GetThisThreadState"),
            ),
            (
                PUBLIC,
                Some(0x030d00f0),
                &[][..],
                Some("PyGILState_GetThisThreadState"),
            ),
        ] {
            let all: &'static [&'static str] = Box::leak(names.to_vec().into_boxed_slice());
            let asked = Asked(Fake(all, hex), Default::default());
            for platform in [GLIBC, MUSL, WINDOWS, WASM] {
                asked.1.borrow_mut().clear();
                let state = decide_on(&asked, platform);
                assert!(matches!(state, State::Ready { .. }), "{hex:x?}");
                assert_eq!(*asked.1.borrow(), lacked, "{hex:x?} on {platform:?}");
            }
            if let Some(unused) = unused {
                let rest = without(all, unused);
                let all: &'static [&'static str] = Box::leak(rest.into_boxed_slice());
                for platform in [GLIBC, MUSL, WINDOWS, WASM] {
                    let with = resolve_on(names, hex, platform);
                    let r = resolve_on(all, hex, platform);
                    assert_eq!(shape(names, &with), shape(all, &r), "{unused} {hex:x?}");
                }
            }
        }
        // Both getters on a version before 3.13 (no such CPython): the
        // private one, that version's.
        let both = [PRIVATE, &["PyThreadState_GetUnchecked"]].concat();
        let r = resolve(&both, Some(0x030b07f0));
        assert_eq!(shape(&both, &r).0, "compare, save, restore");
    }

    #[test]
    fn this_target_follows_its_own_policy() {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        assert_eq!(Platform::THIS, GLIBC);
        #[cfg(any(target_env = "musl", target_os = "macos"))]
        assert_eq!(Platform::THIS, MUSL);
        #[cfg(windows)]
        assert_eq!(Platform::THIS, WINDOWS);
        for (names, hex) in [
            (PRIVATE, 0x030b07f0),
            (PRIVATE, 0x030c01f0),
            (PUBLIC, 0x030d00f0),
            (PUBLIC, 0x030e00f0),
        ] {
            let this = Resolution {
                state: decide(&Fake(names, Some(hex))),
                via: Via::GlobalScope,
                place: Place::Embedder,
            };
            let on = resolve_on(names, Some(hex), Platform::THIS);
            assert_eq!(shape(names, &this), shape(names, &on), "{hex:x}");
        }
    }

    #[test]
    fn version_strings_parse() {
        assert_eq!(parse_version(b"3.10.13 (main, Jan 1 2024)"), Some((3, 10)));
        assert_eq!(parse_version(b"3.9.18+ (heads/3.9)"), Some((3, 9)));
        assert_eq!(parse_version(b"3.13"), Some((3, 13)));
        assert_eq!(parse_version(b"3"), None);
        assert_eq!(parse_version(b"x.y"), None);
        assert_eq!(parse_version(b""), None);
        assert_eq!(parse_version(b"3 12"), Some((3, 12)));
        assert_eq!(parse_version(b"3.13t"), None);
        assert_eq!(parse_version(b"3.1234"), None);
        assert_eq!(parse_version(b"3.256"), None);
        assert_eq!(parse_version(b"3.255"), Some((3, 255)));
        assert_eq!(parse_version(b".3"), None);
    }
}
