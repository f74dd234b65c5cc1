//! The adapter: nuwa's strict form, released and taken back by PyO3 itself.

use std::fmt;

use nuwa_ffi::{CPython, GilUnavailable, Nogil, Released, WithGil};
use pyo3::Python;

/// A [`Nogil`] backend that releases the GIL with PyO3's own
/// [`Python::detach`], and takes it back for [`Released::with_gil`] with
/// [`Python::try_attach`].
///
/// PyO3 keeps a private per-thread count of "attached" that decides what
/// `Python::attach` and the `Drop` of a `Py<T>` do. `detach` sets it to zero
/// for its closure and restores it after, so PyO3 code inside a block run
/// through this adapter behaves: `Python::attach` really takes the GIL, a
/// dropped `Py<T>` is queued until the thread is attached again, and a
/// nested `py.detach` is fine. nuwa's own release (the in-place
/// [`nogil!`](nuwa_ffi::nogil!), or [`nuwa_ffi::nogil()`]) leaves that count
/// untouched, which is why it must not run PyO3 code.
///
/// Library code generic over `N: Nogil` runs unchanged with this adapter in
/// the extension and with nuwa's mocks in unit tests.
///
/// # Examples
///
/// ```ignore
/// #[pyfunction]
/// fn compute_pi(py: Python<'_>, iterations: u64) -> f64 {
///     pyo3_extension_core::monte_carlo_pi(Detach::new(py), iterations, 0)
/// }
/// ```
#[derive(Clone, Copy)]
pub struct Detach<'py> {
    py: Python<'py>,
}

impl<'py> Detach<'py> {
    /// The adapter for the thread that `py` proves is attached.
    pub fn new(py: Python<'py>) -> Self {
        Detach { py }
    }
}

impl fmt::Debug for Detach<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Detach").finish_non_exhaustive()
    }
}

impl Nogil for Detach<'_> {
    /// The interpreter's GIL: the released part's `with_gil` may call Python.
    type Gil = CPython;

    fn nogil<T, F>(&self, f: F) -> T
    where
        F: FnOnce(&mut Released<'_, CPython>) -> T + Send,
        T: Send,
    {
        // `detach` wants `Ungil` (on stable Rust: `Send`) for the closure and
        // its result, which `F` and `T` are. A panic in `f` unwinds through
        // `detach`, which attaches again before the panic goes on.
        self.py
            .detach(move || f(&mut Released::new(&mut Reattach { _private: () })))
    }
}

/// Takes the GIL back inside a [`Detach`] block.
struct Reattach {
    _private: (),
}

// SAFETY: `f` is called at most once: only inside the closure given to
// `Python::try_attach`, which runs that closure at most once, and only after
// nuwa-ffi's held check says this thread holds the GIL. `try_attach` either
// attached the thread (`PyGILState_Ensure`: PyO3's count was zero, as
// `detach` left it) or found PyO3's count above zero; the held check rules
// out the second case being a lie (a thread inside an in-place `nogil!`,
// which PyO3 still counts as attached; there `try_attach` itself is PyO3
// code inside an in-place block, which the README forbids, but `f` does not
// run). The GIL stays held until `try_attach`'s guard is dropped, after `f`
// returns or unwinds. In every other case `f` is not called and `Err` is
// returned.
unsafe impl WithGil for Reattach {
    type Gil = CPython;

    fn with_gil_dyn(&mut self, f: &mut dyn FnMut()) -> Result<(), GilUnavailable> {
        Python::try_attach(|_py| {
            if nuwa_ffi::gil_is_held() {
                f();
                Ok(())
            } else {
                Err(GilUnavailable::new())
            }
        })
        .unwrap_or(Err(GilUnavailable::new()))
    }
}
