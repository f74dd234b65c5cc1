#![no_std]
#![doc = include_str!("../README.md")]
#![deny(missing_docs, missing_debug_implementations)]

use core::fmt;
use core::marker::PhantomData;

pub mod mock;

/// A backend that can release the GIL of the calling thread and take it back.
///
/// nuwa's macros are written against this trait only. `nuwa-ffi` implements it
/// for the CPython interpreter that loaded the extension; [`mock::MockGil`]
/// implements it for unit tests that run without Python.
///
/// Write library code that must release the GIL as a function generic over
/// `G: GilOps`: the extension passes the CPython backend, the unit test passes
/// a mock and then checks its counters.
///
/// A `&G` is a backend too, so `&ops` can be passed wherever `ops` can; and
/// an `Option<G>` is one that releases only when it is `Some`.
///
/// # Safety
///
/// Implementers promise, for every thread that calls these methods:
///
/// - [`release`](GilOps::release) returns `Some(state)` only if the calling
///   thread held the GIL and this call released it. Otherwise (the thread does
///   not hold it, it was already released by an enclosing block, there is no
///   interpreter) it releases nothing and returns `None`. It never releases a
///   GIL that the calling thread does not hold.
/// - [`reacquire`](GilOps::reacquire), given the `state` that the matching
///   `release` returned, takes the GIL back for the calling thread and
///   restores exactly that state, so that the thread is as it was before the
///   release.
///
/// The macros rely on this to stay sound: a `None` from `release` means they
/// never call `reacquire`, and nesting works because an inner `release` on
/// the same thread sees that nothing is held.
pub unsafe trait GilOps {
    /// What a release hands back and the matching reacquire consumes
    /// (for CPython, the saved thread state).
    type State;

    /// Releases the GIL if the calling thread holds it.
    ///
    /// Returns `Some(state)` if it released the GIL, `None` if it released
    /// nothing.
    ///
    /// # Safety
    ///
    /// After `Some(state)`, the calling thread no longer holds the GIL. The
    /// caller must pass `state` to [`reacquire`](GilOps::reacquire) on this
    /// same thread, exactly once, before this thread runs anything that needs
    /// the GIL (any Python API call) and before it returns to Python.
    /// [`Guard`] and [`nogil!`] do this for you.
    unsafe fn release(&self) -> Option<Self::State>;

    /// Takes the GIL back and restores the state saved by `release`.
    ///
    /// # Safety
    ///
    /// `state` must come from a call to [`release`](GilOps::release) on this
    /// backend, made by the calling thread, that has not been reacquired yet.
    unsafe fn reacquire(&self, state: Self::State);
}

// SAFETY: every call is forwarded unchanged to `T`, which upholds the contract.
unsafe impl<T: GilOps + ?Sized> GilOps for &T {
    type State = T::State;

    #[inline(always)]
    #[track_caller]
    unsafe fn release(&self) -> Option<Self::State> {
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { (**self).release() }
    }

    #[inline(always)]
    #[track_caller]
    unsafe fn reacquire(&self, state: Self::State) {
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { (**self).reacquire(state) }
    }
}

// SAFETY: `None` releases nothing and so never hands out a state to
// reacquire; `Some(ops)` forwards every call unchanged to `ops`.
unsafe impl<T: GilOps> GilOps for Option<T> {
    type State = T::State;

    /// `Some(ops)` releases through `ops`; `None` releases nothing, which
    /// makes releasing a run-time choice: `nogil!(release.then_some(ops) => { ... })`.
    #[inline(always)]
    #[track_caller]
    unsafe fn release(&self) -> Option<Self::State> {
        match self {
            // SAFETY: the caller's obligations are passed on unchanged.
            Some(ops) => unsafe { ops.release() },
            None => None,
        }
    }

    #[inline(always)]
    #[track_caller]
    unsafe fn reacquire(&self, state: Self::State) {
        // A state exists only if `release` returned one, which `None` never
        // does; so `None` has nothing to take back.
        if let Some(ops) = self {
            // SAFETY: the caller's obligations are passed on unchanged.
            unsafe { ops.reacquire(state) }
        }
    }
}

/// Releases the GIL when created and takes it back when dropped.
///
/// This is what [`nogil!`] puts in front of its block. Because it works by
/// `Drop`, every way out of the scope that owns it takes the GIL back exactly
/// once: the end of the block, `return`, `?`, `break`, `continue`, and an
/// unwinding panic. If the release released nothing (the thread did not hold
/// the GIL), the drop does nothing.
///
/// A guard is neither `Send` nor `Sync`: the GIL must be taken back by the
/// thread that released it.
///
/// ```compile_fail
/// # use nuwa_core::{GilOps, Guard};
/// struct Ops; // Send + Sync, and so is its state
/// unsafe impl GilOps for Ops {
///     type State = ();
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
    unsafe fn release(&self) -> Option<()> {
        None
    }
    unsafe fn reacquire(&self, (): ()) {}
}

