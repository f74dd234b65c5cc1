//! The token path: blocks that skip the held check.

use core::cell::Cell;
use core::marker::PhantomData;

use nuwa_core::GilOps;

use crate::block::{self, CPython, SavedThreadState};

/// Proof, for the rest of one call from Python, that the calling thread holds
/// the GIL: blocks on `&mut` this token skip the held check, and cost what the
/// raw `PyEval_SaveThread` / `PyEval_RestoreThread` pair costs.
///
/// Make it once, at the top of a function that Python called (an `extern
/// "C"` entry point: CPython calls it with the GIL held), and run blocks on
/// `&mut gil`:
///
/// ```no_run
/// # fn work() -> u64 { 0 }
/// // SAFETY: CPython called this function with the GIL held.
/// let mut gil = unsafe { nuwa_ffi::GilHeld::new() };
/// let total = nuwa_ffi::nogil!(&mut gil => { work() });
/// ```
///
/// The token is neither `Copy`, `Clone`, `Send` nor `Sync`, and a block
/// borrows it mutably, so a second block on it inside the first does not
/// compile; where the borrow checker cannot see the nesting (a shared
/// `&mut GilHeld`, generic code nesting blocks on its backend) the inner block
/// releases nothing (one flag test and two stores per block):
///
/// ```compile_fail
/// // SAFETY: (for the example) the GIL is held.
/// let mut gil = unsafe { nuwa_ffi::GilHeld::new() };
/// nuwa_ffi::nogil!(&mut gil => {
///     nuwa_ffi::nogil!(&mut gil => { 1 }) // error[E0499]: `gil` borrowed twice
/// });
/// ```
///
/// A block on the token inside *another* block is not seen in release
/// builds; debug builds panic there where the held check is sure the GIL is
/// not held (the README's
/// [Guarantees](https://github.com/nuwa-rs/nuwa#guarantees) say where that is).
#[derive(Debug)]
pub struct GilHeld {
    /// Whether a block on this token has released the GIL and not yet
    /// taken it back.
    in_block: Cell<bool>,
    _not_send_or_copy: PhantomData<*mut ()>,
}

static_assertions::assert_not_impl_any!(GilHeld: Send, Sync, Copy, Clone);
static_assertions::assert_not_impl_any!(&'static mut GilHeld: Send, Sync);

impl GilHeld {
    /// Makes the token.
    ///
    /// # Safety
    ///
    /// The calling thread holds the GIL now (it is in a function that Python
    /// called, for example), and will hold it whenever a block starts on this
    /// token: use the token only in the function that made it, not inside
    /// another block (`nogil! { nogil!(&mut gil => { .. }) }` would call
    /// `PyEval_SaveThread` without the GIL, which crashes CPython), and do
    /// not keep it (in a thread-local, say) for a later call. Every Python
    /// thread state attached inside a block on the token (a
    /// `PyGILState_Ensure`) is detached again (its `PyGILState_Release`)
    /// before the block ends or takes the GIL back for a `with_gil!` part:
    /// a block on the token does not check for one (a checked block turns
    /// it into a panic), and taking the GIL back over it deadlocks (CPython
    /// 3.12 and older) or aborts the process (3.13 and later).
    #[inline(always)]
    pub const unsafe fn new() -> Self {
        GilHeld {
            in_block: Cell::new(false),
            _not_send_or_copy: PhantomData,
        }
    }
}

// SAFETY: by `GilHeld::new`'s contract the calling thread holds the GIL when
// a block starts on the token outside any other block on it; a block started
// inside another block on the same token (which the `&mut` borrow forbids in
// the common case, but not through a shared borrow of a `&mut GilHeld`) sees
// `in_block` and releases nothing. So `release` calls `PyEval_SaveThread`
// only while the GIL is held. The token is not `Send` or `Sync`, so the flag
// is only ever touched by its one thread. The state saved is the one
// restored, by `CPython`'s reacquire. `is_held` is `CPython`'s check.
unsafe impl GilOps for &mut GilHeld {
    type State = SavedThreadState;
    type Gil = CPython;

    #[inline(always)]
    unsafe fn release(&self) -> Option<SavedThreadState> {
        if self.in_block.get() {
            return None;
        }
        #[cfg(debug_assertions)]
        if crate::init().can_release() && block::surely_not_held() {
            misused();
        }
        // SAFETY: this thread holds the GIL (the token's contract, and no
        // block on this token has released it: checked above).
        let state = unsafe { block::release_unchecked() };
        self.in_block.set(state.is_some());
        state
    }

    #[inline(always)]
    unsafe fn reacquire(&self, state: SavedThreadState) {
        self.in_block.set(false);
        // SAFETY: the caller passes the state this thread saved, once; by
        // the token's contract no state was left attached inside the block.
        unsafe { block::reacquire_unchecked(state) }
    }

    fn is_held(&self) -> bool {
        block::gil_is_held()
    }

    #[inline(always)]
    unsafe fn part_began(&self, frame: &nuwa_core::__private::PartFrame) {
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { CPython.part_began(frame) }
    }

    #[inline(always)]
    unsafe fn part_ended(&self, frame: &nuwa_core::__private::PartFrame) {
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { CPython.part_ended(frame) }
    }
}

#[cfg(debug_assertions)]
#[cold]
#[inline(never)]
#[track_caller]
fn misused() -> ! {
    panic!(
        "nuwa_ffi::GilHeld: a block on this token started on a thread that does not hold the \
         GIL (inside another nogil! block, or with a token kept beyond the call that made it); \
         in a release build this would crash the interpreter. Use a checked block \
         (`nogil! {{ .. }}`) there. (This check runs in debug builds only.)"
    )
}
