//! Finding CPython's functions at run time: once per process when found,
//! again after the process loads a library named like libpython while they
//! are not.
//!
//! - [`report`]: what was found, as the public [`Resolution`].
//! - [`decide`]: from the symbols of one object, which functions to use on
//!   which version (pure logic, tested with fake symbol tables).
//! - [`names`]: which loaded objects are worth asking (pure logic, tested on
//!   every host, including the Windows DLL names).
//! - `unix` / `windows`: the platform lookup, in a fixed order.
//! - [`embed`](crate::embed): the functions handed over by an embedder.

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicPtr, Ordering};
use std::boxed::Box;

pub(crate) mod decide;
#[cfg(nuwa_dl_iterate)]
mod loaded;
pub(crate) mod names;
pub(crate) mod report;
#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::pin_object_of;
#[cfg(windows)]
mod windows;

pub use report::{HeldCheck, Resolution, RestorePath, Status, Via};

/// CPython's `PyThreadState`, only ever handled by pointer.
pub(crate) type ThreadStatePtr = *mut c_void;

pub(crate) type SaveThreadFn = unsafe extern "C" fn() -> ThreadStatePtr;
/// `PyEval_RestoreThread` may end the thread with `pthread_exit` (a forced
/// unwind) during shutdown on CPython 3.13 and older, hence `C-unwind`.
pub(crate) type RestoreThreadFn = unsafe extern "C-unwind" fn(ThreadStatePtr);
pub(crate) type GetThreadStateFn = unsafe extern "C" fn() -> ThreadStatePtr;
pub(crate) type IsFinalizingFn = unsafe extern "C" fn() -> c_int;
/// `PyErr_CheckSignals`: runs the Python signal handlers (main thread of the
/// main interpreter), `-1` with an exception set if one raised.
pub(crate) type CheckSignalsFn = unsafe extern "C" fn() -> c_int;
/// How a block calls `PyEval_RestoreThread`: `entry(restore, tstate)`.
pub(crate) type RestoreEntryFn = unsafe extern "C-unwind" fn(RestoreThreadFn, ThreadStatePtr);
/// `PyThreadState_Swap`: on 3.12 and later, with a null argument, it
/// detaches the state attached to the calling thread, if any (releasing the
/// GIL), and returns it; on 3.13 and later, given a state, it also attaches
/// that one (taking the GIL), and may then end the thread at shutdown like
/// `PyEval_RestoreThread` (3.13), hence `C-unwind`.
pub(crate) type SwapFn = unsafe extern "C-unwind" fn(ThreadStatePtr) -> ThreadStatePtr;
/// How a block calls `PyThreadState_Swap(saved)` to take the GIL back:
/// `entry(swap, saved)`, returning what `swap` returned.
pub(crate) type SwapEntryFn = unsafe extern "C-unwind" fn(SwapFn, ThreadStatePtr) -> ThreadStatePtr;

/// The functions the fast path calls, and how.
pub(crate) struct Api {
    /// How blocks release.
    pub(crate) release: Release,
    /// How blocks take the GIL back.
    pub(crate) restore_kind: Restore,
    pub(crate) save: SaveThreadFn,
    pub(crate) restore: RestoreThreadFn,
    /// The thread state that holds the GIL: the caller's own on 3.12 and
    /// later, the GIL holder's (whichever thread that is) on 3.11 and older.
    pub(crate) current: GetThreadStateFn,
    pub(crate) check: Check,
    /// What [`restore_entry`](Self::restore_entry) does, for the report.
    pub(crate) reacquire: Reacquire,
    /// The function for `reacquire`, chosen once: one indirect call on the
    /// fast path instead of a branch on `reacquire` each time.
    pub(crate) restore_entry: RestoreEntryFn,
    /// `PyErr_CheckSignals`, for signal checks inside blocks (not on the
    /// fast path); `None` if the object does not define it.
    pub(crate) check_signals: Option<CheckSignalsFn>,
    /// `Py_IsFinalizing` (3.13) or `_Py_IsFinalizing` (3.8-3.12), for a part
    /// that ends without the GIL (not on the fast path); `None` if the object
    /// defines neither. Only where `pthread_exit` unwinds (the parking
    /// frame's targets).
    #[cfg(nuwa_exit_unwinds)]
    pub(crate) is_finalizing: Option<IsFinalizingFn>,
}

