//! For programs that embed CPython where nuwa cannot find it: hand nuwa the
//! interpreter's functions.
//!
//! nuwa looks CPython's functions up at run time (see the crate docs'
//! [Finding Python](crate#finding-python)). A program that links
//! `libpython3.X.a` into its executable without `--export-dynamic` (a single
//! binary with Python inside) exports none of them. On ELF targets nuwa still
//! finds them when its own code is linked into that same executable (weak
//! references, fully static programs included); otherwise (another target,
//! or nuwa's code in another object) nothing can be found and blocks release
//! nothing. Such a program calls [`provide`] once, best before the first
//! block, with the addresses of the functions it linked:
//!
//! ```no_run
//! use core::ffi::c_void;
//! # mod ffi { pub unsafe extern "C" fn PyEval_SaveThread() {} pub unsafe extern "C" fn PyEval_RestoreThread() {}
//! #   pub unsafe extern "C" fn PyThreadState_GetUnchecked() {} }
//! # use ffi::*;
//! // With CPython 3.13 linked into this program (declared with pyo3-ffi,
//! // bindgen, or by hand):
//! let python = nuwa_ffi::embed::EmbeddedPython::new(
//!     (3, 13),
//!     PyEval_SaveThread as *const c_void,
//!     PyEval_RestoreThread as *const c_void,
//!     PyThreadState_GetUnchecked as *const c_void,
//! );
//! // SAFETY: these are the functions of the CPython 3.13 linked in.
//! unsafe { nuwa_ffi::embed::provide(python) }.expect("before the first block");
//! ```
//!
//! On CPython 3.11 and older, also hand over `PyGILState_GetThisThreadState`
//! (required).
//! Hand over `PyErr_CheckSignals` ([`EmbeddedPython::with_check_signals`])
//! to let Ctrl-C stop long blocks
//! ([`SignalCheck`](crate::SignalCheck)).

use core::ffi::{CStr, c_ulong, c_void};
use core::fmt;
use core::sync::atomic::{AtomicPtr, Ordering};
use std::boxed::Box;
use std::string::{String, ToString};

use crate::resolve;
use crate::resolve::decide::{self, Lookup};
use crate::resolve::report::{Place, Resolution, State, Via};

/// The functions of the CPython interpreter an embedder linked, by address.
///
/// Made with [`new`](Self::new) and the `with_*` methods; handed over with
/// [`provide`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmbeddedPython {
    version: (u8, u8),
    save_thread: usize,
    restore_thread: usize,
    current_thread_state: usize,
    gilstate_this_thread: usize,
    is_finalizing: usize,
    check_signals: usize,
}

impl EmbeddedPython {
    /// The functions every version needs, and the interpreter's
    /// `(major, minor)` version.
    ///
    /// `current_thread_state` is `PyThreadState_GetUnchecked` on 3.13 and
    /// later, `_PyThreadState_UncheckedGet` on 3.12 and older.
    pub fn new(
        version: (u8, u8),
        save_thread: *const c_void,
        restore_thread: *const c_void,
        current_thread_state: *const c_void,
    ) -> Self {
        EmbeddedPython {
            version,
            save_thread: save_thread.addr(),
            restore_thread: restore_thread.addr(),
            current_thread_state: current_thread_state.addr(),
            gilstate_this_thread: 0,
            is_finalizing: 0,
            check_signals: 0,
        }
    }

    /// `PyGILState_GetThisThreadState`: required on CPython 3.11 and older,
    /// whose current thread state is process-wide.
    pub fn with_gilstate_this_thread(mut self, f: *const c_void) -> Self {
        self.gilstate_this_thread = f.addr();
        self
    }

    /// `Py_IsFinalizing` (3.13) or `_Py_IsFinalizing` (3.8 to 3.12): used at
    /// shutdown on the targets where `pthread_exit` does not unwind (see
    /// [the version notes](https://github.com/nuwa-rs/nuwa#how-nuwa-finds-cpython-version-by-version)).
    pub fn with_is_finalizing(mut self, f: *const c_void) -> Self {
        self.is_finalizing = f.addr();
        self
    }

    /// `PyErr_CheckSignals`: lets a [`SignalCheck`](crate::SignalCheck)
    /// run the Python signal handlers inside blocks (without it, checks do
    /// nothing and Ctrl-C waits for the block to end).
    pub fn with_check_signals(mut self, f: *const c_void) -> Self {
        self.check_signals = f.addr();
        self
    }
}

