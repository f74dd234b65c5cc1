//! The CPython backends.

#[cfg(any(target_os = "linux", target_os = "android"))]
use core::ffi::c_ulong;
use core::ptr::NonNull;

use nuwa_core::GilOps;

use crate::resolve::{
    self, Api, Check, Reacquire, Release, Restore, RestoreThreadFn, SwapFn, ThreadIdField,
    ThreadStatePtr,
};

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
/// the waiting thread; where that exit unwinds the stack (glibc, FreeBSD)
/// nuwa parks the thread instead, for good, as CPython 3.14 does itself: the
/// block never returns, no Rust frame is unwound, and the process exits
/// normally. A thread that must finish its work should not be a daemon
/// thread. See [`RestorePath`](crate::RestorePath) for the other targets.
///
/// # Panics
///
/// The reacquire panics if, inside the block, a Python thread state was
/// attached on this thread and not released (a `PyGILState_Ensure` whose
/// `PyGILState_Release` was skipped): taking the GIL back would deadlock
/// (CPython 3.12 and older) or abort the process (3.13 and later). The thread then
/// holds the GIL: through the block's own state again on 3.13 and later (and
/// on 3.8-3.11 when the state attached was not the block's own, as in a
/// legacy subinterpreter), otherwise through the state attached. If the
/// thread is already panicking, the message is printed and the process
/// aborts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CPython;

/// The thread state saved by a release, handed back to the reacquire.
///
/// Opaque, and neither `Send` nor `Sync`: it belongs to the thread that
/// released.
#[derive(Debug, PartialEq, Eq)]
pub struct SavedThreadState(NonNull<core::ffi::c_void>);

// SAFETY: `release` detaches the calling thread's state only if that state
// holds the GIL: `PyThreadState_Swap(NULL)` on 3.12 and 3.13 (it detaches
// only an attached state), `PyEval_SaveThread` after the held check (see
// `HeldCheck`) elsewhere; it returns the state it saved. `reacquire` attaches
// exactly that state again: `PyThreadState_Swap(saved)` on 3.13 and later
// (not on Windows), which first detaches a state left attached inside the
// block (then it panics after restoring), `PyEval_RestoreThread` elsewhere,
// after checking that no state was left attached (if one was, it panics, and
// restores nothing; see `reacquire_with`). Without the functions or the
// check, nothing is released.
unsafe impl GilOps for CPython {
    type State = SavedThreadState;
    type Gil = CPython;

    #[inline(always)]
    unsafe fn release(&self) -> Option<SavedThreadState> {
        let api = resolve::api()?;
        let saved = match api.release {
            Release::Swap(swap) => {
                // SAFETY: with a null argument, `PyThreadState_Swap` (3.12+)
                // detaches the calling thread's state only if one is
                // attached, which is the held check, and returns it (null
                // otherwise).
                unsafe { swap(core::ptr::null_mut()) }
            }
            Release::HeldCheck => {
                if !holds_gil(api) {
                    return None;
                }
                // SAFETY: the calling thread holds the GIL (checked above),
                // which is what `PyEval_SaveThread` requires.
                unsafe { (api.save)() }
            }
        };
        let saved = mark_finalizer(api, saved);
        NonNull::new(saved).map(SavedThreadState)
    }

    #[inline(always)]
    unsafe fn reacquire(&self, state: SavedThreadState) {
        // SAFETY: a `SavedThreadState` exists only after `release` found the
        // functions, so they are resolved.
        let api = unsafe { resolve::api_resolved() };
        // SAFETY: the caller passes the state this thread saved, once.
        unsafe { reacquire_with(api, state.0.as_ptr()) }
    }

    fn is_held(&self) -> bool {
        gil_is_held()
    }
}

