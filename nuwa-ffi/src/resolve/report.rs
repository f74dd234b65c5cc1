//! What was found: the public report, [`Resolution`].

use core::fmt;
use std::ffi::CString;

use crate::plan::Plan;
use crate::shutdown::Exit;

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
    /// (`PyGILState_GetThisThreadState`), and only that: "held" if they are
    /// the same state. A thread that holds the GIL through any other state
    /// (the thread of a legacy subinterpreter made with `Py_NewInterpreter`,
    /// a thread running on a state another thread made for it) is "not held",
    /// and its blocks release nothing: safe, but without parallelism. Nothing
    /// on these versions tells safely which thread a state is in use on (a
    /// state's `thread_id` names the thread that made it, and a state can
    /// move between threads), so nuwa does not guess.
    CompareWithThisThread {
        /// `_PyThreadState_UncheckedGet`.
        symbol: &'static str,
    },
    /// No way to check was found: nothing is ever released.
    Unavailable,
}

/// Where the functions were found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Via {
    /// The process's global scope (`dlopen(NULL)`): the interpreter that
    /// loaded the extension, or a libpython loaded `RTLD_GLOBAL`.
    GlobalScope,
    /// The object that contains nuwa's code, and the objects it depends on
    /// (`dladdr`, then `dlopen(RTLD_NOLOAD)`): where the library's own calls
    /// into libpython are bound, even if the host loaded libpython
    /// `RTLD_LOCAL`.
    OwnObject,
    /// CPython's functions linked into the same object as nuwa's code (a
    /// program that links `libpython3.X.a` without exporting its symbols,
    /// fully static included), found through weak references on ELF targets.
    Linked,
    /// A loaded object whose file name looks like libpython (found with
    /// `dl_iterate_phdr`, opened with `RTLD_NOLOAD`); on Windows, a loaded
    /// `python3*.dll`.
    LoadedObject,
    /// Handed over by the embedder with [`embed::provide`](crate::embed::provide).
    Embedder,
    /// Nowhere: every place above was searched.
    Nowhere,
}

/// What [`Resolution`] amounts to, for a `match`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// No Python: blocks run and release nothing.
    NotFound,
    /// PyPy's C API emulation (`PyPy*` symbols) was found. PyPy is not
    /// supported: blocks run and release nothing.
    PyPyNotSupported,
    /// CPython's GIL functions were found, but no way to tell whether a
    /// thread holds the GIL: blocks release nothing.
    FoundWithoutHeldCheck,
    /// Blocks release the GIL on the threads that hold it.
    Ready,
}

/// How a block takes the GIL back (chosen once, by version and target).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestorePath {
    /// `PyEval_RestoreThread` through nuwa's C frame, which parks a thread
    /// that CPython 3.13 and older end with an unwinding `pthread_exit` at
    /// shutdown (glibc, FreeBSD).
    ParkingFrame,
    /// `PyEval_RestoreThread` called directly: CPython 3.14 and later hang
    /// such a thread themselves; on Windows the thread exit does not unwind.
    Direct,
    /// CPython 3.13 and older where `pthread_exit` does not unwind (musl,
    /// macOS, ...): a thread whose block ends after finalization started is
    /// parked before `PyEval_RestoreThread`. A thread already waiting for the
    /// GIL when finalization starts is still ended by CPython.
    CheckFinalizing,
}

/// The one state a resolution is in.
pub(crate) enum State {
    NotFound {
        pypy: bool,
    },
    NoHeldCheck {
        version: Option<(u8, u8)>,
        missing: &'static [&'static str],
    },
    Ready {
        version: Option<(u8, u8)>,
        held_check: HeldCheck,
        plan: Plan,
    },
}

/// Where the functions came from, or how far the search went: kept as
/// found, and turned into text only by `Display` (a diagnosis), so that the
/// lookup builds no strings.
pub(crate) enum Place {
    /// The object the functions came from, as the loader names it (empty:
    /// the program itself).
    Object(CString),
    /// The functions handed over by the embedder, in no object nuwa knows.
    Embedder,
    /// Nothing found, every place searched ([`searched`]); `tried` loaded
    /// objects were named like libpython (or PyPy).
    Searched {
        /// How many.
        tried: usize,
    },
}