static_assertions::assert_impl_all!(SendSyncOps: Send, Sync);
static_assertions::assert_not_impl_any!(Guard<SendSyncOps>: Send, Sync);
static_assertions::assert_not_impl_any!(Guard<&'static SendSyncOps>: Send, Sync);

impl<G: GilOps> Guard<G> {
    /// Releases the GIL through `ops` if the calling thread holds it.
    ///
    /// # Safety
    ///
    /// The guard must be dropped, not leaked: `mem::forget` (or a reference
    /// cycle) would leave the thread without the GIL when it goes back to
    /// Python. [`nogil!`] binds the guard to a local that the block cannot
    /// name, which makes this hold.
    #[inline(always)]
    pub unsafe fn release(ops: G) -> Self {
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

    /// Whether creating this guard released the GIL.
    ///
    /// `false` when the thread did not hold it: a nested block, a thread
    /// without a Python thread state, or no interpreter in the process.
    #[inline]
    pub fn released(&self) -> bool {
        self.state.is_some()
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

/// The value that stands in for a binding named in `hide(...)` inside a
/// [`nogil!`] block.
///
/// It has no methods, no fields and no trait impls, so any real use of a
/// hidden binding fails to compile with an error that names this type, for
/// example ``expected `Python<'_>`, found `HiddenWhileGilReleased` ``.
/// Move the use out of the block, where the GIL is held.
#[allow(
    missing_debug_implementations,
    reason = "so that `{:?}` of a hidden binding fails too"
)]
pub struct HiddenWhileGilReleased;

/// Runs a block with the GIL released and takes it back on every way out.
///
/// ```text
/// nogil!(OPS => { BODY })
/// nogil!(OPS, hide(name, ...) => { BODY })
/// ```
///
/// `OPS` is any [`GilOps`] value or place; it is borrowed, not moved, so a
/// mock can be inspected after the block. The macro evaluates to the value
/// of `BODY`.
///
/// The block is expanded in place behind a [`Guard`], not wrapped in a
/// closure, so `return`, `?`, and `break`/`continue` to labels outside it
/// work as in any block, and each of them, like an unwinding panic, takes
/// the GIL back exactly once on its way out. If the thread does not hold the
/// GIL (a nested block, a thread Python does not know), nothing is released
/// and the block simply runs.
///
/// `hide(a, b)` shadows the named bindings inside the block with
/// [`HiddenWhileGilReleased`], so that touching a Python handle (a `py`
/// token, an object pointer) while the GIL is released fails to compile.
/// The bindings are usable again after the block.
///
/// # Examples
///
/// ```
/// use nuwa_core::{mock::MockGil, nogil};
///
/// fn sum_of_squares(gil: &MockGil, data: &[f64]) -> f64 {
///     let total = nogil!(gil => {
///         data.iter().map(|x| x * x).sum::<f64>()
///     });
///     total.sqrt()
/// }
///
/// let gil = MockGil::new();
/// assert_eq!(sum_of_squares(&gil, &[3.0, 4.0]), 5.0);
/// assert_eq!((gil.releases(), gil.reacquires()), (1, 1));
/// ```
///
/// `?` leaves the block and the function, with the GIL taken back first:
///
/// ```
/// use nuwa_core::{mock::MockGil, nogil};
///
/// fn parse_all(gil: &MockGil, items: &[&str]) -> Result<u64, core::num::ParseIntError> {
///     nogil!(gil => {
///         let mut sum = 0;
///         for item in items {
///             sum += item.parse::<u64>()?;
///         }
///         Ok(sum)
///     })
/// }
///
/// let gil = MockGil::new();
/// assert!(parse_all(&gil, &["1", "x"]).is_err());
/// gil.done(); // held again, one release, one reacquire
/// ```
///
/// A hidden binding cannot be used inside the block:
///
/// ```compile_fail
/// use nuwa_core::{mock::MockGil, nogil};
/// struct Python;
/// fn needs_gil(_: &Python) {}
///
/// let (gil, py) = (MockGil::new(), Python);
/// nogil!(gil, hide(py) => { needs_gil(&py) }); // error: found `HiddenWhileGilReleased`
/// ```
#[macro_export]
macro_rules! nogil {
    ($ops:expr, hide($($hidden:ident),+ $(,)?) => $body:block) => {{
        let __nuwa_ops = &$ops;
        // SAFETY: the guard is bound to a local that the block cannot name
        // (macro hygiene), so it is neither moved nor leaked, and it is
        // dropped on this thread whichever way the block is left.
        let __nuwa_guard = unsafe { $crate::Guard::release(__nuwa_ops) };
        $(
            // Naming a binding in `hide` counts as a use of it, and the
            // shadow itself need not be used.
            let _ = &$hidden;
            #[allow(unused_variables)]
            let $hidden = $crate::HiddenWhileGilReleased;
        )+
        $body
    }};
    ($ops:expr => $body:block) => {{
        let __nuwa_ops = &$ops;
        // SAFETY: the guard is bound to a local that the block cannot name
        // (macro hygiene), so it is neither moved nor leaked, and it is
        // dropped on this thread whichever way the block is left.
        let __nuwa_guard = unsafe { $crate::Guard::release(__nuwa_ops) };
        $body
    }};
    ($($tokens:tt)*) => {
        ::core::compile_error!(
            "nuwa_core::nogil! needs a backend and a block: `nogil!(OPS => { ... })` \
             or `nogil!(OPS, hide(name, ...) => { ... })`; \
             for CPython, `nuwa_ffi::nogil! { ... }` supplies the backend"
        )
    };
}
