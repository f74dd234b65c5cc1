//! Finding CPython's functions at run time, once.

use core::ffi::{CStr, c_char, c_ulong, c_void};
use core::fmt;

use spin::Once;

/// CPython's `PyThreadState`, only ever handled by pointer.
pub(crate) type ThreadStatePtr = *mut c_void;

type SaveThreadFn = unsafe extern "C" fn() -> ThreadStatePtr;
/// `PyEval_RestoreThread` may end the thread with `pthread_exit` (a forced
/// unwind) during shutdown on CPython 3.13 and older, hence `C-unwind`.
pub(crate) type RestoreThreadFn = unsafe extern "C-unwind" fn(ThreadStatePtr);
type GetThreadStateFn = unsafe extern "C" fn() -> ThreadStatePtr;
type GetVersionFn = unsafe extern "C" fn() -> *const c_char;

/// The functions the fast path calls.
pub(crate) struct Api {
    pub(crate) save: SaveThreadFn,
    pub(crate) restore: RestoreThreadFn,
    /// The thread state that holds the GIL: the caller's own on 3.12 and
    /// later, the GIL holder's (whichever thread that is) on 3.11 and older.
    pub(crate) current: GetThreadStateFn,
    /// `PyGILState_GetThisThreadState`, on 3.11 and older only: `current`
    /// is the caller's own state only if it equals this.
    pub(crate) this_thread: Option<GetThreadStateFn>,
}

/// How nuwa tells whether the calling thread holds the GIL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeldCheck {
    /// CPython 3.12 and later: the current thread state, read with the named
    /// function, is thread-local, so "not null" means "this thread holds it".
    ThreadLocal {
        /// `PyThreadState_GetUnchecked` (3.13+) or `_PyThreadState_UncheckedGet` (3.12).
        symbol: &'static str,
    },
    /// CPython 3.11 and older: the current thread state names the GIL holder,
    /// whichever thread it is, so it is compared with this thread's own state
    /// (`PyGILState_GetThisThreadState`). A thread running on a state that the
    /// GIL-state API does not know (a subinterpreter's, on these versions)
    /// therefore releases nothing: safe, but without parallelism.
    CompareWithThisThread {
        /// `_PyThreadState_UncheckedGet`.
        symbol: &'static str,
    },
    /// No way to check was found: nothing is ever released.
    Unavailable,
}

/// What [`init`](crate::init) found in the process.
///
/// Its `Display` form is one line for logs, for example
/// `CPython 3.12 found: held check _PyThreadState_UncheckedGet (thread-local)`.
pub struct Resolution {
    api: Option<Api>,
    version: Option<(u8, u8)>,
    held_check: HeldCheck,
    missing: &'static [&'static str],
    python_found: bool,
    source: &'static str,
}

impl Resolution {
    /// Whether CPython's GIL functions were found in the process.
    ///
    /// They are found as soon as libpython is loaded, whether or not the
    /// interpreter is initialised (yet, or still): a block releases only on a
    /// thread that holds the GIL at that moment, which
    /// [`gil_is_held`](crate::gil_is_held) tells.
    pub fn python_found(&self) -> bool {
        self.python_found
    }

    /// Whether blocks can release the GIL: Python was found along with a way
    /// to check that the GIL is held. They do release on the threads that
    /// hold it.
    pub fn can_release(&self) -> bool {
        self.api.is_some()
    }

    /// The interpreter's `(major, minor)` version, if it could be read.
    pub fn version(&self) -> Option<(u8, u8)> {
        self.version
    }

    /// How the calling thread's hold on the GIL is checked.
    pub fn held_check(&self) -> HeldCheck {
        self.held_check
    }

