//! The PyO3 adapter (feature `pyo3`): nuwa's strict form, released and
//! taken back by PyO3 itself, and `Interrupted` as a `PyErr`.

use core::fmt;
use nuwa_core::{GilUnavailable, Nogil, Released, WithGil};
use pyo3::exceptions::{PyBaseException, PySystemError};
use pyo3::{Py, PyAny, PyErr, PyErrArguments, Python};

use crate::{CPython, Interrupted, gil_is_held};

/// A [`Nogil`] backend for PyO3 modules: releases the GIL with PyO3's own
/// [`Python::detach`], and takes it back for [`Released::with_gil`] (and a
/// due [`SignalCheck`](crate::SignalCheck)) with [`Python::try_attach`].
///
/// PyO3 keeps a per-thread count of "attached" that decides what
/// `Python::attach` and the drop of a `Py<T>` do; `detach` sets it to zero
/// for its closure and restores it after. So PyO3 code inside a block run
/// through this adapter behaves (`Python::attach` takes the GIL, a dropped
/// `Py<T>` is queued, a nested `detach` works), which nuwa's own release
/// ([`nogil!`](crate::nogil!), [`nogil()`](crate::nogil())) cannot promise.
/// Library code generic over `N: Nogil` runs unchanged with this adapter in
/// the module and with nuwa's mocks in unit tests.
///
/// Built on PyO3 0.30 (`>=0.30.1, <0.31`); a PyO3 release that breaks is
/// taken up by a nuwa-ffi release that breaks too ([Using nuwa with
/// PyO3](https://github.com/nuwa-rs/nuwa#using-nuwa-with-pyo3)).
///
/// It releases only if nuwa's held check ([`gil_is_held`]) says this thread
/// holds the GIL, and only if made to ([`release_if`](Self::release_if));
/// otherwise the closure runs with the GIL as it is, its parts run in place
/// where the GIL is held, and are `Err(GilUnavailable)` where it is not
/// (inside nuwa's own in-place block, where PyO3 still counts the thread
/// as attached and `detach` would release a GIL that is not held).
///
/// With the `stats` feature, its blocks count in `nuwa_ffi::stats` at
/// the line that calls [`nogil`](Nogil::nogil) (in generic library code, the
/// library's line), as `nuwa_ffi::nogil` calls do; a block that panics
/// counts, its last released stretch does not. A panic unwinds through
/// `detach`, which attaches again on the way (PyO3 turns it into
/// `PanicException` at the `#[pyfunction]`; [`Panicked::catch`](crate::Panicked::catch)
/// outside the call catches it).
///
/// # Examples
///
/// ```no_run
/// use nuwa_ffi::{Detach, Nogil};
/// use pyo3::Python;
///
/// // Library code: no PyO3, tested with a mock.
/// fn sum_of_squares<N: Nogil>(gil: N, data: &[f64]) -> f64 {
///     gil.nogil(|_| data.iter().map(|x| x * x).sum())
/// }
///
/// // The body of a `#[pyfunction] fn squares(py: Python<'_>, data: Vec<f64>)`:
/// fn squares(py: Python<'_>, data: Vec<f64>) -> f64 {
///     // Released only for work worth it (see the README's statistics).
///     sum_of_squares(Detach::release_if(py, data.len() >= 4096), &data)
/// }
/// ```
#[derive(Clone, Copy)]
pub struct Detach<'py> {
    py: Python<'py>,
    release: bool,
}

impl<'py> Detach<'py> {
    /// The adapter for the thread that `py` proves is attached: its blocks
    /// release the GIL.
    #[inline]
    pub fn new(py: Python<'py>) -> Self {
        Detach { py, release: true }
    }

    /// The adapter that releases only if `release` is `true`, and otherwise
    /// runs blocks with the GIL held, as [`ReleaseIf`](crate::ReleaseIf)
    /// does for a [`GilOps`](crate::GilOps) backend: one type, so the code
    /// that takes it is compiled once for both cases. A block that kept the
    /// GIL counts in `nuwa_ffi::stats` as one that released nothing.
    #[inline]
    pub fn release_if(py: Python<'py>, release: bool) -> Self {
        Detach { py, release }
    }
}

impl fmt::Debug for Detach<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Detach")
            .field("release", &self.release)
            .finish_non_exhaustive()
    }
}

impl Nogil for Detach<'_> {
    /// The interpreter's GIL: a part may call Python, and a
    /// [`SignalCheck`](crate::SignalCheck) runs `PyErr_CheckSignals`.
    type Gil = CPython;

    #[cfg_attr(feature = "stats", track_caller)]
    fn nogil<T, F>(&self, f: F) -> T
    where
        F: FnOnce(&mut Released<'_, CPython>) -> T + Send,
        T: Send,
    {
        #[cfg(feature = "stats")]
        let site = crate::recording::site_of(core::panic::Location::caller());
        #[cfg(feature = "stats")]
        site.began();
        if !self.release || !gil_is_held() {
            #[cfg(feature = "stats")]
            site.released_nothing();
            return f(&mut Released::new(&mut Reattach {
                detached: false,
                #[cfg(feature = "stats")]
                site,
                #[cfg(feature = "stats")]
                released_at: crate::recording::now(),
            }));
        }
        // `detach` wants the closure and its result `Ungil` (`Send` on
        // stable Rust), which `F` and `T` are.
        #[cfg(not(feature = "stats"))]
        return self
            .py
            .detach(move || f(&mut Released::new(&mut Reattach { detached: true })));
        #[cfg(feature = "stats")]
        {
            let (out, released_at, back_at) = self.py.detach(move || {
                let mut reattach = Reattach {
                    detached: true,
                    site,
                    released_at: crate::recording::now(),
                };
                let out = f(&mut Released::new(&mut reattach));
                (out, reattach.released_at, crate::recording::now())
            });
            site.stretch(
                back_at.saturating_sub(released_at),
                crate::recording::now().saturating_sub(back_at),
            );
            out
        }
    }
}