/// Why [`provide`] refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EmbedError {
    /// A required address was null.
    NullAddress {
        /// The function whose address was null.
        function: &'static str,
    },
    /// nuwa supports CPython 3.8 and later.
    UnsupportedVersion {
        /// The version handed over.
        version: (u8, u8),
    },
    /// A function this version needs was not handed over.
    MissingFunction {
        /// The function to add.
        function: &'static str,
    },
    /// nuwa had already found, on its own, a Python whose blocks release
    /// (at a block, or [`init`](crate::init)) before `provide` was called.
    AlreadyResolved {
        /// What it found then (the `Display` of the resolution in force).
        found: String,
    },
    /// `provide` was called before with other functions or another version.
    AlreadyProvided {
        /// The version handed over first.
        version: (u8, u8),
    },
}

impl fmt::Display for EmbedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("nuwa_ffi::embed::provide: ")?;
        match self {
            EmbedError::NullAddress { function } => {
                write!(f, "the address of {function} is null")
            }
            EmbedError::UnsupportedVersion {
                version: (major, minor),
            } => write!(
                f,
                "CPython {major}.{minor} is not supported (3.8 and later are)"
            ),
            EmbedError::MissingFunction { function } => write!(
                f,
                "this CPython version needs {function} as well (EmbeddedPython::with_*)"
            ),
            EmbedError::AlreadyResolved { found } => write!(
                f,
                "called after nuwa had already found a Python that releases on its own \
                 (at a block or nuwa_ffi::init()); call it before. In force: {found}"
            ),
            EmbedError::AlreadyProvided {
                version: (major, minor),
            } => write!(
                f,
                "called again with other functions; the first call's (CPython \
                 {major}.{minor}) stay in force"
            ),
        }
    }
}

impl std::error::Error for EmbedError {}

/// What the first [`provide`] that passed the checks handed over: a leaked
/// `Box`, set once with a compare-exchange (no thread ever waits here).
static PROVIDED: AtomicPtr<EmbeddedPython> = AtomicPtr::new(core::ptr::null_mut());

/// Hands nuwa the functions of the CPython interpreter that this program
/// embeds, so that blocks release its GIL.
///
/// Call it once, best before the first block and before
/// [`init`](crate::init); a call after them works too as long as nuwa has
/// not found a Python that can release on its own (until the call, those
/// blocks released nothing). A second call with the same functions is `Ok`.
/// nuwa keeps the object the functions are in loaded for the rest of the
/// process.
///
/// # Errors
///
/// [`EmbedError`], with nothing changed: a null address, a version before
/// 3.8, a function the version needs that is missing, a call after nuwa
/// found a Python that can release on its own, or a second call with other
/// functions.
///
/// # Safety
///
/// Each address is that of the CPython function of that name, in the one
/// interpreter this process runs, with that function's C signature, and
/// `version` is that interpreter's version; the functions stay callable for
/// the rest of the process.
pub unsafe fn provide(python: EmbeddedPython) -> Result<(), EmbedError> {
    let state = check(&python)?;
    let mine = Box::into_raw(Box::new(python));
    let first = match PROVIDED.compare_exchange(
        core::ptr::null_mut(),
        mine,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        Ok(_) => python,
        Err(first) => {
            // SAFETY: `mine` was never shared: take it back. `first` is a
            // leaked `Box`, never freed.
            unsafe {
                drop(Box::from_raw(mine));
                *first
            }
        }
    };
    if first != python {
        return Err(EmbedError::AlreadyProvided {
            version: first.version,
        });
    }
    // Only these functions are ever offered as the embedder's (every other
    // call returned above), so an embedder's resolution in force is theirs.
    let place = pin(python.save_thread).map_or(Place::Embedder, Place::Object);
    let made = Resolution {
        state,
        via: Via::Embedder,
        place,
    };
    let (in_force, _) = resolve::offer(made);
    if in_force.via == Via::Embedder {
        Ok(())
    } else {
        Err(EmbedError::AlreadyResolved {
            found: in_force.to_string(),
        })
    }
}

/// Validates what was handed over and decides, as for a looked-up object.
fn check(python: &EmbeddedPython) -> Result<State, EmbedError> {
    if python.version < (3, 8) {
        return Err(EmbedError::UnsupportedVersion {
            version: python.version,
        });
    }
    let new = python.version >= (3, 13);
    let current_name = if new {
        "PyThreadState_GetUnchecked"
    } else {
        "_PyThreadState_UncheckedGet"
    };
    for (function, addr) in [
        ("PyEval_SaveThread", python.save_thread),
        ("PyEval_RestoreThread", python.restore_thread),
        (current_name, python.current_thread_state),
    ] {
        if addr == 0 {
            return Err(EmbedError::NullAddress { function });
        }
    }
    let (major, minor) = python.version;
    let table = Table {
        python,
        current: if new {
            c"PyThreadState_GetUnchecked"
        } else {
            c"_PyThreadState_UncheckedGet"
        },
        packed: (c_ulong::from(major) << 24) | (c_ulong::from(minor) << 16),
    };
    match decide::decide(&table) {
        State::NoHeldCheck { missing, .. } => Err(EmbedError::MissingFunction {
            function: missing.first().copied().unwrap_or("?"),
        }),
        State::NotFound { .. } => Err(EmbedError::NullAddress {
            function: "PyEval_SaveThread",
        }),
        ready => Ok(ready),
    }
}