    /// Where the symbols were looked up (for example `the process (dlsym)`).
    pub fn source(&self) -> &'static str {
        self.source
    }

    /// Symbols that were needed but not found (empty when everything was).
    pub fn missing(&self) -> &'static [&'static str] {
        self.missing
    }

    pub(crate) fn api(&self) -> Option<&Api> {
        self.api.as_ref()
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.python_found {
            return write!(
                f,
                "no Python found in {}: blocks run without releasing anything",
                self.source
            );
        }
        match self.version {
            Some((major, minor)) => write!(f, "CPython {major}.{minor} found")?,
            None => f.write_str("CPython (version unknown) found")?,
        }
        match self.held_check {
            HeldCheck::ThreadLocal { symbol } => {
                write!(f, ": held check {symbol} (thread-local)")
            }
            HeldCheck::CompareWithThisThread { symbol } => write!(
                f,
                ": held check {symbol} == PyGILState_GetThisThreadState (global current state)"
            ),
            HeldCheck::Unavailable => write!(
                f,
                ": no held check available (missing {}): blocks run without releasing anything",
                self.missing.join(", ")
            ),
        }
    }
}

impl fmt::Debug for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolution")
            .field("python_found", &self.python_found)
            .field("can_release", &self.can_release())
            .field("version", &self.version)
            .field("held_check", &self.held_check)
            .field("missing", &self.missing)
            .field("source", &self.source)
            .finish()
    }
}

static RESOLUTION: Once<Resolution> = Once::new();

/// The resolved functions: the fast path is this atomic load.
#[inline(always)]
pub(crate) fn api() -> Option<&'static Api> {
    match RESOLUTION.get() {
        Some(resolution) => resolution.api(),
        None => resolve_slow().api(),
    }
}

/// The functions, when a release has already succeeded.
///
/// # Safety
///
/// [`api`] must have returned `Some` before, in this process.
#[inline(always)]
pub(crate) unsafe fn api_resolved() -> &'static Api {
    // SAFETY: `api` returned `Some`, so the `Once` is complete and holds an
    // `Api`; a complete `Once` never changes again.
    unsafe {
        match RESOLUTION.get_unchecked().api() {
            Some(api) => api,
            None => core::hint::unreachable_unchecked(),
        }
    }
}

/// Resolves (once per process) and returns what was found.
pub(crate) fn resolution() -> &'static Resolution {
    match RESOLUTION.get() {
        Some(resolution) => resolution,
        None => resolve_slow(),
    }
}

#[cold]
#[inline(never)]
fn resolve_slow() -> &'static Resolution {
    RESOLUTION.call_once(|| {
        let (symbols, source) = Symbols::open();
        resolve_with(&symbols, source)
    })
}

/// A place to look symbols up in.
trait Lookup {
    /// The address of `name` (NUL-terminated), if present and not null.
    fn lookup(&self, name: &CStr) -> Option<*mut c_void>;
}