/// Takes the GIL back with `tstate`, unless this thread holds it already.
///
/// # Safety
///
/// `tstate` is what this thread's release saved (possibly marked, see
/// [`mark_finalizer`]), not restored yet.
#[inline(always)]
unsafe fn reacquire_with(api: &Api, tstate: ThreadStatePtr) {
    if let Restore::Swap { swap, entry } = api.restore_kind {
        // SAFETY: the caller's contract; on 3.13 and later
        // `PyThreadState_Swap` detaches whatever state is attached to this
        // thread now (none, unless one was attached inside the block), then
        // takes the GIL and attaches the block's own, as
        // `PyEval_RestoreThread` would; the entry is the one chosen for this
        // version.
        let attached = unsafe { entry(swap, tstate) };
        if !attached.is_null() {
            attached_inside_block(true);
        }
        return;
    }
    // SAFETY: the current-state getter may be called on any thread, with or
    // without the GIL; it only reads the current thread state.
    let current = unsafe { (api.current)() };
    let attached = match api.check {
        // Thread-local: this thread has some state attached.
        Check::ThreadLocal => !current.is_null(),
        // Process-global: the block's own state is attached again, which
        // only this thread can have done (what `PyGILState_Ensure` does).
        Check::Compare { this_thread, .. } => {
            if !current.is_null() && current != unmarked(tstate) {
                // SAFETY: the caller's contract.
                unsafe { another_own_state_attached(api, this_thread, current, tstate) };
            }
            current == unmarked(tstate)
        }
    };
    if attached {
        attached_inside_block(false);
    }
    // SAFETY: the caller's contract, and this thread has no state attached
    // (checked above); the entry is the one chosen for this version.
    unsafe { (api.restore_entry)(api.restore, tstate) }
}

/// 3.8-3.11, at the end of a block whose own state is not the current one:
/// if the current one is this thread's GIL-state state, `PyGILState_Ensure`
/// attached it inside the block (on the thread of a legacy subinterpreter,
/// whose own state is another), and taking the GIL back now would wait for
/// this very thread. Then it detaches that state, takes the GIL back with
/// the block's own, and panics (see [`attached_inside_block`]). Otherwise
/// it returns: another thread holds the GIL.
///
/// # Safety
///
/// As for [`reacquire_with`]; `current` is the current state, read just
/// before.
#[cold]
#[inline(never)]
unsafe fn another_own_state_attached(
    api: &Api,
    this_thread: resolve::GetThreadStateFn,
    current: ThreadStatePtr,
    tstate: ThreadStatePtr,
) {
    // SAFETY: `PyGILState_GetThisThreadState` may be called on any thread,
    // with or without the GIL.
    if current != unsafe { this_thread() } {
        return;
    }
    // SAFETY: this thread holds the GIL through `current`, its own
    // GIL-state state (only this thread attaches that one), which
    // `PyEval_SaveThread` detaches; then no state is attached to this
    // thread, and `tstate` is what its release saved (the caller's
    // contract), taken back through the entry chosen for this version.
    unsafe {
        (api.save)();
        (api.restore_entry)(api.restore, tstate);
    }
    attached_inside_block(true);
}

/// `reacquire_with` without the check for a state left attached, for
/// [`GilHeld`](crate::GilHeld), whose contract covers it.
///
/// # Safety
///
/// As for `reacquire_with`; no thread state is attached to this thread.
#[inline(always)]
pub(crate) unsafe fn reacquire_unchecked(state: SavedThreadState) {
    // SAFETY: a `SavedThreadState` exists only after a release found the
    // functions, so they are resolved.
    let api = unsafe { resolve::api_resolved() };
    // SAFETY: the caller's contract (no state was left attached, so
    // `PyEval_RestoreThread` is right on every version, and cheaper than
    // the swap); the entry is the one chosen for this version.
    unsafe { (api.restore_entry)(api.restore, state.0.as_ptr()) }
}

/// The function a block calls to take the GIL back with
/// `PyThreadState_Swap` (3.13 and later), for `reacquire`.
pub(crate) fn swap_entry(reacquire: Reacquire) -> resolve::SwapEntryFn {
    match reacquire {
        #[cfg(nuwa_restore_shim)]
        Reacquire::Shim => nuwa_ffi_0_1_swap_thread,
        #[cfg(not(nuwa_restore_shim))]
        Reacquire::Shim => swap_direct,
        Reacquire::Direct => swap_direct,
        Reacquire::CheckFinalizing(_) => swap_unless_finalizing,
    }
}

