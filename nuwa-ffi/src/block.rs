//! Where the GIL is released and taken back: [`CPython`]'s [`GilOps`], the
//! code every block runs, following the [`Plan`] the lookup made once.
//!
//! A block's release ([`GilOps::release`]): the plan (one atomic load),
//! the held check and `PyEval_SaveThread`, or `PyThreadState_Swap(NULL)`,
//! which does both (3.12, 3.13). Its take-back ([`GilOps::reacquire`]): the
//! check that no thread state was left attached inside the block, then
//! `PyEval_RestoreThread`, or `PyThreadState_Swap(saved)`, which does both
//! (3.13; on 3.14 and later only to repair a state left attached), through
//! the plan's
//! [`TakeBack`](crate::shutdown::TakeBack) (the shutdown handling). The [`GilHeld`](crate::GilHeld) token's blocks use
//! [`release_unchecked`] and [`reacquire_unchecked`].

use core::ptr::NonNull;

use nuwa_core::__private::PartFrame;
use nuwa_core::GilOps;

use crate::capi::ThreadStatePtr;
use crate::plan::{self, Back, Out, Plan};
use crate::resolve;
use crate::shutdown;

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
/// normally. A thread CPython ends inside Python code that a `with_gil` part
/// runs is parked too (on glibc), as the unwind reaches the frame that runs
/// the part: the frames between the Python code and that frame are unwound
/// as they would be without nuwa (where the call into Python can unwind, the
/// part's own locals too, without the GIL); the rest of the block and the
/// frames outside it are not.
/// A parked thread keeps what it holds (a lock taken before the block). A
/// thread that must finish its work should not be a daemon thread. The other
/// targets: [Guarantees](https://github.com/nuwa-rs/nuwa#guarantees) in the
/// README.
///
/// # Panics
///
/// The reacquire panics if, inside the block, a Python thread state was
/// attached on this thread and not released (a `PyGILState_Ensure` whose
/// `PyGILState_Release` was skipped): taking the GIL back would deadlock
/// (CPython 3.12 and older) or abort the process (3.13 and later). The thread then
/// holds the GIL: through the block's own state again on 3.13 and later
/// (not on Windows), otherwise through the state attached. If the
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
// exactly that state again: `PyThreadState_Swap(saved)` on 3.13 (not on
// Windows), which first detaches a state left attached inside the block
// (then it panics after restoring), `PyEval_RestoreThread` elsewhere, after
// checking that no state was left attached (if one was, it panics: on 3.14
// and later, not on Windows, after the same swap; elsewhere restoring
// nothing; see `reacquire_with` and `left_attached`). Without the functions or the
// check, nothing is released.
unsafe impl GilOps for CPython {
    type State = SavedThreadState;
    type Gil = CPython;

    #[inline(always)]
    unsafe fn release(&self) -> Option<SavedThreadState> {
        // SAFETY: the plan in force is one that can release, or the first-use
        // plan, whose release looks that one up and releases its way.
        let saved = unsafe { release_on(plan::in_force()) };
        NonNull::new(saved).map(SavedThreadState)
    }

    #[inline(always)]
    unsafe fn reacquire(&self, state: SavedThreadState) {
        // SAFETY: the caller passes the state this thread saved, once; a
        // `SavedThreadState` exists only after a release, so the plan in
        // force is the one that released.
        unsafe { reacquire_with(plan::in_force(), state.0.as_ptr()) }
    }

    fn is_held(&self) -> bool {
        gil_is_held()
    }

    #[inline(always)]
    unsafe fn release_after_part(&self) -> Option<SavedThreadState> {
        // SAFETY: the caller's obligations are `release`'s.
        let saved = unsafe { self.release() };
        if saved.is_none() {
            part_ended_without_gil();
        }
        saved
    }

