//! The strict form: a `Send` closure run with the GIL released.

use core::fmt;

use crate::{GilOps, GilUnavailable, Guard};

/// Runs a closure with the GIL released: the strict form of
/// [`nogil!`](crate::nogil!).
///
/// The closure must be `Send`, and so must its result. Python handles are not
/// `Send` (a raw `*mut PyObject`, PyO3's `Python<'py>` and `Bound<'py, T>`), so
/// a closure that captures one does not compile: what `hide(...)` checks by
/// name for the names you list, this checks by type for everything the
/// closure can reach. And the closure is a plain `FnOnce`, not an `async`
/// block, so `.await` cannot appear in it: this is the form for `async` code.
///
/// The price is the closure's: `return` and `?` leave the closure, not the
/// calling function; return a `Result` from the closure and apply `?` to it.
///
/// The closure gets a [`Released`], through which it can take the GIL back
/// for part of its work ([`Released::with_gil`]).
///
/// Every [`GilOps`] backend is a `Nogil` (a guard in this frame around the
/// call). Implement it yourself to route the release through another
/// framework, for example PyO3's `Python::detach`, so that library code
/// written against `Nogil` runs under that framework's own bookkeeping.
///
/// # Examples
///
/// ```
/// use nuwa_core::{mock::MockGil, Nogil};
///
/// let gil = MockGil::new();
/// let data = vec![3.0_f64, 4.0];
/// let norm = gil.nogil(|_| data.iter().map(|x| x * x).sum::<f64>().sqrt());
/// assert_eq!(norm, 5.0);
/// gil.done();
/// ```
///
/// A handle that is not `Send` cannot be captured:
///
/// ```compile_fail
/// use nuwa_core::{mock::MockGil, Nogil};
/// let gil = MockGil::new();
/// let object: *mut u8 = core::ptr::null_mut(); // stands for a *mut PyObject
/// gil.nogil(|_| object.is_null()); // error: `*mut u8` cannot be shared between threads safely
/// ```
pub trait Nogil {
    /// Which GIL this releases (see [`GilOps::Gil`]); the closure's
    /// [`Released`] is typed by it.
    type Gil: 'static;

    /// Runs `f` with the GIL released (if the calling thread holds it) and
    /// returns its value, with the GIL held again (if it was held before).
    fn nogil<T, F>(&self, f: F) -> T
    where
        F: FnOnce(&mut Released<'_, Self::Gil>) -> T + Send,
        T: Send;
}

impl<G: GilOps> Nogil for G {
    type Gil = G::Gil;

    #[inline(always)]
    fn nogil<T, F>(&self, f: F) -> T
    where
        F: FnOnce(&mut Released<'_, G::Gil>) -> T + Send,
        T: Send,
    {
        // SAFETY: the guard lives in this frame and is dropped at its end, on
        // this thread, whichever way `f` is left; `f` is not `async`, so it
        // cannot suspend with the guard alive, and it cannot reach the guard
        // except through `Released`, which cannot move or leak it.
        let mut guard = unsafe { Guard::release(self) };
        f(&mut Released::new(&mut guard))
    }
}

/// Takes the GIL back for a part of a strict block: the one capability a
/// [`Nogil::nogil`] closure receives (and [`released!`](crate::released!)
/// gives inside an in-place block).
///
/// `L` is the GIL it takes back ([`GilOps::Gil`]): `Released<'_, CPython>`
/// for the interpreter, a mock's type for a mock. Code that calls Python in
/// [`with_gil`](Released::with_gil) takes `&mut Released<'_, CPython>`, so
/// it cannot be handed a mock's; code that only calls back the caller's own
/// closures can be generic over `L`.
///
/// It is neither `Send` nor `Sync`, so it stays with the closure it was given
/// to and cannot be captured by another strict block.
pub struct Released<'a, L> {
    inner: &'a mut dyn WithGil<Gil = L>,
}

impl<'a, L> Released<'a, L> {
    /// Wraps what takes the GIL back, for implementers of [`Nogil`].
    pub fn new(inner: &'a mut dyn WithGil<Gil = L>) -> Self {
        Released { inner }
    }