/// `swap(tstate)`.
///
/// # Safety
///
/// `tstate` is the state this thread saved, not restored yet.
unsafe extern "C-unwind" fn swap_direct(swap: SwapFn, tstate: ThreadStatePtr) -> ThreadStatePtr {
    // SAFETY: the caller's contract.
    unsafe { swap(tstate) }
}

/// `swap(tstate)`, unless the interpreter started finalizing during the
/// block: then the thread is parked for good instead (see
/// [`restore_unless_finalizing`]).
///
/// # Safety
///
/// As for [`swap_direct`]; `marked` may carry [`mark_finalizer`]'s mark.
unsafe extern "C-unwind" fn swap_unless_finalizing(
    swap: SwapFn,
    marked: ThreadStatePtr,
) -> ThreadStatePtr {
    park_if_overtaken(marked);
    // SAFETY: the caller's contract.
    unsafe { swap(unmarked(marked)) }
}

/// The function a block calls to take the GIL back, for `reacquire`.
pub(crate) fn restore_entry(reacquire: Reacquire) -> resolve::RestoreEntryFn {
    match reacquire {
        #[cfg(nuwa_restore_shim)]
        Reacquire::Shim => nuwa_ffi_0_1_restore_thread,
        #[cfg(not(nuwa_restore_shim))]
        Reacquire::Shim => restore_direct,
        Reacquire::Direct => restore_direct,
        Reacquire::CheckFinalizing(_) => restore_unless_finalizing,
    }
}

/// `restore(tstate)`.
///
/// # Safety
///
/// `tstate` is the state this thread saved, not restored yet, with no
/// thread state attached.
unsafe extern "C-unwind" fn restore_direct(restore: RestoreThreadFn, tstate: ThreadStatePtr) {
    // SAFETY: the caller's contract.
    unsafe { restore(tstate) }
}

/// A thread state was attached inside the block and was still attached at
/// its end. If `swapped` (3.13 and later; and 3.8-3.11 when it is not the
/// block's own state) nuwa has detached it and attached the block's own
/// state again; otherwise it has not taken the GIL back (that would
/// deadlock), and the thread holds the GIL through the state attached
/// inside the block. Panics, or aborts if the thread is already panicking.
#[cold]
#[inline(never)]
fn attached_inside_block(swapped: bool) {
    const WHAT: &str = "nuwa: a Python thread state was attached on this thread inside a \
        nogil! block and is still attached at the end of the block (a PyGILState_Ensure \
        without its PyGILState_Release?). Release every thread state you attach inside a \
        block before the block ends.";
    let done = if swapped {
        "nuwa detached it and took the GIL back with the block's own state."
    } else {
        "Taking the GIL back now would deadlock, so nuwa did not: the thread holds the GIL \
         through the state attached inside the block."
    };
    if std::thread::panicking() {
        // (A second panic would abort without printing its message.)
        say_before_abort(&[WHAT, " ", done, " (already panicking: aborting)\n"]);
        std::process::abort();
    }
    panic!("{WHAT} {done}");
}

/// Writes `parts` to the standard error, as well as it can.
#[cold]
fn say_before_abort(parts: &[&str]) {
    #[cfg(unix)]
    for part in parts {
        let mut rest = part.as_bytes();
        while !rest.is_empty() {
            // SAFETY: `rest` is valid for reads of its length; fd 2 is only
            // written to (if it is closed, `write` fails, and so do we).
            let n = unsafe { resolve::sys::write(2, rest.as_ptr().cast(), rest.len()) };
            let Ok(n @ 1..) = usize::try_from(n) else {
                return;
            };
            rest = &rest[n.min(rest.len())..];
        }
    }
    #[cfg(not(unix))]
    std::eprint!("{}", parts.concat());
}

