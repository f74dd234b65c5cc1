//! Interpreter shutdown: what a block's take-back does about CPython ending
//! the thread.
//!
//! CPython 3.13 and older end a thread that takes the GIL back while another
//! thread finalizes the interpreter (`PyThread_exit_thread`, which is
//! `pthread_exit` on Unix). Where that exit unwinds the stack (glibc,
//! FreeBSD), the unwind would cross Rust frames, so the take-back goes
//! through the C frame of `restore_shim.c`, which parks the thread for good
//! instead ([`Exit::Frame`]); a `with_gil` part registers a cleanup handler
//! that does the same ([`part_cleanup`], glibc). Where it does not unwind
//! (musl, macOS, the other BSDs), a block that finalization overtook parks
//! before taking the GIL back ([`Exit::CheckFinalizing`]). CPython 3.14 and
//! later hang such a thread themselves, and Windows ends it without
//! unwinding ([`Exit::Direct`]).
//!
//! Which [`Exit`] a plan uses is the version policy's choice
//! ([`decide`](crate::resolve::decide)); the variants that cannot happen on
//! the build target are not compiled (test builds have them all, so that the
//! policy of every target is tested on any host). [`TakeBack`] pairs an
//! `Exit` with the entry functions that carry it out.

#[cfg(any(test, nuwa_restore_shim))]
use crate::capi::IsFinalizingFn;
#[cfg(any(test, not(windows)))]
use crate::capi::SwapFn;
use crate::capi::{RestoreThreadFn, ThreadStatePtr};

/// How a block calls `PyEval_RestoreThread`: `entry(tstate, restore)`.
#[cfg(nuwa_exit_unwinds)]
type RestoreEntryFn = unsafe extern "C-unwind" fn(ThreadStatePtr, &RestoreThreadFn);
/// How a block calls `PyThreadState_Swap(saved)` to take the GIL back:
/// `entry(saved, swap)`, returning what `swap` returned.
#[cfg(nuwa_exit_unwinds)]
type SwapEntryFn = unsafe extern "C-unwind" fn(ThreadStatePtr, SwapFn) -> ThreadStatePtr;

/// What a block's take-back does about interpreter shutdown, chosen once by
/// version and target.
#[derive(Clone, Copy)]
pub(crate) enum Exit {
    /// `PyEval_RestoreThread` (or the swap) called directly: CPython 3.14
    /// and later hang a thread that takes the GIL back during finalization
    /// themselves; Windows ends it without unwinding.
    Direct,
    /// 3.13 and older where `pthread_exit` unwinds (glibc, FreeBSD): through
    /// the C frame that parks a thread CPython force-unwinds at shutdown.
    #[cfg(any(test, nuwa_exit_unwinds))]
    Frame {
        /// `Py_IsFinalizing` or `_Py_IsFinalizing`, for a `with_gil` part
        /// that ends without the GIL (see [`part_cleanup`]): `None` if the
        /// object defines neither.
        is_finalizing: Option<IsFinalizingFn>,
    },
    /// 3.13 and older where `pthread_exit` does not unwind (musl, macOS,
    /// ...): park the thread if finalization started while it was in the
    /// block, then take the GIL back. Narrows the window; cannot close it.
    #[cfg(any(test, nuwa_check_finalizing))]
    CheckFinalizing(IsFinalizingFn),
}

/// An [`Exit`] with the entry functions that take the GIL back its way:
/// made only by [`TakeBack::new`], so the entries always match the exit.
#[derive(Clone, Copy)]
pub(crate) struct TakeBack {
    exit: Exit,
    /// `entry(tstate, restore)`: chosen once, so that the fast path makes
    /// one indirect call instead of a branch on `exit` each time.
    #[cfg(nuwa_exit_unwinds)]
    restore_entry: RestoreEntryFn,
    /// `entry(tstate, swap)`, likewise.
    #[cfg(nuwa_exit_unwinds)]
    swap_entry: SwapEntryFn,
}

impl TakeBack {
    /// `exit`, with its entry functions.
    pub(crate) const fn new(exit: Exit) -> TakeBack {
        #[cfg(nuwa_exit_unwinds)]
        let (restore_entry, swap_entry): (RestoreEntryFn, SwapEntryFn) = match exit {
            Exit::Frame { .. } => (nuwa_ffi_0_1_restore_thread, nuwa_ffi_0_1_swap_thread),
            // (`CheckFinalizing` only in tests, for another target's policy:
            // never run.)
            _ => (restore_direct, swap_direct),
        };
        TakeBack {
            exit,
            #[cfg(nuwa_exit_unwinds)]
            restore_entry,
            #[cfg(nuwa_exit_unwinds)]
            swap_entry,
        }
    }

