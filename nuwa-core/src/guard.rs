//! The drop guard, and taking the GIL back for part of a block.

use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;

use crate::GilOps;
use crate::ops::PartFrame;

/// Releases the GIL when created and takes it back when dropped.
///
/// This is what [`nogil!`](crate::nogil!) puts in front of its block. Because
/// it works by `Drop`, every way out of the scope that owns it takes the GIL
/// back exactly once: the end of the block, `return`, `?`, `break`,
/// `continue`, and an unwinding panic. If the release released nothing (the
/// thread did not hold the GIL), the drop does nothing.
///
/// A guard is neither `Send` nor `Sync`: the GIL must be taken back by the
/// thread that released it. A guard must be dropped, never leaked
/// (`mem::forget`, a reference cycle), and must not live across an `.await`
/// (a suspended future would leave the thread without the GIL): that is why
/// only nuwa's own forms create one, and keep it out of the block's reach.
/// Its name is public for one use: a lint that rejects holding it across an
/// `.await` (see the README's "Async code").
///
/// ```compile_fail
/// # use nuwa_core::{GilOps, Guard};
/// struct Ops; // Send + Sync, and so is its state
/// unsafe impl GilOps for Ops {
///     type State = ();
///     type Gil = Ops;
///     unsafe fn release(&self) -> Option<()> { None }
///     unsafe fn reacquire(&self, (): ()) {}
/// }
/// fn assert_send<T: Send>() {}
/// assert_send::<Guard<Ops>>(); // error: `*const ()` cannot be sent between threads
/// ```
#[must_use = "the GIL is taken back when the guard is dropped; an unbound guard is dropped at once"]
pub struct Guard<G: GilOps> {
    ops: G,
    state: Option<G::State>,
    // Raw pointers are neither `Send` nor `Sync`, whatever `G` and its state are.
    _not_send: PhantomData<*const ()>,
}

/// A backend that is `Send + Sync` with a `Send + Sync` state, so that the
/// assertions below hold only because of the guard's own marker.
struct SendSyncOps;

// SAFETY: never releases anything.
unsafe impl GilOps for SendSyncOps {
    type State = ();
    type Gil = SendSyncOps;
    unsafe fn release(&self) -> Option<()> {
        None
    }
    unsafe fn reacquire(&self, (): ()) {}
}

static_assertions::assert_impl_all!(SendSyncOps: Send, Sync);
static_assertions::assert_not_impl_any!(Guard<SendSyncOps>: Send, Sync);
static_assertions::assert_not_impl_any!(Guard<&'static SendSyncOps>: Send, Sync);
static_assertions::assert_not_impl_any!(Reentered<'static, SendSyncOps>: Send, Sync);

impl<G: GilOps> Guard<G> {
    /// Releases the GIL through `ops` if the calling thread holds it.
    ///
    /// # Safety
    ///
    /// The guard must be dropped on this thread before the thread runs
    /// anything that needs the GIL (outside [`with_gil`](Guard::with_gil)) or
    /// returns to Python: it must not be leaked (`mem::forget`, a reference
    /// cycle), nor held across an `.await`. [`nogil!`](crate::nogil!) binds the
    /// guard to a local that the block cannot name and rejects `.await` in the
    /// block, which makes this hold; [`Nogil::nogil`](crate::Nogil::nogil)
    /// keeps it in its own frame.
    #[inline(always)]
    pub(crate) unsafe fn release(ops: G) -> Self {
        // SAFETY: the state is stored in the guard and handed to `reacquire`
        // by `Drop`, on this thread (the guard cannot leave it), once; the
        // caller promises the guard is dropped.
        let state = unsafe { ops.release() };
        Guard {
            ops,
            state,
            _not_send: PhantomData,
        }
    }

    /// Whether the GIL is released by this guard now: creating it released
    /// the GIL, and no [`with_gil`](Guard::with_gil) part is running.
    ///
    /// `false` when the thread did not hold the GIL: a nested block, a thread
    /// without a Python thread state, or no interpreter in the process.
    #[inline]
    pub(crate) fn released(&self) -> bool {
        self.state.is_some()
    }

    /// Takes the GIL back for the length of `f`, then releases it again
    /// (Cython's `with gil:` inside `with nogil:`).
    ///
    /// If this guard released the GIL, it restores exactly the state it
    /// saved (in a subinterpreter, that interpreter's), runs `f`, and
    /// releases again on every way out of `f`, a panic included. If it
    /// released nothing, `f` runs only if the backend says the calling
    /// thread holds the GIL (a block that chose not to release, see
    /// [`ReleaseIf`](crate::ReleaseIf)); otherwise (a nested block, a thread
    /// that never held the GIL, no Python) `f` does not run and the result is
    /// `Err(GilUnavailable)`.
    pub(crate) fn with_gil<T>(&mut self, f: impl FnOnce() -> T) -> Result<T, GilUnavailable> {
        let reentered = self.reenter()?;
        // SAFETY: `reentered` stays in this frame, where it is not moved,
        // until it is dropped at the end of this function.
        unsafe { reentered.begin() };
        Ok(f())
    }

    /// Takes the GIL back for a part, as [`with_gil`](Guard::with_gil)
    /// does, and runs the backend's [`GilOps::check_signals`] in it: whether
    /// a signal handler raised.
    pub(crate) fn check_signals(&mut self) -> Result<bool, GilUnavailable> {
        let reentered = self.reenter()?;
        // SAFETY: as in `with_gil`.
        unsafe { reentered.begin() };
        // SAFETY: inside the part the calling thread holds the GIL that `G`
        // names: taken back by `reenter`, or held as the backend said.
        Ok(unsafe { reentered.guard.ops.check_signals() })
    }

    /// Takes the GIL back until the returned value is dropped; see
    /// [`with_gil`](Guard::with_gil). Used by `with_gil!`.
    pub(crate) fn reenter(&mut self) -> Result<Reentered<'_, G>, GilUnavailable> {
        match self.state.take() {
            Some(state) => {
                // SAFETY: `state` came from `release` on this thread (the
                // guard is not `Send`) and `take` makes this its only
                // reacquire. `Reentered` releases again when dropped.
                unsafe { self.ops.reacquire_for_part(state) };
                Ok(Reentered {
                    guard: self,
                    reacquired: true,
                    frame: PartFrame::new(),
                    began: Cell::new(false),
                })
            }
            None if self.ops.is_held() => Ok(Reentered {
                guard: self,
                reacquired: false,
                frame: PartFrame::new(),
                began: Cell::new(false),
            }),
            None => Err(GilUnavailable { _private: () }),
        }
    }
}

impl<G: GilOps> Drop for Guard<G> {
    #[inline(always)]
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            // SAFETY: `state` came from `release` on this thread (the guard is
            // not `Send`) and `take` makes this the only reacquire.
            unsafe { self.ops.reacquire(state) }
        }
    }
}