/// The state without the mark of [`mark_finalizer`].
#[inline(always)]
fn unmarked(tstate: ThreadStatePtr) -> ThreadStatePtr {
    #[cfg(not(nuwa_exit_unwinds))]
    return tstate.map_addr(|a| a & !FINALIZER_MARK);
    #[cfg(nuwa_exit_unwinds)]
    tstate
}

/// Set in a saved state's (aligned, so otherwise zero) lowest bit when the
/// interpreter was already finalizing at the release: only the finalizing
/// thread holds the GIL then, so the block is the finalizer's own.
#[cfg(not(nuwa_exit_unwinds))]
const FINALIZER_MARK: usize = 1;

/// Marks `saved` if finalization had started (see [`FINALIZER_MARK`]), on
/// the targets that check for it; elsewhere it returns `saved` as it is.
/// Every release that hands its state to [`CPython`]'s reacquire calls it
/// right after `PyEval_SaveThread`.
#[inline(always)]
pub(crate) fn mark_finalizer(api: &Api, saved: ThreadStatePtr) -> ThreadStatePtr {
    #[cfg(not(nuwa_exit_unwinds))]
    if let Reacquire::CheckFinalizing(is_finalizing) = api.reacquire
        && !saved.is_null()
        // SAFETY: `Py_IsFinalizing` may be called at any time.
        && unsafe { is_finalizing() } != 0
    {
        return saved.map_addr(|a| a | FINALIZER_MARK);
    }
    #[cfg(nuwa_exit_unwinds)]
    let _ = api;
    saved
}

/// Whether a block that released with `marked` must not take the GIL back
/// now: finalization started while it ran, and the block is not the
/// finalizing thread's. CPython 3.13 and older would end this thread in
/// `PyEval_RestoreThread`.
pub(crate) fn must_park(finalizing_now: bool, marked: ThreadStatePtr) -> bool {
    finalizing_now && (marked.addr() & 1) == 0
}

/// `PyEval_RestoreThread(tstate)`, unless the interpreter started finalizing
/// during the block: then the thread is parked for good instead.
///
/// # Safety
///
/// As for [`restore_direct`]; `marked` may carry [`mark_finalizer`]'s mark.
unsafe extern "C-unwind" fn restore_unless_finalizing(
    restore: RestoreThreadFn,
    marked: ThreadStatePtr,
) {
    park_if_overtaken(marked);
    // SAFETY: the caller's contract.
    unsafe { restore(unmarked(marked)) }
}

/// Parks the calling thread for good if finalization started while its
/// block ran (see [`must_park`]), on the targets that check for it.
fn park_if_overtaken(marked: ThreadStatePtr) {
    // SAFETY: this is only reached from an entry chosen once the functions
    // are resolved.
    let api = unsafe { resolve::api_resolved() };
    if let Reacquire::CheckFinalizing(is_finalizing) = api.reacquire {
        // SAFETY: `Py_IsFinalizing` may be called at any time.
        let finalizing_now = unsafe { is_finalizing() } != 0;
        if must_park(finalizing_now, marked) {
            loop {
                std::thread::park();
            }
        }
    }
}

/// Whether the calling thread holds the GIL: its own thread state is the one
/// that holds it (see [`HeldCheck`](crate::HeldCheck)).
#[inline(always)]
fn holds_gil(api: &Api) -> bool {
    // SAFETY: these CPython functions may be called from any thread, with or
    // without the GIL, before and after initialisation; they only read the
    // current thread state.
    unsafe {
        let current = (api.current)();
        if current.is_null() {
            return false;
        }
        match api.check {
            Check::ThreadLocal => true,
            Check::Compare { this_thread, .. } => {
                let mine = this_thread();
                mine == current || (!mine.is_null() && not_this_threads_own(api, current, mine))
            }
        }
    }
}

/// The thread-id fallback of [`holds_gil`], kept off the fast path.
#[cold]
#[inline(never)]
fn not_this_threads_own(api: &Api, current: ThreadStatePtr, mine: ThreadStatePtr) -> bool {
    match api.check {
        Check::Compare {
            thread_id: Some(field),
            ..
        } => made_on_this_thread(current, mine, field),
        _ => false,
    }
}