    /// Runs `f` with the GIL held again, then releases it again (Cython's
    /// `with gil:` inside `with nogil:`).
    ///
    /// Through a [`GilOps`] backend this restores exactly the thread state
    /// the block saved (right in subinterpreters too) and releases again on
    /// every way out of `f`, a panic included. If the block released nothing,
    /// `f` runs only if the thread holds the GIL; otherwise it does not run
    /// and the result is `Err(GilUnavailable)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use nuwa_core::{mock::MockGil, Nogil};
    ///
    /// let gil = MockGil::new();
    /// let mut calls = 0;
    /// gil.nogil(|released| {
    ///     for _ in 0..3 {
    ///         released.with_gil(|| calls += 1).unwrap(); // e.g. a progress callback
    ///     }
    /// });
    /// assert_eq!(calls, 3);
    /// assert_eq!((gil.releases(), gil.reacquires()), (4, 4));
    /// ```
    pub fn with_gil<T>(&mut self, f: impl FnOnce() -> T) -> Result<T, GilUnavailable> {
        let mut f = Some(f);
        let mut out = None;
        self.inner.with_gil_dyn(&mut || {
            if let Some(f) = f.take() {
                out = Some(f());
            }
        })?;
        out.ok_or(GilUnavailable::new())
    }

    /// [`WithGil::check_signals_dyn`]: what `nuwa_ffi::SignalCheck` calls
    /// when a check is due.
    #[inline]
    pub(crate) fn check_signals(&mut self) -> Result<bool, GilUnavailable> {
        self.inner.check_signals_dyn()
    }
}

impl<L> fmt::Debug for Released<'_, L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Released").finish_non_exhaustive()
    }
}

/// Takes the GIL back for the length of a call: what [`Released`] wraps.
///
/// [`Guard`] implements it. Implement it for a framework that takes the GIL
/// back its own way (PyO3's `Python::attach`), to pair with your [`Nogil`].
///
/// # Safety
///
/// `with_gil_dyn` either calls `f` exactly once, with the GIL named by
/// [`Gil`](WithGil::Gil) held by the calling thread for the whole call, and
/// returns `Ok(())`; or does not call it and returns `Err`. Code that calls
/// Python inside `f` depends on this; so `Gil` names the interpreter's GIL
/// (`nuwa_ffi::CPython`) only if that is the GIL held.
/// `check_signals_dyn` runs signal handlers only with that GIL held.
pub unsafe trait WithGil {
    /// Which GIL is held while `f` runs (see [`GilOps::Gil`]).
    type Gil;

    /// Runs `f` with the GIL held, or does not run it and returns `Err`.
    fn with_gil_dyn(&mut self, f: &mut dyn FnMut()) -> Result<(), GilUnavailable>;

    /// Takes the GIL back as `with_gil_dyn` does and runs the signal
    /// handlers that are due ([`GilOps::check_signals`]): `Ok(true)` if one
    /// raised. What `nuwa_ffi::SignalCheck` calls when a check is due, for a
    /// GIL other than `nuwa_ffi::CPython` (for that one it runs
    /// `PyErr_CheckSignals` itself, in `with_gil_dyn`). The default,
    /// `Ok(false)` without taking anything back, is a backend without
    /// signals.
    fn check_signals_dyn(&mut self) -> Result<bool, GilUnavailable> {
        Ok(false)
    }
}

// SAFETY: `Guard::with_gil` runs `f` once with `G`'s GIL held (taken back
// from this guard's release, or held because nothing was released and the
// backend says so), or returns `Err` without running it; by `GilOps`'s
// contract that GIL is the one `G::Gil` names. `Guard::check_signals` runs
// `G::check_signals` in such a part.
unsafe impl<G: GilOps> WithGil for Guard<G> {
    type Gil = G::Gil;

    fn with_gil_dyn(&mut self, f: &mut dyn FnMut()) -> Result<(), GilUnavailable> {
        self.with_gil(f)
    }

    fn check_signals_dyn(&mut self) -> Result<bool, GilUnavailable> {
        self.check_signals()
    }
}