/// How a block releases, chosen once by version (see BENCHMARKS.md for the
/// instruction counts behind the choice).
#[derive(Clone, Copy)]
pub(crate) enum Release {
    /// 3.12 and 3.13: `PyThreadState_Swap(NULL)` detaches the calling
    /// thread's state only if one is attached, and returns it (or null): the
    /// held check and the release in one call, cheaper there than the getter
    /// plus `PyEval_SaveThread`.
    Swap(SwapFn),
    /// The held check (`current`, `check`), then `PyEval_SaveThread`.
    HeldCheck,
}

/// How a block takes the GIL back, chosen once by version.
#[derive(Clone, Copy)]
pub(crate) enum Restore {
    /// 3.13 and later: `entry(swap, saved)`, which detaches whatever state is
    /// attached to the thread (none, unless one was attached inside the
    /// block and left attached), takes the GIL and attaches the block's own
    /// (CPython's `_PyThreadState_Attach`, as `PyEval_RestoreThread` does),
    /// and returns the state it detached: the end-of-block check for free.
    /// Not on 3.12, where `PyThreadState_Swap` marks the state attached
    /// before it has the GIL, which races with finalization.
    Swap { swap: SwapFn, entry: SwapEntryFn },
    /// The end-of-block check with `current`, then
    /// `restore_entry(restore, saved)`.
    Checked,
}

/// How `current` tells whether the calling thread holds the GIL.
#[derive(Clone, Copy)]
pub(crate) enum Check {
    /// 3.12 and later: `current` is thread-local; not null means held.
    ThreadLocal,
    /// 3.11 and older: `current` is process-global; held only if it is this
    /// thread's GIL-state state. A thread whose GIL-state state is not the
    /// current one (a legacy subinterpreter's thread, one running on a state
    /// another thread made for it) counts as not holding the GIL: nothing
    /// else on these versions tells, safely, which thread a state is in use
    /// on.
    Compare { this_thread: GetThreadStateFn },
}

/// How a block takes the GIL back, chosen once at resolution.
#[derive(Clone, Copy)]
pub(crate) enum Reacquire {
    /// Through the C frame that parks a thread CPython force-unwinds at
    /// shutdown (3.13 and older, where `pthread_exit` unwinds).
    Shim,
    /// `PyEval_RestoreThread` itself: 3.14 and later hang such a thread
    /// themselves; Windows ends it without unwinding.
    Direct,
    /// 3.13 and older where `pthread_exit` does not unwind (musl, macOS, ...):
    /// park the thread if finalization started while it was in the block,
    /// then call `PyEval_RestoreThread`. Narrows the window; cannot close it.
    CheckFinalizing(IsFinalizingFn),
}

/// The resolution in force: null before the first lookup, then a leaked
/// `Box`. It is only ever replaced by a better one (see [`rank`]): at most
/// three are ever made to stay, and one that can release is final.
///
/// No thread ever waits for another here: a lookup is idempotent, so threads
/// that race each look up and offer their answer with a compare-exchange,
/// and a process forked while a thread of its parent was in the middle of a
/// lookup simply looks up again (nothing of nuwa's is left half done; see
/// `loaded` for the loader's own lock).
///
/// The first libpython found is final, even if that interpreter is never
/// initialised while another one is: blocks then release nothing (they
/// check that the GIL is held first), which only `init()` shows.
static RESOLUTION: AtomicPtr<Resolution> = AtomicPtr::new(core::ptr::null_mut());