/// Takes the GIL back inside a [`Detach`] block.
struct Reattach {
    /// The block released through `detach`: a part attaches again. If not,
    /// a part runs in place where the GIL is held.
    detached: bool,
    #[cfg(feature = "stats")]
    site: &'static crate::recording::CallSite,
    /// When the current released stretch began.
    #[cfg(feature = "stats")]
    released_at: u64,
}

// SAFETY: `f` is called at most once, and only where nuwa-ffi's held check
// says this thread holds the CPython interpreter's GIL (`Gil = CPython`):
// directly when the block released nothing, or inside the closure given to
// `Python::try_attach`, which holds what it attached until that closure
// returns or unwinds. `try_attach` attaches the thread (PyO3's count is zero
// inside `detach`) or finds PyO3's count above zero (a `Python::attach`
// around the part, inside the block); the held check rules out a count
// that lies (PyO3 code inside nuwa's in-place block, where the thread is
// counted attached but holds nothing): then `f` does not run. In every case
// where `f` does not run, `Err` is returned.
unsafe impl WithGil for Reattach {
    type Gil = CPython;

    fn with_gil_dyn(&mut self, f: &mut dyn FnMut()) -> Result<(), GilUnavailable> {
        if !self.detached {
            if !gil_is_held() {
                return Err(GilUnavailable::new());
            }
            f();
            return Ok(());
        }
        #[cfg(feature = "stats")]
        let back_at = crate::recording::now();
        let ran = Python::try_attach(|_py| {
            if !gil_is_held() {
                return false;
            }
            #[cfg(feature = "stats")]
            self.site.stretch(
                back_at.saturating_sub(self.released_at),
                crate::recording::now().saturating_sub(back_at),
            );
            f();
            true
        });
        if ran != Some(true) {
            return Err(GilUnavailable::new());
        }
        #[cfg(feature = "stats")]
        {
            self.released_at = crate::recording::now();
        }
        Ok(())
    }
}

impl From<Interrupted> for PyErr {
    /// The exception the signal handler raised (`KeyboardInterrupt` for
    /// Ctrl-C, or your handler's own), as a `PyErr`, so that `?` in a
    /// `#[pyfunction]` raises it in Python.
    ///
    /// The exception is taken from the thread when PyO3 raises the `PyErr`
    /// (or first looks at it), not here: the conversion calls no Python, so
    /// it is safe anywhere, with or without the GIL. Until then, call no
    /// Python on this thread; a `PyErr` made from an `Interrupted` whose
    /// exception was taken or cleared meanwhile is a `SystemError` that
    /// says so.
    fn from(_: Interrupted) -> Self {
        PyErr::new::<PyBaseException, _>(TakeRaised)
    }
}

/// The exception set on the thread, taken when PyO3 needs it.
struct TakeRaised;

impl PyErrArguments for TakeRaised {
    /// The exception object itself: PyO3 raises it with `PyErr_SetObject(
    /// BaseException, exception)`, which keeps the exception's own class.
    ///
    /// Taken with the C API, not `PyErr::take`: that one resumes a panic
    /// when the exception is PyO3's `PanicException` (a handler that called
    /// Rust code which panicked), and this runs while PyO3 raises the
    /// `PyErr` at the `#[pyfunction]`'s return, outside its `catch_unwind`,
    /// where a panic aborts. The `PanicException` is raised as it is.
    fn arguments(self, py: Python<'_>) -> Py<PyAny> {
        match take_raised(py) {
            Some(exception) => exception,
            None => PySystemError::new_err(
                "nuwa_ffi::Interrupted: the exception a signal handler raised is no longer set \
                 (it was taken or cleared before the PyErr made from it was raised)",
            )
            .into_value(py)
            .into_any(),
        }
    }
}

/// The exception set on this thread, normalized and with its traceback,
/// taken (cleared); `None` if none is set.
#[allow(deprecated)] // PyErr_Fetch: PyErr_GetRaisedException is 3.12+ only.
fn take_raised(py: Python<'_>) -> Option<Py<PyAny>> {
    use core::ptr::null_mut;
    use pyo3::ffi;

    let (mut kind, mut value, mut traceback) = (null_mut(), null_mut(), null_mut());
    // SAFETY: `py` proves this thread holds the GIL, which is all these
    // calls need; the three pointers are valid places for the references
    // they hand over (new references or NULL), each released below once.
    unsafe {
        ffi::PyErr_Fetch(&mut kind, &mut value, &mut traceback);
        if kind.is_null() {
            return None;
        }
        ffi::PyErr_NormalizeException(&mut kind, &mut value, &mut traceback);
        if !value.is_null() && !traceback.is_null() {
            ffi::PyException_SetTraceback(value, traceback);
        }
        ffi::Py_XDECREF(kind);
        ffi::Py_XDECREF(traceback);
        // SAFETY: `value` is NULL or a new reference owned from here on.
        pyo3::Bound::from_owned_ptr_or_opt(py, value).map(pyo3::Bound::unbind)
    }
}
