//! The CPython backends.

use core::ptr::NonNull;

use nuwa_core::{GilOps, PartFrame};

use crate::resolve::{
    self, Api, Check, Reacquire, Release, Restore, RestoreThreadFn, SwapFn, ThreadStatePtr,
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
/// normally. A thread CPython ends inside Python code that a `with_gil` part
/// runs is parked too (on glibc), as the unwind reaches the frame that runs
/// the part: the frames between the Python code and that frame are unwound
/// as they would be without nuwa (where the call into Python can unwind, the
/// part's own locals too, without the GIL); the rest of the block and the
/// frames outside it are not.
/// A parked thread keeps what it holds (a lock taken before the block). A thread that must finish its work should not be a daemon
/// thread. See [`RestorePath`](crate::RestorePath) for the other targets.
///
/// # Panics
///
/// The reacquire panics if, inside the block, a Python thread state was
/// attached on this thread and not released (a `PyGILState_Ensure` whose
/// `PyGILState_Release` was skipped): taking the GIL back would deadlock
/// (CPython 3.12 and older) or abort the process (3.13 and later). The thread then
/// holds the GIL: through the block's own state again on 3.13 and later,
/// otherwise through the state attached. If the
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
            part_cleanup::push(frame)
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
            part_cleanup::pop(frame)
        };
        #[cfg(not(nuwa_part_cleanup))]
        let _ = frame;
    }
}

/// Parks a thread that CPython ends inside a part, before the unwind leaves
/// the part's frame, with glibc's cleanup handlers (what the C macro
/// `pthread_cleanup_push` used before glibc 2.3.3, still exported).
///
/// A part registers a handler whose buffer lives in the part's own stack
/// frame ([`PartFrame`]). The forced unwind of `pthread_exit` calls the
/// handlers of the frames it leaves, from its stop function, before it runs
/// any cleanup of that frame, whatever the frame's landing pads: the call
/// into Python inside a part is usually an `extern "C"` function, which
/// Rust assumes cannot unwind, so the part's own `Drop` would never run. The
/// handler parks the thread while the interpreter finalizes (see
/// [`park_if_ended_by_finalization`]), and otherwise returns: the unwind
/// (a `pthread_cancel`, a `pthread_exit` of the program's own) goes on as it
/// would without nuwa.
#[cfg(nuwa_part_cleanup)]
mod part_cleanup {
    use core::ffi::{c_int, c_void};
    use core::sync::atomic::{AtomicUsize, Ordering};

    use nuwa_core::PartFrame;

    type Handler = unsafe extern "C" fn(*mut c_void);
    type PushFn = unsafe extern "C" fn(*mut c_void, Handler, *mut c_void);
    type PopFn = unsafe extern "C" fn(*mut c_void, c_int);

    // `struct _pthread_cleanup_buffer`: a handler, its argument, an `int`
    // and a pointer.
    const _: () = assert!(
        size_of::<PartFrame>() >= 4 * size_of::<usize>()
            && align_of::<PartFrame>() >= align_of::<usize>()
    );

    /// `_pthread_cleanup_push` and `_pthread_cleanup_pop`: 0 before the
    /// lookup, 1 where the C library has none, the address otherwise. Set
    /// once (racing threads store the same values), never changed; `POP` is
    /// stored before `PUSH`.
    static PUSH: AtomicUsize = AtomicUsize::new(0);
    static POP: AtomicUsize = AtomicUsize::new(0);
    const MISSING: usize = 1;

    #[cold]
    #[inline(never)]
    fn look_up() -> usize {
        // SAFETY: `dlsym` with `RTLD_DEFAULT` (null on glibc) and
        // NUL-terminated names may be called at any time.
        let (push, pop) = unsafe {
            (
                crate::sys::dlsym(core::ptr::null_mut(), c"_pthread_cleanup_push".as_ptr()),
                crate::sys::dlsym(core::ptr::null_mut(), c"_pthread_cleanup_pop".as_ptr()),
            )
        };
        let (push, pop) = if push.is_null() || pop.is_null() {
            (MISSING, MISSING)
        } else {
            (push.addr(), pop.addr())
        };
        POP.store(pop, Ordering::Relaxed);
        PUSH.store(push, Ordering::Release);
        push
    }