    #[inline(always)]
    unsafe fn part_began(&self, frame: &PartFrame) {
        #[cfg(nuwa_part_cleanup)]
        // SAFETY: the caller's contract: `frame` stays in the part's stack
        // frame until `part_ended`, and parts end in reverse order.
        unsafe {
            shutdown::part_cleanup::push(frame, park_if_finalizing)
        };
        #[cfg(not(nuwa_part_cleanup))]
        let _ = frame;
    }

    #[inline(always)]
    unsafe fn part_ended(&self, frame: &PartFrame) {
        // A part ends without the GIL only when CPython ended the thread
        // inside it (pthread_exit at shutdown) and the unwind ran the part's
        // landing pads before reaching the handler below: park here, also
        // for a part of a block that kept the GIL, whose end releases
        // nothing (so `release_after_part` never sees it).
        #[cfg(nuwa_exit_unwinds)]
        if !gil_is_held() {
            part_ended_without_gil();
        }
        #[cfg(nuwa_part_cleanup)]
        // SAFETY: the caller's contract: `frame` is what `part_began` was
        // given on this thread.
        unsafe {
            shutdown::part_cleanup::pop(frame)
        };
        #[cfg(not(nuwa_part_cleanup))]
        let _ = frame;
    }
}

/// The held check and the release, `plan`'s way: the state saved (marked,
/// see [`TakeBack::mark`](crate::shutdown::TakeBack::mark)), or null if the
/// thread does not hold the GIL (then nothing was released).
///
/// # Safety
///
/// `plan` is the plan in force (or one that can release).
#[inline(always)]
unsafe fn release_on(plan: &Plan) -> ThreadStatePtr {
    let saved = match plan.out() {
        // SAFETY: with a null argument, `PyThreadState_Swap` (3.12+)
        // detaches the calling thread's state only if one is attached, which
        // is the held check, and returns it (null otherwise); the first-use
        // plan's function does the same, the way of the plan it finds.
        Out::Swap(swap) => unsafe { swap(core::ptr::null_mut()) },
        Out::Compare(this_thread) => {
            // SAFETY: the getters may be called from any thread, with or
            // without the GIL; they only read the current thread state
            // (never dereferenced here).
            let current = unsafe { (plan.current)() };
            if current.is_null() {
                return core::ptr::null_mut();
            }
            // SAFETY: as above.
            if current != unsafe { this_thread() } {
                return core::ptr::null_mut();
            }
            // SAFETY: the calling thread holds the GIL (checked above),
            // which is what `PyEval_SaveThread` requires.
            unsafe { (plan.save)() }
        }
        Out::Local => {
            // SAFETY: as above.
            if unsafe { (plan.current)() }.is_null() {
                return core::ptr::null_mut();
            }
            // SAFETY: as above.
            unsafe { (plan.save)() }
        }
    };
    plan.take_back.mark(saved)
}

/// The first-use plan's release (see [`plan::in_force`]): looks the plan
/// up, publishes it if it can release, and releases its way.
///
/// # Safety
///
/// Called as `PyThreadState_Swap(NULL)` would be, by a block's release.
#[cold]
#[inline(never)]
pub(crate) unsafe extern "C-unwind" fn first_release(_: ThreadStatePtr) -> ThreadStatePtr {
    let Some(plan) = resolve::plan() else {
        return core::ptr::null_mut();
    };
    plan::publish(plan);
    // SAFETY: `plan` can release, and is now the plan in force.
    unsafe { release_on(plan) }
}

/// The first-use plan's `PyEval_SaveThread`, for the token (see
/// [`plan::in_force`]): looks the plan up, publishes it if it can release,
/// and releases (null if there is no Python).
///
/// # Safety
///
/// The calling thread holds the GIL (if there is a Python).
#[cold]
#[inline(never)]
pub(crate) unsafe extern "C" fn first_save() -> ThreadStatePtr {
    let Some(plan) = resolve::plan() else {
        return core::ptr::null_mut();
    };
    plan::publish(plan);
    // SAFETY: the caller's contract.
    let saved = unsafe { (plan.save)() };
    plan.take_back.mark(saved)
}