    /// The exit this take-back carries out.
    pub(crate) fn exit(&self) -> Exit {
        self.exit
    }

    /// Marks `saved` if finalization had started at the release (see
    /// [`FINALIZER_MARK`]), on the targets that check for it; elsewhere it
    /// returns `saved` as it is. Every release that hands its state to this
    /// take-back calls it right after releasing.
    #[inline(always)]
    pub(crate) fn mark(&self, saved: ThreadStatePtr) -> ThreadStatePtr {
        #[cfg(nuwa_check_finalizing)]
        if let Exit::CheckFinalizing(is_finalizing) = self.exit
            && !saved.is_null()
            // SAFETY: `Py_IsFinalizing` may be called at any time.
            && unsafe { is_finalizing() } != 0
        {
            return saved.map_addr(|a| a | FINALIZER_MARK);
        }
        saved
    }

    /// `restore(tstate)`, this exit's way.
    ///
    /// # Safety
    ///
    /// `restore` is `PyEval_RestoreThread`; `tstate` is what this thread's
    /// release saved (through [`mark`](Self::mark)), not restored yet, and
    /// no thread state is attached to this thread.
    #[inline(always)]
    pub(crate) unsafe fn restore(&self, restore: &RestoreThreadFn, tstate: ThreadStatePtr) {
        #[cfg(nuwa_exit_unwinds)]
        // SAFETY: the caller's contract; the entry is this exit's.
        unsafe {
            (self.restore_entry)(tstate, restore)
        };
        #[cfg(not(nuwa_exit_unwinds))]
        {
            self.park_if_overtaken(tstate);
            // SAFETY: the caller's contract.
            unsafe { (*restore)(unmarked(tstate)) }
        }
    }

    /// `swap(tstate)`, this exit's way: takes the GIL back with `tstate`
    /// after detaching whatever state is attached, and returns that state.
    ///
    /// # Safety
    ///
    /// `swap` is `PyThreadState_Swap` of CPython 3.13 or later; `tstate` is
    /// what this thread's release saved (through [`mark`](Self::mark)), not
    /// restored yet.
    #[cfg(any(test, not(windows)))]
    #[inline(always)]
    pub(crate) unsafe fn swap_back(&self, swap: SwapFn, tstate: ThreadStatePtr) -> ThreadStatePtr {
        #[cfg(nuwa_exit_unwinds)]
        // SAFETY: the caller's contract; the entry is this exit's.
        return unsafe { (self.swap_entry)(tstate, swap) };
        #[cfg(not(nuwa_exit_unwinds))]
        {
            self.park_if_overtaken(tstate);
            // SAFETY: the caller's contract.
            unsafe { swap(unmarked(tstate)) }
        }
    }

    /// Parks the calling thread for good if finalization started while its
    /// block ran (see [`must_park`]), on the targets that check for it.
    #[cfg(not(nuwa_exit_unwinds))]
    #[inline(always)]
    fn park_if_overtaken(&self, marked: ThreadStatePtr) {
        #[cfg(nuwa_check_finalizing)]
        if let Exit::CheckFinalizing(is_finalizing) = self.exit {
            park_if_overtaken(is_finalizing, marked);
        }
        #[cfg(not(nuwa_check_finalizing))]
        let _ = marked;
    }

    /// Whether a `with_gil` part that ends without the GIL while the
    /// interpreter finalizes is parked: `Py_IsFinalizing` if so.
    #[cfg(nuwa_exit_unwinds)]
    pub(crate) fn parks_parts(&self) -> Option<IsFinalizingFn> {
        match self.exit {
            Exit::Frame { is_finalizing } => is_finalizing,
            _ => None,
        }
    }
}

/// `restore(tstate)`.
///
/// # Safety
///
/// `tstate` is the state this thread saved, not restored yet, with no
/// thread state attached.
#[cfg(nuwa_exit_unwinds)]
unsafe extern "C-unwind" fn restore_direct(tstate: ThreadStatePtr, restore: &RestoreThreadFn) {
    // SAFETY: the caller's contract.
    unsafe { (*restore)(tstate) }
}

/// `swap(tstate)`.
///
/// # Safety
///
/// `tstate` is the state this thread saved, not restored yet.
#[cfg(nuwa_exit_unwinds)]
unsafe extern "C-unwind" fn swap_direct(tstate: ThreadStatePtr, swap: SwapFn) -> ThreadStatePtr {
    // SAFETY: the caller's contract.
    unsafe { swap(tstate) }
}

/// The state without the mark of [`FINALIZER_MARK`].
#[inline(always)]
pub(crate) fn unmarked(tstate: ThreadStatePtr) -> ThreadStatePtr {
    #[cfg(nuwa_check_finalizing)]
    return tstate.map_addr(|a| a & !FINALIZER_MARK);
    #[cfg(not(nuwa_check_finalizing))]
    tstate
}