    /// Registers the handler, with its buffer in `frame`.
    ///
    /// # Safety
    ///
    /// `frame` stays in the calling stack frame, unmoved, until [`pop`] is
    /// called with it on this thread; buffers are popped in reverse order.
    #[inline(always)]
    pub(super) unsafe fn push(frame: &PartFrame) {
        let mut push = PUSH.load(Ordering::Acquire);
        if push == 0 {
            push = look_up();
        }
        if push != MISSING {
            // SAFETY: `push` is the address of glibc's
            // `void _pthread_cleanup_push(struct _pthread_cleanup_buffer *,
            // void (*)(void *), void *)`.
            let push: PushFn = unsafe { core::mem::transmute::<usize, PushFn>(push) };
            // SAFETY: the buffer is `frame`'s room, large and aligned enough
            // (checked above), in place until `pop` (the caller's contract).
            unsafe { push(frame.as_ptr(), park_if_finalizing, core::ptr::null_mut()) }
        }
    }

    /// Unregisters the handler that [`push`] registered, without running it.
    ///
    /// # Safety
    ///
    /// `frame` was given to `push` on this thread, and not popped since.
    #[inline(always)]
    pub(super) unsafe fn pop(frame: &PartFrame) {
        // `push` looked the functions up before; neither value changes after.
        if PUSH.load(Ordering::Acquire) > MISSING {
            let pop = POP.load(Ordering::Relaxed);
            // SAFETY: `pop` is the address of glibc's
            // `void _pthread_cleanup_pop(struct _pthread_cleanup_buffer *, int)`.
            let pop: PopFn = unsafe { core::mem::transmute::<usize, PopFn>(pop) };
            // SAFETY: `frame` holds the buffer `push` registered last on this
            // thread (parts end in reverse order); 0: the handler is not run.
            unsafe { pop(frame.as_ptr(), 0) }
        }
    }

    /// The handler: called by the forced unwind of `pthread_exit` (or
    /// `pthread_cancel`) as it leaves the part's frame.
    unsafe extern "C" fn park_if_finalizing(_: *mut c_void) {
        super::park_if_ended_by_finalization();
    }
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
/// [`HeldCheck`](crate::HeldCheck)), and on 3.14 and later, nothing happens:
/// the block goes on without having released.
#[cold]
#[inline(never)]
fn part_ended_without_gil() {
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
    if let Some(api) = resolve::api()
        && matches!(api.reacquire, Reacquire::Shim)
        && let Some(is_finalizing) = api.is_finalizing
        // SAFETY: `Py_IsFinalizing` may be called at any time, on any
        // thread, with or without the GIL.
        && unsafe { is_finalizing() } != 0
    {
        // SAFETY: takes no arguments and never returns.
        unsafe { nuwa_ffi_0_1_park_forever() }
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
        Check::Compare { .. } => current == unmarked(tstate),
    };
    if attached {
        attached_inside_block(false);
    }
    // SAFETY: the caller's contract, and this thread has no state attached
    // (checked above); the entry is the one chosen for this version.
    unsafe { (api.restore_entry)(api.restore, tstate) }
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
/// its end. If `swapped` (3.13 and later) nuwa has detached it and attached the block's own
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
/// that holds it (see [`HeldCheck`](crate::HeldCheck)). Where that cannot be
/// told (3.8-3.11, a thread on a state other than its GIL-state state), the
/// answer is "not held".
#[inline(always)]
fn holds_gil(api: &Api) -> bool {
    matches!(held_answer(api), Held::Yes)
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
fn held_answer(api: &Api) -> Held {
    // SAFETY: these CPython functions may be called from any thread, with or
    // without the GIL, before and after initialisation; they only read the
    // current thread state (neither is dereferenced here).
    unsafe {
        let current = (api.current)();
        match api.check {
            _ if current.is_null() => Held::No,
            Check::ThreadLocal => compare(current, None),
            Check::Compare { this_thread } => compare(current, Some(this_thread())),
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
    resolve::api().is_some_and(|api| held_answer(api) == Held::No)
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

#[cfg(nuwa_exit_unwinds)]
unsafe extern "C" {
    /// Parks the calling thread for good (`pause()` in a loop, in the C
    /// frame of `src/restore_shim.c`): see [`part_ended_without_gil`].
    fn nuwa_ffi_0_1_park_forever() -> !;
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