/// The first-use plan's current-state getter: no state (it is never asked;
/// the checks that read it take the resolved plan).
///
/// # Safety
///
/// None beyond its C signature's (it reads nothing); `unsafe` only to have
/// the type of the getters it stands for.
pub(crate) unsafe extern "C" fn no_state() -> ThreadStatePtr {
    core::ptr::null_mut()
}

/// The first-use plan's `PyEval_RestoreThread`: never called, since a block
/// takes the GIL back only after a release, which publishes the plan found.
///
/// # Safety
///
/// None: it aborts the process, whatever it is given; `unsafe` only to have
/// the type of `PyEval_RestoreThread`.
#[cold]
pub(crate) unsafe extern "C-unwind" fn never_restore(_: ThreadStatePtr) {
    say_before_abort(&["nuwa: internal error: a take-back before any release\n"]);
    std::process::abort();
}

/// Takes the GIL back with `tstate`, unless a thread state was left attached
/// inside the block.
///
/// # Safety
///
/// `tstate` is what this thread's release saved (through
/// [`TakeBack::mark`](crate::shutdown::TakeBack::mark)), not restored yet.
#[inline(always)]
unsafe fn reacquire_with(plan: &Plan, tstate: ThreadStatePtr) {
    match plan.back() {
        #[cfg(any(test, not(windows)))]
        Back::Swap(swap) => {
            // SAFETY: the caller's contract; on 3.13 and later
            // `PyThreadState_Swap` detaches whatever state is attached to
            // this thread now (none, unless one was attached inside the
            // block), then takes the GIL and attaches the block's own, as
            // `PyEval_RestoreThread` would.
            let attached = unsafe { plan.take_back.swap_back(swap, tstate) };
            if !attached.is_null() {
                attached_inside_block(true);
            }
            return;
        }
        // Process-global: the block's own state is attached again, which
        // only this thread can have done (what `PyGILState_Ensure` does).
        Back::Compare => {
            // SAFETY: the getter may be called on any thread, with or
            // without the GIL; it only reads the current thread state.
            if unsafe { (plan.current)() } == shutdown::unmarked(tstate) {
                attached_inside_block(false);
            }
        }
        // Thread-local: this thread has some state attached.
        Back::Local => {
            // SAFETY: as above.
            if !unsafe { (plan.current)() }.is_null() {
                // SAFETY: the caller's contract.
                unsafe { left_attached(tstate) };
            }
        }
    }
    // SAFETY: the caller's contract, and this thread has no state attached
    // (checked above).
    unsafe { plan.take_back.restore(&plan.restore, tstate) }
}

/// `reacquire_with` without the check for a state left attached, for
/// [`GilHeld`](crate::GilHeld), whose contract covers it.
///
/// # Safety
///
/// As for `reacquire_with`; no thread state is attached to this thread.
#[inline(always)]
pub(crate) unsafe fn reacquire_unchecked(state: SavedThreadState) {
    // A `SavedThreadState` exists only after a release, so the plan in
    // force is the one that released.
    let plan = plan::in_force();
    // SAFETY: the caller's contract (no state was left attached, so
    // `PyEval_RestoreThread` is right on every version, and cheaper than
    // the swap).
    unsafe { plan.take_back.restore(&plan.restore, state.0.as_ptr()) }
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
    let plan = plan::in_force();
    // SAFETY: the caller's contract: this thread holds the GIL (the
    // first-use plan's function looks the plan up first, and releases
    // nothing without a Python).
    let saved = unsafe { (plan.save)() };
    let saved = plan.take_back.mark(saved);
    NonNull::new(saved).map(SavedThreadState)
}