/// The `Api` of [`RESOLUTION`] once it can release (null before, and for as
/// long as nothing can be released): the fast path is one load of this
/// pointer.
static API: AtomicPtr<Api> = AtomicPtr::new(core::ptr::null_mut());

/// The resolved functions: the fast path is one atomic load.
#[inline(always)]
pub(crate) fn api() -> Option<&'static Api> {
    let api = API.load(Ordering::Acquire);
    if api.is_null() {
        return api_slow();
    }
    // SAFETY: `API` is only ever set to the `Api` inside a resolution that
    // can release, which is final and lives (unchanged, leaked) for the rest
    // of the process.
    Some(unsafe { &*api })
}

/// `api()` before the first resolution, or while nothing can be released.
#[cold]
#[inline(never)]
fn api_slow() -> Option<&'static Api> {
    resolution().api()
}

/// The functions, when a release has already succeeded.
///
/// # Safety
///
/// [`api`] must have returned `Some` before, in this process.
#[inline(always)]
pub(crate) unsafe fn api_resolved() -> &'static Api {
    // SAFETY: `api` returned `Some`, so `API` was set (it is set before
    // `api` can return `Some`, see `in_force`) and never changes again.
    unsafe { &*API.load(Ordering::Relaxed) }
}

/// `PyErr_CheckSignals` of the interpreter found, if any (off the fast path).
pub(crate) fn check_signals() -> Option<CheckSignalsFn> {
    api()?.check_signals
}

/// Returns the resolution in force, looking (again) first if there is none
/// yet, or if it cannot release and the process loaded a library named like
/// libpython since it was made.
pub(crate) fn resolution() -> &'static Resolution {
    if let Some(current) = in_force()
        && (current.can_release() || !python_may_have_arrived())
    {
        return current;
    }
    look_again()
}

/// The resolution in force, if any; makes its `Api`, if it has one, the one
/// the fast path loads (before any caller can use it).
fn in_force() -> Option<&'static Resolution> {
    let current = RESOLUTION.load(Ordering::Acquire);
    if current.is_null() {
        return None;
    }
    // SAFETY: `RESOLUTION` is only ever set to a leaked `Box`, never freed.
    let current = unsafe { &*current };
    if let Some(api) = current.api() {
        // Every thread stores the same pointer: a resolution that can
        // release is never replaced.
        API.store(core::ptr::from_ref(api).cast_mut(), Ordering::Release);
    }
    Some(current)
}

#[cold]
#[inline(never)]
fn look_again() -> &'static Resolution {
    #[cfg(test)]
    tests::LOOKUPS.fetch_add(1, Ordering::Relaxed);
    #[cfg(unix)]
    {
        let (made, scanned) = unix::look_up(platform());
        let kept = offer(made).0;
        // After the offer: a block that reads what the walk saw finds the
        // answer in force.
        #[cfg(nuwa_dl_iterate)]
        loaded::remember(&scanned);
        #[cfg(not(nuwa_dl_iterate))]
        let () = scanned;
        kept
    }
    #[cfg(not(unix))]
    offer(look_up()).0
}

/// How good a resolution is: a resolution in force is replaced only by a
/// better one.
fn rank(resolution: &Resolution) -> u8 {
    match resolution.status() {
        Status::NotFound | Status::PyPyNotSupported => 0,
        Status::FoundWithoutHeldCheck => 1,
        Status::Ready => 2,
    }
}

/// Puts `made` in force unless the resolution in force is as good; returns
/// the one in force and whether it is `made`.
pub(crate) fn offer(made: Resolution) -> (&'static Resolution, bool) {
    let made_rank = rank(&made);
    let mut made = Some(made);
    let mut current = RESOLUTION.load(Ordering::Acquire);
    loop {
        // SAFETY: as in `in_force`.
        let kept = (!current.is_null()).then(|| unsafe { &*current });
        if let Some(kept) = kept
            && rank(kept) >= made_rank
        {
            return (in_force().unwrap_or(kept), false);
        }
        let boxed = Box::into_raw(Box::new(made.take().unwrap_or_else(|| unreachable!())));
        match RESOLUTION.compare_exchange(current, boxed, Ordering::AcqRel, Ordering::Acquire) {
            // The one replaced is leaked: callers may still hold it.
            Ok(_) => {
                return (in_force().unwrap_or_else(|| unreachable!()), true);
            }
            Err(actual) => {
                // SAFETY: `boxed` was never shared: take it back.
                made = Some(*unsafe { Box::from_raw(boxed) });
                current = actual;
            }
        }
    }
}