/// The places a lookup searches on this target, in order.
pub(crate) fn searched() -> &'static str {
    #[cfg(all(nuwa_dl_noload, nuwa_dl_iterate, nuwa_weak_linked))]
    return "the global scope, nuwa's own object, the loaded libpython objects, \
            the functions linked into nuwa's own object";
    #[cfg(all(nuwa_dl_noload, not(nuwa_dl_iterate)))]
    return "the global scope, nuwa's own object";
    #[cfg(all(not(nuwa_dl_noload), nuwa_dl_iterate, nuwa_weak_linked))]
    return "the global scope, the functions linked into nuwa's own object";
    #[cfg(all(
        unix,
        not(any(
            all(nuwa_dl_noload, nuwa_dl_iterate, nuwa_weak_linked),
            all(nuwa_dl_noload, not(nuwa_dl_iterate)),
            all(not(nuwa_dl_noload), nuwa_dl_iterate, nuwa_weak_linked)
        ))
    ))]
    return "the global scope";
    #[cfg(windows)]
    return "the loaded modules (no python3*.dll)";
    #[cfg(not(any(unix, windows)))]
    return "nothing (no dynamic loader on this target)";
}

/// What [`init`](crate::init) found in the process.
///
/// Its `Display` form is one line for logs, for example
/// `CPython 3.12 found: held check _PyThreadState_UncheckedGet (thread-local)`;
/// the alternate form (`{:#}`) adds where the functions came from:
/// `...; via the global scope (dlopen(NULL)) (/usr/lib/libpython3.12.so.1.0)`.
pub struct Resolution {
    pub(crate) state: State,
    pub(crate) via: Via,
    /// The object the functions came from, or where the search went.
    pub(crate) place: Place,
}

impl Resolution {
    /// Nothing found, after trying `tried` objects named like libpython.
    pub(crate) fn not_found(pypy: bool, tried: usize) -> Resolution {
        Resolution {
            state: State::NotFound { pypy },
            via: Via::Nowhere,
            place: Place::Searched { tried },
        }
    }

    /// Whether CPython's GIL functions were found in the process.
    ///
    /// They are found as soon as libpython is loaded, whether or not the
    /// interpreter is initialised (yet, or still): a block releases only on a
    /// thread that holds the GIL at that moment, which
    /// [`gil_is_held`](crate::gil_is_held) tells.
    pub fn python_found(&self) -> bool {
        matches!(self.state, State::NoHeldCheck { .. } | State::Ready { .. })
    }

    /// Whether blocks can release the GIL: Python was found along with a way
    /// to check that the GIL is held. They do release on the threads that
    /// hold it.
    pub fn can_release(&self) -> bool {
        matches!(self.state, State::Ready { .. })
    }

    /// The interpreter's `(major, minor)` version, if it could be read.
    pub fn version(&self) -> Option<(u8, u8)> {
        match self.state {
            State::NotFound { .. } => None,
            State::NoHeldCheck { version, .. } | State::Ready { version, .. } => version,
        }
    }

    /// The object the functions came from (its path, as the loader names
    /// it; `"this program"` for the executable itself, `"the embedder"` for
    /// functions handed over in no object nuwa knows), or, if none was
    /// found, the places searched on this target. A path that is not UTF-8
    /// is shown by the `{:#}` form only.
    pub fn source(&self) -> &str {
        match &self.place {
            Place::Object(path) if path.is_empty() => "this program",
            Place::Object(path) => path.to_str().unwrap_or("(a path that is not UTF-8)"),
            Place::Embedder => "the embedder",
            Place::Searched { .. } => searched(),
        }
    }

    /// Symbols that were needed but not found (empty when everything was).
    pub fn missing(&self) -> &'static [&'static str] {
        match self.state {
            State::NotFound { pypy: false } => &["PyEval_SaveThread", "PyEval_RestoreThread"],
            State::NotFound { pypy: true } => &[],
            State::NoHeldCheck { missing, .. } => missing,
            State::Ready { .. } => &[],
        }
    }

    /// The plan blocks follow, if they can release.
    pub(crate) fn plan(&self) -> Option<&Plan> {
        match &self.state {
            State::Ready { plan, .. } => Some(plan),
            _ => None,
        }
    }

    /// Whether the held check compares states (3.11 and older; for tests).
    #[cfg(test)]
    pub(crate) fn compares(&self) -> Option<bool> {
        self.plan().map(|plan| plan.this_thread().is_some())
    }
}

/// The details of a [`Resolution`] that its `Display` form tells, as values,
/// for nuwa's own tests and diagnostics. Not public API (`__private`): they
/// change as nuwa's way of finding CPython does.
pub trait Details {
    /// What this resolution amounts to.
    fn status(&self) -> Status;
    /// How the calling thread's hold on the GIL is checked
    /// ([`HeldCheck::Unavailable`] unless it can release).
    fn held_check(&self) -> HeldCheck;
    /// How blocks take the GIL back, if they can release it.
    fn restore_path(&self) -> Option<RestorePath>;
    /// Which way the functions were found ([`Via::Nowhere`] if they were not).
    fn via(&self) -> Via;
}