/// Decides, from the symbols present, which functions to use.
fn resolve_with(symbols: &dyn Lookup, source: &'static str) -> Resolution {
    let save = symbols.lookup(c"PyEval_SaveThread");
    let restore = symbols.lookup(c"PyEval_RestoreThread");
    let (Some(save), Some(restore)) = (save, restore) else {
        return Resolution {
            api: None,
            version: None,
            held_check: HeldCheck::Unavailable,
            missing: &["PyEval_SaveThread", "PyEval_RestoreThread"],
            python_found: false,
            source,
        };
    };
    let version = read_version(symbols);
    let this_thread = symbols.lookup(c"PyGILState_GetThisThreadState");

    let (current, held_check, this_thread, missing): (_, _, _, &'static [&'static str]) =
        if let Some(f) = symbols.lookup(c"PyThreadState_GetUnchecked") {
            // 3.13 and later: the public name, thread-local.
            let symbol = "PyThreadState_GetUnchecked";
            (Some(f), HeldCheck::ThreadLocal { symbol }, None, &[])
        } else if let Some(f) = symbols.lookup(c"_PyThreadState_UncheckedGet") {
            let symbol = "_PyThreadState_UncheckedGet";
            match (version, this_thread) {
                // 3.12: thread-local.
                (Some(v), _) if v >= (3, 12) => {
                    (Some(f), HeldCheck::ThreadLocal { symbol }, None, &[])
                }
                // 3.11 and older (or unknown): process-global, compare.
                (_, Some(t)) => (
                    Some(f),
                    HeldCheck::CompareWithThisThread { symbol },
                    Some(t),
                    &[],
                ),
                (_, None) => (
                    None,
                    HeldCheck::Unavailable,
                    None,
                    &["PyGILState_GetThisThreadState"],
                ),
            }
        } else {
            (
                None,
                HeldCheck::Unavailable,
                None,
                &["PyThreadState_GetUnchecked", "_PyThreadState_UncheckedGet"],
            )
        };

    let api = current.map(|current| {
        // SAFETY: each pointer is the non-null address of the CPython function
        // of that name, whose C signature is the one its type spells out.
        unsafe {
            Api {
                save: core::mem::transmute::<*mut c_void, SaveThreadFn>(save),
                restore: core::mem::transmute::<*mut c_void, RestoreThreadFn>(restore),
                current: core::mem::transmute::<*mut c_void, GetThreadStateFn>(current),
                this_thread: this_thread
                    .map(|t| core::mem::transmute::<*mut c_void, GetThreadStateFn>(t)),
            }
        }
    });
    Resolution {
        api,
        version,
        held_check,
        missing,
        python_found: true,
        source,
    }
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
        let get_version = core::mem::transmute::<*mut c_void, GetVersionFn>(p);
        let s = get_version();
        if s.is_null() {
            return None;
        }
        CStr::from_ptr(s)
    };
    parse_version(text.to_bytes())
}