/// Set in a saved state's (aligned, so otherwise zero) lowest bit when the
/// interpreter was already finalizing at the release: only the finalizing
/// thread holds the GIL then, so the block is the finalizer's own.
#[cfg(any(test, nuwa_check_finalizing))]
const FINALIZER_MARK: usize = 1;

/// Whether a block that released with `marked` must not take the GIL back
/// now: finalization started while it ran, and the block is not the
/// finalizing thread's. CPython 3.13 and older would end this thread in
/// `PyEval_RestoreThread`.
#[cfg(any(test, nuwa_check_finalizing))]
pub(crate) fn must_park(finalizing_now: bool, marked: ThreadStatePtr) -> bool {
    finalizing_now && (marked.addr() & FINALIZER_MARK) == 0
}

/// Parks the calling thread for good if finalization started while its
/// block ran (see [`must_park`]).
#[cfg(nuwa_check_finalizing)]
#[inline(never)]
fn park_if_overtaken(is_finalizing: IsFinalizingFn, marked: ThreadStatePtr) {
    // SAFETY: `Py_IsFinalizing` may be called at any time.
    let finalizing_now = unsafe { is_finalizing() } != 0;
    if must_park(finalizing_now, marked) {
        loop {
            std::thread::park();
        }
    }
}

/// Parks the calling thread for good (`pause()` in a loop, in the C frame),
/// when CPython ended it inside a `with_gil` part (see [`part_cleanup`]).
#[cfg(nuwa_exit_unwinds)]
#[cold]
pub(crate) fn park_forever() -> ! {
    // SAFETY: takes no arguments and never returns.
    unsafe { nuwa_ffi_0_1_park_forever() }
}

#[cfg(nuwa_exit_unwinds)]
unsafe extern "C-unwind" {
    /// `restore(tstate)` through the C frame of `src/restore_shim.c`: at
    /// interpreter shutdown, where CPython 3.13 and older end the thread with
    /// an unwinding `pthread_exit`, the thread is parked for good and no Rust
    /// frame is unwound. It never unwinds (declared `C-unwind` only to share
    /// the entry type with the Rust entries).
    fn nuwa_ffi_0_1_restore_thread(tstate: ThreadStatePtr, restore: &RestoreThreadFn);

    /// `swap(tstate)` through the same kind of C frame (3.13).
    fn nuwa_ffi_0_1_swap_thread(tstate: ThreadStatePtr, swap: SwapFn) -> ThreadStatePtr;
}

#[cfg(nuwa_exit_unwinds)]
unsafe extern "C" {
    /// Parks the calling thread for good (`pause()` in a loop, in the C
    /// frame of `src/restore_shim.c`).
    fn nuwa_ffi_0_1_park_forever() -> !;
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
/// handler (the block code's) parks the thread while the interpreter
/// finalizes, and otherwise returns: the unwind (a `pthread_cancel`, a
/// `pthread_exit` of the program's own) goes on as it would without nuwa.
///
/// [`PartFrame`]: nuwa_core::__private::PartFrame
#[cfg(nuwa_part_cleanup)]
pub(crate) mod part_cleanup {
    use core::ffi::{c_int, c_void};
    use core::sync::atomic::{AtomicUsize, Ordering};

    use nuwa_core::__private::PartFrame;

    /// The handler a part registers: called with a null argument.
    pub(crate) type Handler = unsafe extern "C" fn(*mut c_void);
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

    /// Registers `handler`, with its buffer in `frame`.
    ///
    /// # Safety
    ///
    /// `frame` stays in the calling stack frame, unmoved, until [`pop`] is
    /// called with it on this thread; buffers are popped in reverse order.
    #[inline(always)]
    pub(crate) unsafe fn push(frame: &PartFrame, handler: Handler) {
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
            unsafe { push(frame.as_ptr(), handler, core::ptr::null_mut()) }
        }
    }

    /// Unregisters the handler that [`push`] registered, without running it.
    ///
    /// # Safety
    ///
    /// `frame` was given to `push` on this thread, and not popped since.
    #[inline(always)]
    pub(crate) unsafe fn pop(frame: &PartFrame) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parks_only_blocks_that_finalization_overtook() {
        let tstate = 0x1000 as ThreadStatePtr;
        let marked = tstate.map_addr(|a| a | FINALIZER_MARK);
        assert!(!must_park(false, tstate));
        assert!(must_park(true, tstate), "a daemon thread's block");
        assert!(
            !must_park(true, marked),
            "the finalizing thread's own block"
        );
        assert!(!must_park(false, marked));
    }
}