/// 3.8-3.11, when the current state is not this thread's GIL-state state:
/// whether it was made on this thread (a legacy subinterpreter's state), by
/// its `thread_id`. The offset is checked first on this thread's own state
/// (`mine`), whose `thread_id` is this thread's; if that read disagrees, the
/// layout is not the expected one and nothing is released.
///
/// Neither state is dereferenced: `current` belongs to whichever thread holds
/// the GIL, which may be deleting it at this moment, and `mine` is freed by
/// `Py_FinalizeEx` while a daemon thread still runs. Both fields are copied
/// by the kernel (`process_vm_readv` on this process), which reports memory
/// that is no longer mapped instead of faulting. A stale value is another
/// thread's id (or this thread's own, from its own freed state, which the
/// `current` read can never be while another thread holds the GIL), so the
/// answer is "not held". Where the call is refused (a seccomp filter), the
/// answer is "not held" too.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[cold]
#[inline(never)]
fn made_on_this_thread(
    current: ThreadStatePtr,
    mine: ThreadStatePtr,
    field: ThreadIdField,
) -> bool {
    const SIZE: usize = core::mem::size_of::<c_ulong>();
    let mut ids: [c_ulong; 2] = [0; 2];
    let local = [
        crate::resolve::sys::IoVec {
            iov_base: (&raw mut ids[0]).cast(),
            iov_len: SIZE,
        },
        crate::resolve::sys::IoVec {
            iov_base: (&raw mut ids[1]).cast(),
            iov_len: SIZE,
        },
    ];
    let remote = [
        crate::resolve::sys::IoVec {
            iov_base: mine.wrapping_byte_add(field.offset),
            iov_len: SIZE,
        },
        crate::resolve::sys::IoVec {
            iov_base: current.wrapping_byte_add(field.offset),
            iov_len: SIZE,
        },
    ];
    // SAFETY: `PyThread_get_thread_ident` may be called from any thread;
    // `process_vm_readv` writes only into `ids` (through `local`), and reads
    // the remote addresses with the kernel's checks: an unmapped address is an
    // error or a short count, never a fault.
    let (ident, copied) = unsafe {
        let ident = (field.ident)();
        let copied = crate::resolve::sys::process_vm_readv(
            crate::resolve::sys::getpid(),
            local.as_ptr(),
            2,
            remote.as_ptr(),
            2,
            0,
        );
        (ident, copied)
    };
    copied == (2 * SIZE) as isize && ids[0] == ident && ids[1] == ident
}

/// Elsewhere the fallback is not chosen (see `Platform::thread_id_read`).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn made_on_this_thread(_: ThreadStatePtr, _: ThreadStatePtr, _: ThreadIdField) -> bool {
    false
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
    let saved = mark_finalizer(api, saved);
    NonNull::new(saved).map(SavedThreadState)
}

#[cfg(nuwa_restore_shim)]
unsafe extern "C-unwind" {
    /// `restore(tstate)` through the C frame of `src/restore_shim.c`: at
    /// interpreter shutdown, where CPython 3.13 and older end the thread with
    /// an unwinding `pthread_exit`, the thread is parked for good and no Rust
    /// frame is unwound. It never unwinds (declared `C-unwind` only to share
    /// the entry type with the Rust entries).
    fn nuwa_ffi_0_1_restore_thread(restore: RestoreThreadFn, tstate: ThreadStatePtr);

    /// `swap(tstate)` through the same kind of C frame (3.13).
    fn nuwa_ffi_0_1_swap_thread(swap: SwapFn, tstate: ThreadStatePtr) -> ThreadStatePtr;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parks_only_blocks_that_finalization_overtook() {
        let tstate = 0x1000 as ThreadStatePtr;
        let marked = tstate.map_addr(|a| a | 1);
        assert!(!must_park(false, tstate));
        assert!(must_park(true, tstate), "a daemon thread's block");
        assert!(
            !must_park(true, marked),
            "the finalizing thread's own block"
        );
        assert!(!must_park(false, marked));
    }
}