impl Details for Resolution {
    fn status(&self) -> Status {
        match self.state {
            State::NotFound { pypy: false } => Status::NotFound,
            State::NotFound { pypy: true } => Status::PyPyNotSupported,
            State::NoHeldCheck { .. } => Status::FoundWithoutHeldCheck,
            State::Ready { .. } => Status::Ready,
        }
    }

    fn held_check(&self) -> HeldCheck {
        match self.state {
            State::Ready { held_check, .. } => held_check,
            _ => HeldCheck::Unavailable,
        }
    }

    fn restore_path(&self) -> Option<RestorePath> {
        self.plan().map(|plan| match plan.take_back.exit() {
            Exit::Direct => RestorePath::Direct,
            #[cfg(any(test, nuwa_exit_unwinds))]
            Exit::Frame { .. } => RestorePath::ParkingFrame,
            #[cfg(any(test, nuwa_check_finalizing))]
            Exit::CheckFinalizing(_) => RestorePath::CheckFinalizing,
        })
    }

    fn via(&self) -> Via {
        self.via
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Via::GlobalScope => "the global scope (dlopen(NULL))",
            Via::OwnObject => "the object that contains nuwa's code and its dependencies",
            Via::LoadedObject if cfg!(windows) => "a loaded Python DLL",
            Via::LoadedObject => "a loaded libpython",
            Via::Linked => "the functions linked into the same object as nuwa",
            Via::Embedder => "the embedder (nuwa_ffi::embed::provide)",
            Via::Nowhere => "nowhere",
        })
    }
}

/// What happens next to a resolution that cannot release, as this process's
/// dynamic loader allows.
fn looks_again() -> &'static str {
    if super::looks_again() {
        " (looked for again when the process loads a library named like libpython)"
    } else {
        " (for the rest of the process: not looked for again)"
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (version, detail) = match &self.state {
            State::NotFound { pypy: false } => {
                write!(f, "no Python found in the process (searched ")?;
                self.searched(f)?;
                return write!(
                    f,
                    "): blocks run without releasing anything{}",
                    looks_again()
                );
            }
            State::NotFound { pypy: true } => {
                write!(f, "PyPy found (")?;
                self.searched(f)?;
                return write!(
                    f,
                    "): PyPy is not supported, blocks run without releasing anything"
                );
            }
            State::NoHeldCheck { version, .. } => (version, None),
            State::Ready {
                version,
                held_check,
                ..
            } => (version, Some(*held_check)),
        };
        match version {
            Some((major, minor)) => write!(f, "CPython {major}.{minor} found")?,
            None => f.write_str("CPython (version unknown) found")?,
        }
        match detail {
            Some(HeldCheck::ThreadLocal { symbol }) => {
                write!(f, ": held check {symbol} (thread-local)")?
            }
            Some(HeldCheck::CompareWithThisThread { symbol }) => write!(
                f,
                ": held check {symbol} == PyGILState_GetThisThreadState (global current state; \
                 a thread on any other state, as in a legacy subinterpreter, releases nothing)"
            )?,
            Some(HeldCheck::Unavailable) | None => write!(
                f,
                ": no held check available (missing {}): blocks run without releasing anything{}",
                self.missing().join(", "),
                looks_again()
            )?,
        }
        if f.alternate() {
            match &self.place {
                Place::Object(path) if !path.is_empty() => {
                    write!(f, "; via {} ({})", self.via, path.to_string_lossy())?
                }
                _ => write!(f, "; via {} ({})", self.via, self.source())?,
            }
        }
        Ok(())
    }
}

impl Resolution {
    /// The places searched, with what a diagnosis needs: nuwa's own object
    /// (looked up now) and how many objects named like libpython were tried.
    fn searched(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.source())?;
        #[cfg(unix)]
        if let Some(own) = super::own_object() {
            write!(f, "; nuwa's own object: {own}")?;
        }
        if let Place::Searched { tried } = self.place
            && cfg!(nuwa_dl_iterate)
        {
            write!(f, "; loaded objects named like libpython: {tried}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolution")
            .field("status", &self.status())
            .field("version", &self.version())
            .field("held_check", &self.held_check())
            .field("restore_path", &self.restore_path())
            .field("missing", &self.missing())
            .field("via", &self.via)
            .field("source", &self.source())
            .finish()
    }
}