/// Whether a library named like libpython was loaded since the resolution
/// in force was looked up (never, where that cannot be told: see
/// [`looks_again`]).
fn python_may_have_arrived() -> bool {
    #[cfg(nuwa_dl_iterate)]
    return loaded::python_may_have_arrived();
    #[cfg(not(nuwa_dl_iterate))]
    return false;
}

/// Whether a resolution that cannot release is looked for again when the
/// process loads a library named like libpython: where the dynamic loader
/// counts the objects it loads and unloads (`dl_iterate_phdr`'s `dlpi_adds`
/// and `dlpi_subs`, in glibc, musl and FreeBSD; not OpenBSD).
pub(crate) fn looks_again() -> bool {
    #[cfg(nuwa_dl_iterate)]
    return loaded::counters_readable();
    #[cfg(not(nuwa_dl_iterate))]
    return false;
}

/// What the platform's dynamic loader can tell about where nuwa runs.
#[cfg(not(unix))]
fn look_up() -> Resolution {
    #[cfg(windows)]
    return windows::look_up(platform());
    #[cfg(not(any(unix, windows)))]
    return Resolution::not_found(false, "nothing (no dynamic loader on this target)".into());
}

/// The facts about this build target that the version decision needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Platform {
    /// The C frame of `restore_shim.c` is linked in (Unix).
    pub(crate) shim: bool,
    /// `pthread_exit` unwinds the stack, so the C frame's cleanup runs
    /// (glibc, FreeBSD). Elsewhere the thread just ends.
    pub(crate) exit_unwinds: bool,
    /// Threads have a last-error value that `PyEval_RestoreThread` keeps
    /// and `PyThreadState_Swap` does not (Windows' `GetLastError`).
    pub(crate) last_error: bool,
}

pub(crate) fn platform() -> Platform {
    Platform {
        shim: cfg!(nuwa_restore_shim),
        exit_unwinds: cfg!(nuwa_exit_unwinds),
        last_error: cfg!(windows),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicUsize;

    /// Full lookups made by this process.
    pub(super) static LOOKUPS: AtomicUsize = AtomicUsize::new(0);

    #[test]
    fn without_python_blocks_do_not_look_again_until_a_library_is_loaded() {
        let found = resolution();
        assert!(!found.python_found(), "{found}");
        let before = LOOKUPS.load(Ordering::Relaxed);
        for _ in 0..1000 {
            assert!(api().is_none());
        }
        #[cfg(nuwa_dl_iterate)]
        {
            assert!(looks_again());
            assert!(!python_may_have_arrived());
        }
        assert_eq!(
            LOOKUPS.load(Ordering::Relaxed),
            before,
            "blocks looked for Python again although no library was loaded"
        );
        assert!(
            core::ptr::eq(found, resolution()),
            "a worse or equal answer replaced it"
        );
    }

    #[test]
    fn a_resolution_is_replaced_only_by_a_better_one() {
        let not_found = Resolution::not_found(false, String::new());
        let pypy = Resolution::not_found(true, String::new());
        assert_eq!(rank(&not_found), rank(&pypy));
        let without_check = Resolution {
            state: report::State::NoHeldCheck {
                version: Some((3, 11)),
                missing: &["PyGILState_GetThisThreadState"],
            },
            via: Via::GlobalScope,
            place: String::new(),
        };
        assert!(rank(&without_check) > rank(&not_found));
    }
}