/// Parses the leading `major.minor` of a version string.
fn parse_version(text: &[u8]) -> Option<(u8, u8)> {
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

#[cfg(unix)]
struct Symbols(Option<libloading::os::unix::Library>);

#[cfg(unix)]
impl Symbols {
    /// The symbols already loaded in the process (`dlsym` on the default
    /// handle): the interpreter that loaded the extension, if any.
    fn open() -> (Self, &'static str) {
        use libloading::os::unix::{Library, RTLD_LAZY, RTLD_LOCAL};
        // `Library::this()` would do the same, but formats its (impossible)
        // error with `Debug`, which costs kilobytes in every extension.
        // SAFETY: a null file name loads nothing new, so no initialisation
        // routine runs; it returns the handle of the running program.
        let this = unsafe { Library::open(None::<&str>, RTLD_LAZY | RTLD_LOCAL) };
        (Symbols(this.ok()), "the process (dlopen(NULL))")
    }
}

#[cfg(windows)]
struct Symbols(Option<libloading::os::windows::Library>);

#[cfg(windows)]
impl Symbols {
    /// The Python DLL already loaded in the process, if any: a versioned one
    /// first (`python3X.dll`, debug `python3X_d.dll`, free-threaded
    /// `python3Xt.dll`), then the stable-ABI `python3.dll`.
    fn open() -> (Self, &'static str) {
        use libloading::os::windows::Library;
        const NAMES: &[&str] = &[
            "python320.dll",
            "python319.dll",
            "python318.dll",
            "python317.dll",
            "python316.dll",
            "python315.dll",
            "python314.dll",
            "python313.dll",
            "python312.dll",
            "python311.dll",
            "python310.dll",
            "python39.dll",
            "python38.dll",
            "python315t.dll",
            "python314t.dll",
            "python313t.dll",
            "python315_d.dll",
            "python314_d.dll",
            "python313_d.dll",
            "python312_d.dll",
            "python311_d.dll",
            "python310_d.dll",
            "python39_d.dll",
            "python38_d.dll",
            "python3.dll",
        ];
        for name in NAMES {
            if let Ok(lib) = Library::open_already_loaded(name) {
                return (Symbols(Some(lib)), name);
            }
        }
        (Symbols(None), "the loaded modules (no python3*.dll)")
    }
}

#[cfg(not(any(unix, windows)))]
struct Symbols;

#[cfg(not(any(unix, windows)))]
impl Symbols {
    fn open() -> (Self, &'static str) {
        (Symbols, "nothing (no dynamic loader on this target)")
    }
}

impl Lookup for Symbols {
    fn lookup(&self, name: &CStr) -> Option<*mut c_void> {
        #[cfg(any(unix, windows))]
        let found = self.0.as_ref().and_then(|lib| {
            // SAFETY: the symbol is only read as an address here; its type
            // is given where it is used.
            unsafe { lib.get::<*mut c_void>(name) }.ok().map(|s| *s)
        });
        #[cfg(not(any(unix, windows)))]
        let found: Option<*mut c_void> = {
            let _ = name;
            None
        };
        found.filter(|p| !p.is_null())
    }
}

#[cfg(test)]
mod tests {
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

    fn resolve(names: &[&'static str], version: Option<u64>) -> Resolution {
        let all: &'static [&'static str] = Box::leak(names.to_vec().into_boxed_slice());
        resolve_with(&Fake(all, version), "a fake process")
    }

    #[test]
    fn nothing_found_means_no_python() {
        let r = resolve(&[], None);
        assert!(!r.python_found() && !r.can_release());
        assert_eq!(r.held_check(), HeldCheck::Unavailable);
        assert!(r.to_string().starts_with("no Python found"), "{r}");
    }

    #[test]
    fn python_3_13_uses_the_public_thread_local_getter() {
        let r = resolve(
            &[GIL[0], GIL[1], "PyThreadState_GetUnchecked"],
            Some(0x030d00f0),
        );
        assert!(r.can_release());
        assert_eq!(r.version(), Some((3, 13)));
        let symbol = "PyThreadState_GetUnchecked";
        assert_eq!(r.held_check(), HeldCheck::ThreadLocal { symbol });
        assert!(r.api().unwrap().this_thread.is_none());
    }

    #[test]
    fn python_3_12_private_getter_is_thread_local() {
        let names = [
            GIL[0],
            GIL[1],
            "_PyThreadState_UncheckedGet",
            "PyGILState_GetThisThreadState",
        ];
        let r = resolve(&names, Some(0x030c01f0));
        let symbol = "_PyThreadState_UncheckedGet";
        assert_eq!(r.held_check(), HeldCheck::ThreadLocal { symbol });
        assert!(r.api().unwrap().this_thread.is_none());
    }

    #[test]
    fn python_3_11_compares_with_this_threads_state() {
        let names = [
            GIL[0],
            GIL[1],
            "_PyThreadState_UncheckedGet",
            "PyGILState_GetThisThreadState",
        ];
        let r = resolve(&names, Some(0x030b07f0));
        let symbol = "_PyThreadState_UncheckedGet";
        assert_eq!(r.held_check(), HeldCheck::CompareWithThisThread { symbol });
        assert!(r.api().unwrap().this_thread.is_some());
    }

    #[test]
    fn unknown_version_is_treated_as_global() {
        let names = [
            GIL[0],
            GIL[1],
            "_PyThreadState_UncheckedGet",
            "PyGILState_GetThisThreadState",
        ];
        let r = resolve(&names, None);
        assert_eq!(r.version(), None);
        assert!(matches!(
            r.held_check(),
            HeldCheck::CompareWithThisThread { .. }
        ));
    }

    #[test]
    fn old_python_without_gilstate_getter_releases_nothing() {
        let r = resolve(
            &[GIL[0], GIL[1], "_PyThreadState_UncheckedGet"],
            Some(0x030b00f0),
        );
        assert!(r.python_found() && !r.can_release());
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
    fn version_strings_parse() {
        assert_eq!(parse_version(b"3.10.13 (main, Jan 1 2024)"), Some((3, 10)));
        assert_eq!(parse_version(b"3.9.18+ (heads/3.9)"), Some((3, 9)));
        assert_eq!(parse_version(b"3.13"), Some((3, 13)));
        assert_eq!(parse_version(b"3"), None);
        assert_eq!(parse_version(b"x.y"), None);
        assert_eq!(parse_version(b""), None);
    }
}