/// A `with_gil` part that took the GIL back ended with the thread not
/// holding it. Where `pthread_exit` unwinds (glibc, FreeBSD), on CPython
/// 3.13 and older, while the interpreter finalizes, that means CPython ended
/// the thread inside the part, in Python code the part ran (a callback, a
/// signal handler): it gave up the GIL in its eval loop, could not take it
/// back, and called `pthread_exit`, whose forced unwind has run the part's
/// own cleanups and is now in the `Drop` that ends the part. Letting it go on
/// would unwind the rest of the block and the function around it, up to the
/// extension's `extern "C"` boundary, which aborts the process. The thread is
/// parked here instead, for good, as the block's own take-back does (and as
/// CPython 3.14 does itself).
///
/// Only the finalizing thread can hold the GIL once finalization has
/// started, and CPython never ends that one, so a thread parked here holds
/// no GIL. Outside finalization (a held check that cannot be sure, see
/// the README's [version notes](https://github.com/nuwa-rs/nuwa#how-nuwa-finds-cpython-version-by-version)), and on 3.14 and later, nothing happens:
/// the block goes on without having released.
#[cold]
#[inline(never)]
fn part_ended_without_gil() {
    park_if_ended_by_finalization();
}

/// The handler a part registers with glibc's cleanup handlers (see
/// [`shutdown::part_cleanup`]): called by the forced unwind of
/// `pthread_exit` (or `pthread_cancel`) as it leaves the part's frame.
#[cfg(nuwa_part_cleanup)]
unsafe extern "C" fn park_if_finalizing(_: *mut core::ffi::c_void) {
    park_if_ended_by_finalization();
}

/// Parks the calling thread for good if, where `pthread_exit` unwinds, on
/// CPython 3.13 and older, the interpreter is finalizing: called where the
/// thread is known not to hold the GIL, or is being unwound (see
/// [`part_ended_without_gil`]). Otherwise it returns.
#[cold]
#[inline(never)]
fn park_if_ended_by_finalization() {
    #[cfg(nuwa_exit_unwinds)]
    if let Some(plan) = resolve::plan()
        && let Some(is_finalizing) = plan.take_back.parks_parts()
        // SAFETY: `Py_IsFinalizing` may be called at any time, on any
        // thread, with or without the GIL.
        && unsafe { is_finalizing() } != 0
    {
        shutdown::park_forever();
    }
}

/// The thread-local end check found a state attached: where the plan can
/// repair (3.14 and later, not on Windows), `PyThreadState_Swap(tstate)`
/// detaches it and takes the GIL back with the block's own state, as the
/// take-back of 3.13 does on every block; then [`attached_inside_block`].
/// Not while the thread is already panicking: the process is about to abort
/// with nuwa's message, and the swap, which waits for the GIL, could keep it
/// from being printed (at shutdown CPython 3.14+ hangs a thread that waits).
///
/// # Safety
///
/// As for [`reacquire_with`]: `tstate` is what this thread's release saved,
/// not restored yet, under the plan in force.
#[cold]
#[inline(never)]
unsafe fn left_attached(tstate: ThreadStatePtr) -> ! {
    // Only a block that released calls this, so the plan in force is the
    // one that released.
    let plan = plan::in_force();
    #[cfg(any(test, not(windows)))]
    if let Some(swap) = plan.repair
        && !std::thread::panicking()
    {
        // SAFETY: the caller's contract; `swap` is `PyThreadState_Swap` of
        // 3.14 or later, which detaches the state attached to this thread
        // first.
        let _detached = unsafe { plan.take_back.swap_back(swap, tstate) };
        attached_inside_block(true);
    }
    let _ = (plan, tstate);
    attached_inside_block(false)
}

/// A thread state was attached inside the block and was still attached at
/// its end. If `swapped` (3.13 and later, not on Windows), nuwa has detached
/// it and attached the block's own state again; otherwise it has not taken
/// the GIL back (that would deadlock or abort), and the thread holds the GIL through
/// the state attached inside the block. Panics, or aborts if the thread is
/// already panicking.
#[cold]
#[inline(never)]
fn attached_inside_block(swapped: bool) -> ! {
    const WHAT: &str = "nuwa: a Python thread state was attached on this thread inside a \
        nogil! block and is still attached at the end of the block (a PyGILState_Ensure \
        without its PyGILState_Release?). Release every thread state you attach inside a \
        block before the block ends.";
    let done = if swapped {
        "nuwa detached it and took the GIL back with the block's own state."
    } else {
        "Taking the GIL back now would deadlock or abort, so nuwa did not: the thread holds the GIL \
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
            let n = unsafe { crate::sys::write(2, rest.as_ptr().cast(), rest.len()) };
            let Ok(n @ 1..) = usize::try_from(n) else {
                return;
            };
            rest = &rest[n.min(rest.len())..];
        }
    }
    #[cfg(not(unix))]
    std::eprint!("{}", parts.concat());
}

