//! The CPython backends.

use core::ptr::NonNull;

use nuwa_core::GilOps;

use crate::resolve::{self, RestoreThreadFn, ThreadStatePtr};

/// The GIL of the CPython interpreter in this process.
///
/// A zero-sized backend: `nogil!(CPython => { ... })`, or simply
/// [`nogil! { ... }`](crate::nogil!), which uses it.
///
/// A release releases the GIL only if the calling thread holds it; on any
/// other thread (one the extension spawned, a block nested in another, a
/// process without Python) it releases nothing and the block just runs.
///
/// A reacquire waits for the GIL like `Py_END_ALLOW_THREADS`. If another
/// thread is finalizing the interpreter meanwhile, CPython 3.13 and older end
/// the waiting thread; nuwa parks it instead, for good (as CPython 3.14 does
/// itself): the block never returns, no Rust frame is unwound, and the
/// process exits normally. A thread that must finish its work should not be
/// a daemon thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CPython;

/// The thread state saved by a release, handed back to the reacquire.
///
/// Opaque, and neither `Send` nor `Sync`: it belongs to the thread that
/// released.
#[derive(Debug, PartialEq, Eq)]
pub struct SavedThreadState(NonNull<core::ffi::c_void>);

// SAFETY: `release` calls `PyEval_SaveThread` only after checking that the
// calling thread's own thread state is the one that holds the GIL (see
// `HeldCheck`), and returns the state it saved; `reacquire` restores exactly
// that state with `PyEval_RestoreThread`. Without the functions or the check,
// nothing is released.
unsafe impl GilOps for CPython {
    type State = SavedThreadState;
    type Gil = CPython;

    #[inline(always)]
    unsafe fn release(&self) -> Option<SavedThreadState> {
        let api = resolve::api()?;
        if !holds_gil(api) {
            return None;
        }
        // SAFETY: the calling thread holds the GIL (checked above), which is
        // what `PyEval_SaveThread` requires.
        let saved = unsafe { (api.save)() };
        NonNull::new(saved).map(SavedThreadState)
    }

    #[inline(always)]
    unsafe fn reacquire(&self, state: SavedThreadState) {
        // SAFETY: a `SavedThreadState` exists only after `release` found the
        // functions, so they are resolved.
        let api = unsafe { resolve::api_resolved() };
        // SAFETY: the caller passes the state this thread saved, once.
        unsafe { restore_thread(api.restore, state.0.as_ptr()) }
    }

    fn is_held(&self) -> bool {
        gil_is_held()
    }
}

/// Whether the calling thread holds the GIL: its own thread state is the one
/// that holds it (see [`HeldCheck`](crate::HeldCheck)).
#[inline(always)]
fn holds_gil(api: &resolve::Api) -> bool {
    // SAFETY: these CPython functions may be called from any thread, with or
    // without the GIL, before and after initialisation; they only read the
    // current thread state.
    unsafe {
        let current = (api.current)();
        if current.is_null() {
            return false;
        }
        match api.this_thread {
            Some(this_thread) => this_thread() == current,
            None => true,
        }
    }
}

/// Whether the calling thread holds the GIL of the CPython interpreter in
/// this process, by the check a block makes before releasing; nothing is
/// released.
///
/// `false` in a process without Python, before the interpreter is
/// initialised, on a thread that has no Python thread state, inside a block,
/// and when no held check is available (see [`Resolution`](crate::Resolution)).
///
/// # Examples
///
/// ```
/// // A plain Rust test binary has no interpreter:
/// assert!(!nuwa_ffi::gil_is_held());
/// nuwa_ffi::nogil! {
///     assert!(!nuwa_ffi::gil_is_held()); // and never inside a block
/// }
/// ```
pub fn gil_is_held() -> bool {
    resolve::api().is_some_and(holds_gil)
}

/// `PyEval_SaveThread` without the held check, for [`GilHeld`](crate::GilHeld).
///
/// Releases nothing if Python is not in the process.
///
/// # Safety
///
/// The calling thread holds the GIL; the caller hands the state to
/// [`CPython`]'s `reacquire` as `GilOps::release` requires.
#[inline(always)]
pub(crate) unsafe fn release_unchecked() -> Option<SavedThreadState> {
    let api = resolve::api()?;
    // SAFETY: the caller's contract: this thread holds the GIL.
    let saved = unsafe { (api.save)() };
    NonNull::new(saved).map(SavedThreadState)
}

#[cfg(nuwa_restore_shim)]
unsafe extern "C" {
    /// `restore(tstate)`, parking the thread for good if `restore` starts a
    /// forced unwind (see `src/restore_shim.c`). It never unwinds.
    fn nuwa_ffi_0_1_restore_thread(restore: RestoreThreadFn, tstate: ThreadStatePtr);
}

/// Calls `PyEval_RestoreThread(tstate)`; at interpreter shutdown, where
/// CPython 3.13 and older end the thread instead of returning, the thread is
/// parked for good and no Rust frame is unwound.
///
/// # Safety
///
/// `tstate` is the state this thread saved, not restored yet.
#[inline(always)]
unsafe fn restore_thread(restore: RestoreThreadFn, tstate: ThreadStatePtr) {
    #[cfg(nuwa_restore_shim)]
    // SAFETY: the shim calls `restore(tstate)`, whose contract the caller keeps.
    unsafe {
        nuwa_ffi_0_1_restore_thread(restore, tstate)
    }
    #[cfg(not(nuwa_restore_shim))]
    // SAFETY: the caller's contract. Here (Windows) the thread exit at
    // shutdown ends the thread without unwinding the stack.
    unsafe {
        restore(tstate)
    }
}