impl<G: GilOps> fmt::Debug for Guard<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("released", &self.released())
            .finish()
    }
}

/// The GIL taken back by [`reenter`](crate::__private::reenter); dropping it
/// releases the GIL again (if it was taken back).
pub struct Reentered<'a, G: GilOps> {
    guard: &'a mut Guard<G>,
    reacquired: bool,
    /// The backend's room in the part's stack frame (see
    /// [`GilOps::part_began`]).
    frame: PartFrame,
    /// `part_began` was called with `frame`.
    began: Cell<bool>,
}

impl<G: GilOps> Reentered<'_, G> {
    /// Tells the backend that the part's code begins (see
    /// [`GilOps::part_began`]). Not public API.
    ///
    /// # Safety
    ///
    /// `self` stays where it is (in the frame that runs the part) until it
    /// is dropped; called at most once.
    #[inline(always)]
    pub unsafe fn begin(&self) {
        self.began.set(true);
        // SAFETY: the caller keeps `self`, and so `frame`, in place in the
        // part's frame until the drop, which calls `part_ended` with it;
        // parts nest, so they end in the reverse order.
        unsafe { self.guard.ops.part_began(&self.frame) }
    }
}

impl<G: GilOps> Reentered<'_, G> {
    /// Does nothing: `with_gil!` calls it after the part's code, so that the
    /// part stays borrowed (and cannot be moved) until then.
    #[inline(always)]
    pub fn keep(&self) {}
}

impl<G: GilOps> Drop for Reentered<'_, G> {
    #[inline]
    fn drop(&mut self) {
        if self.began.get() {
            // SAFETY: `part_began` was called with this frame, on this
            // thread (not `Send`), and this is the only `part_ended`.
            unsafe { self.guard.ops.part_ended(&self.frame) }
        }
        if self.reacquired {
            // SAFETY: the GIL was taken back by `reenter` on this thread (not
            // `Send`); the new state goes back into the guard, whose `Drop`
            // takes it back once. The guard must still be dropped, which its
            // creator promised.
            self.guard.state = unsafe { self.guard.ops.release_after_part() };
        }
    }
}

impl<G: GilOps> fmt::Debug for Reentered<'_, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reentered")
            .field("reacquired", &self.reacquired)
            .finish()
    }
}

/// The GIL could not be taken back: the block released nothing and the
/// calling thread does not hold the GIL (a block nested in another, a thread
/// Python does not know, no interpreter in the process).
///
/// Returned by [`with_gil!`](crate::with_gil!) and
/// [`Released::with_gil`](crate::Released::with_gil); the part that needed
/// the GIL did not run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct GilUnavailable {
    _private: (),
}

impl GilUnavailable {
    /// The error, for implementers of [`WithGil`](crate::WithGil).
    pub const fn new() -> Self {
        GilUnavailable { _private: () }
    }
}

impl Default for GilUnavailable {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for GilUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GilUnavailable")
    }
}

impl fmt::Display for GilUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "the GIL cannot be taken back here: this block released nothing and the thread \
             does not hold the GIL (a nested block, or a thread Python does not know)",
        )
    }
}

impl core::error::Error for GilUnavailable {}