/// Whether the calling thread holds the GIL: its own thread state is the one
/// that holds it (see the README's [version notes](https://github.com/nuwa-rs/nuwa#how-nuwa-finds-cpython-version-by-version)). Where that cannot be
/// told (3.8-3.11, a thread on a state other than its GIL-state state), the
/// answer is "not held".
#[inline(always)]
fn holds_gil(plan: &Plan) -> bool {
    matches!(held_answer(plan), Held::Yes)
}

/// The held check's full answer: [`holds_gil`] takes only [`Held::Yes`];
/// the debug check of [`GilHeld`](crate::GilHeld) complains only on
/// [`Held::No`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Held {
    /// This thread's state is the one attached: it holds the GIL.
    Yes,
    /// This thread holds no GIL, for sure: no state is attached to it (3.12
    /// and later), or none is attached to any thread (3.11 and older).
    No,
    /// 3.11 and older: a state other than this thread's GIL-state state
    /// holds the GIL. That may be another thread's, or this thread's in a
    /// legacy subinterpreter, or one another thread made for this one:
    /// nothing on these versions tells them apart safely.
    Unknown,
}

/// See [`Held`].
#[inline(always)]
fn held_answer(plan: &Plan) -> Held {
    // SAFETY: these CPython functions may be called from any thread, with or
    // without the GIL, before and after initialisation; they only read the
    // current thread state (neither is dereferenced here).
    unsafe {
        let current = (plan.current)();
        match plan.this_thread() {
            _ if current.is_null() => Held::No,
            None => compare(current, None),
            Some(this_thread) => compare(current, Some(this_thread())),
        }
    }
}

/// The held check on the current state `current` and, where it is
/// process-global (3.11 and older), this thread's GIL-state state `mine`.
#[inline(always)]
pub(crate) fn compare(current: ThreadStatePtr, mine: Option<ThreadStatePtr>) -> Held {
    match mine {
        _ if current.is_null() => Held::No,
        None => Held::Yes,
        Some(mine) if mine == current => Held::Yes,
        Some(_) => Held::Unknown,
    }
}

/// In debug builds, for [`GilHeld`](crate::GilHeld): whether the calling
/// thread surely does not hold the GIL ([`Held::No`]). `false` without
/// Python, and where the check cannot tell.
#[cfg(debug_assertions)]
pub(crate) fn surely_not_held() -> bool {
    resolve::plan().is_some_and(|plan| held_answer(plan) == Held::No)
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
    resolve::plan().is_some_and(holds_gil)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_held_check_says_held_only_when_sure() {
        let null = core::ptr::null_mut();
        let (a, b) = (0x1000 as ThreadStatePtr, 0x2000 as ThreadStatePtr);
        // 3.12 and later: thread-local.
        assert_eq!(compare(null, None), Held::No);
        assert_eq!(compare(a, None), Held::Yes);
        // 3.11 and older: process-global.
        assert_eq!(compare(a, Some(a)), Held::Yes);
        assert_eq!(compare(null, Some(a)), Held::No, "no thread holds it");
        assert_eq!(compare(null, Some(null)), Held::No);
        // Another state holds it: another thread's, or this thread's in a
        // legacy subinterpreter, or one made for it by another thread.
        assert_eq!(compare(b, Some(a)), Held::Unknown);
        assert_eq!(compare(b, Some(null)), Held::Unknown, "no GIL-state state");
    }
}
