//! Finding CPython's functions at run time, once per process.
//!
//! - [`report`]: what was found, as the public [`Resolution`].
//! - [`decide`]: from the symbols of one object, which functions to use on
//!   which version (pure logic, tested with fake symbol tables).
//! - [`names`]: which loaded objects are worth asking (pure logic, tested on
//!   every host, including the Windows DLL names).
//! - `unix` / `windows`: the platform lookup, in a fixed order.
//! - [`embed`](crate::embed): the functions handed over by an embedder.

use core::ffi::{c_int, c_ulong, c_void};
use core::sync::atomic::{AtomicPtr, Ordering};

use spin::Once;

pub(crate) mod decide;
pub(crate) mod names;
pub(crate) mod report;
#[cfg(unix)]
pub(crate) mod sys;
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
pub(crate) type ThreadIdentFn = unsafe extern "C" fn() -> c_ulong;
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
    /// 3.11 and older: `current` is process-global; held if it is this
    /// thread's GIL-state state, or (`thread_id`) a state this thread made.
    Compare {
        this_thread: GetThreadStateFn,
        thread_id: Option<ThreadIdField>,
    },
}

/// `PyThreadState.thread_id`, read at a fixed offset on the versions whose
/// layout is known, compared with `PyThread_get_thread_ident()`.
#[derive(Clone, Copy)]
#[cfg_attr(
    not(any(target_os = "linux", target_os = "android")),
    allow(dead_code, reason = "read only where Platform::thread_id_read")
)]
pub(crate) struct ThreadIdField {
    pub(crate) ident: ThreadIdentFn,
    /// Byte offset of `thread_id` (an `unsigned long`) in `PyThreadState`.
    pub(crate) offset: usize,
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

static RESOLUTION: Once<Resolution> = Once::new();

/// The `Api` of [`RESOLUTION`] once it is resolved and ready (null before,
/// and forever when nothing can be released): the fast path is one load of
/// this pointer.
static API: AtomicPtr<Api> = AtomicPtr::new(core::ptr::null_mut());

/// The resolved functions: the fast path is one atomic load.
#[inline(always)]
pub(crate) fn api() -> Option<&'static Api> {
    let api = API.load(Ordering::Acquire);
    if api.is_null() {
        return api_slow();
    }
    // SAFETY: `API` is only ever set to the `Api` inside the completed
    // `RESOLUTION`, which lives (unchanged) for the rest of the process.
    Some(unsafe { &*api })
}

/// `api()` before the first resolution, or where nothing can be released.
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
    // `api` can return `Some`, see `publish`) and never changes again.
    unsafe { &*API.load(Ordering::Relaxed) }
}

/// Makes the resolved `Api`, if any, the one the fast path loads.
fn publish(resolution: &'static Resolution) -> &'static Resolution {
    if let Some(api) = resolution.api() {
        API.store(core::ptr::from_ref(api).cast_mut(), Ordering::Release);
    }
    resolution
}

/// `PyErr_CheckSignals` of the interpreter found, if any (off the fast path).
pub(crate) fn check_signals() -> Option<CheckSignalsFn> {
    api()?.check_signals
}

/// Resolves (once per process) and returns what was found.
pub(crate) fn resolution() -> &'static Resolution {
    match RESOLUTION.get() {
        Some(resolution) => publish(resolution),
        None => resolve_slow(),
    }
}

/// Resolves with `make` unless the process already resolved; returns the
/// resolution in force and whether `make` made it.
pub(crate) fn resolve_with(make: impl FnOnce() -> Resolution) -> (&'static Resolution, bool) {
    let mut made = false;
    let resolution = RESOLUTION.call_once(|| {
        made = true;
        make()
    });
    (publish(resolution), made)
}

#[cold]
#[inline(never)]
fn resolve_slow() -> &'static Resolution {
    publish(RESOLUTION.call_once(look_up))
}

/// What the platform's dynamic loader can tell about where nuwa runs.
fn look_up() -> Resolution {
    #[cfg(unix)]
    return unix::look_up(platform());
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
    /// `PyThreadState.thread_id` offsets are known for this data model
    /// (64-bit pointers and `unsigned long`), and the field can be read
    /// without faulting on freed memory (`process_vm_readv`: Linux).
    pub(crate) thread_id_read: bool,
    /// Threads have a last-error value that `PyEval_RestoreThread` keeps
    /// and `PyThreadState_Swap` does not (Windows' `GetLastError`).
    pub(crate) last_error: bool,
}

pub(crate) fn platform() -> Platform {
    Platform {
        shim: cfg!(nuwa_restore_shim),
        exit_unwinds: cfg!(nuwa_exit_unwinds),
        thread_id_read: cfg!(all(
            any(target_os = "linux", target_os = "android"),
            target_pointer_width = "64"
        )),
        last_error: cfg!(windows),
    }
}