/// The handed-over functions as a symbol table, for [`decide::decide`].
struct Table<'a> {
    python: &'a EmbeddedPython,
    current: &'static CStr,
    /// The version as `Py_Version` packs it.
    packed: c_ulong,
}

impl Lookup for Table<'_> {
    fn lookup(&self, name: &CStr) -> Option<*mut c_void> {
        let p = self.python;
        let addr = match name.to_bytes() {
            b"PyEval_SaveThread" => p.save_thread,
            b"PyEval_RestoreThread" => p.restore_thread,
            b"PyGILState_GetThisThreadState" => p.gilstate_this_thread,
            b"Py_IsFinalizing" | b"_Py_IsFinalizing" => p.is_finalizing,
            b"PyErr_CheckSignals" => p.check_signals,
            b"Py_Version" => return Some((&raw const self.packed).cast_mut().cast()),
            n if n == self.current.to_bytes() => p.current_thread_state,
            _ => 0,
        };
        (addr != 0).then(|| core::ptr::without_provenance_mut(addr))
    }
}

/// Keeps the object that holds `addr` loaded; its name, if known.
fn pin(addr: usize) -> Option<std::ffi::CString> {
    #[cfg(unix)]
    return resolve::pin_object_of(core::ptr::without_provenance(addr));
    #[cfg(not(unix))]
    {
        let _ = addr;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(version: (u8, u8)) -> EmbeddedPython {
        EmbeddedPython::new(
            version,
            0x1000 as *const c_void,
            0x2000 as *const c_void,
            0x3000 as *const c_void,
        )
    }

    #[test]
    fn checks_what_is_handed_over() {
        assert!(check(&fake((3, 13))).is_ok());
        assert!(check(&fake((3, 12))).is_ok());
        assert_eq!(
            check(&fake((3, 7))).err(),
            Some(EmbedError::UnsupportedVersion { version: (3, 7) })
        );
        assert_eq!(
            check(&fake((3, 11))).err(),
            Some(EmbedError::MissingFunction {
                function: "PyGILState_GetThisThreadState"
            })
        );
        let old = fake((3, 11)).with_gilstate_this_thread(0x4000 as *const c_void);
        assert!(check(&old).is_ok());
        let null = EmbeddedPython::new(
            (3, 13),
            0x1000 as *const c_void,
            core::ptr::null(),
            0x3000 as *const c_void,
        );
        assert_eq!(
            check(&null).err(),
            Some(EmbedError::NullAddress {
                function: "PyEval_RestoreThread"
            })
        );
    }

    #[test]
    fn the_version_decides_as_for_a_looked_up_object() {
        use crate::__private::HeldCheck;
        let held = |p: &EmbeddedPython| match check(p) {
            Ok(State::Ready { held_check, .. }) => held_check,
            _ => HeldCheck::Unavailable,
        };
        assert_eq!(
            held(&fake((3, 13))),
            HeldCheck::ThreadLocal {
                symbol: "PyThreadState_GetUnchecked"
            }
        );
        let old = fake((3, 10)).with_gilstate_this_thread(0x4000 as *const c_void);
        assert!(matches!(
            held(&old),
            HeldCheck::CompareWithThisThread { .. }
        ));
    }

    #[test]
    fn check_signals_is_used_only_when_handed_over() {
        let check_signals = |p: &EmbeddedPython| match check(p) {
            Ok(State::Ready { plan, .. }) => plan.check_signals.map(|f| f as usize),
            _ => None,
        };
        assert_eq!(check_signals(&fake((3, 13))), None);
        let with = fake((3, 13)).with_check_signals(0x6000 as *const c_void);
        assert_eq!(check_signals(&with), Some(0x6000));
        assert_ne!(
            with,
            fake((3, 13)),
            "a second provide with it is another call"
        );
    }

    #[test]
    fn errors_read_well() {
        let e = EmbedError::AlreadyResolved {
            found: "no Python found in the process".into(),
        };
        let text = e.to_string();
        assert!(
            text.starts_with("nuwa_ffi::embed::provide: called after"),
            "{text}"
        );
        assert!(text.contains("no Python found"), "{text}");
    }
}
