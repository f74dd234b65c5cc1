//! `pyo3_extension`: nuwa in a PyO3 module, the safe way.
//!
//! The GIL-releasing code lives in [`pyo3_extension_core`], written once
//! against nuwa's traits and unit-tested with nuwa's mocks without Python.
//! Here it runs through [`Detach`], nuwa-ffi's PyO3 adapter (feature
//! `pyo3`), which releases with PyO3's own `Python::detach`, so PyO3 code
//! inside (a Python callback, a dropped `Py<T>`) behaves. No `unsafe` here.
//! The in-place `nuwa_ffi::nogil!` appears twice: in `parse_sum`, around
//! pure Rust code that touches no PyO3 object (safe), and in the test hook
//! `_test_crash`, which shows what happens when PyO3 code runs inside it
//! (the process crashes: do not copy).

#![forbid(unsafe_code)]

mod crash;
mod hash;
mod testing;

use std::num::NonZeroUsize;

use nuwa_ffi::{CPython, Detach};
use pyo3::create_exception;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3_extension_core::Stopped;

create_exception!(
    pyo3_extension,
    PanicError,
    PyRuntimeError,
    "A Rust panic caught by nuwa's Panicked::catch, raised as an ordinary exception."
);

/// Estimates pi from `iterations` random points (a generator seeded with
/// `seed`), with the GIL released through PyO3's detach. `release=False`
/// keeps the GIL, for comparison.
#[pyfunction]
#[pyo3(signature = (iterations, seed = 0, *, release = true))]
fn compute_pi(py: Python<'_>, iterations: u64, seed: u64, release: bool) -> PyResult<f64> {
    if iterations == 0 {
        return Err(PyValueError::new_err("iterations must be >= 1, got 0"));
    }
    let gil = Detach::release_if(py, release);
    Ok(pyo3_extension_core::monte_carlo_pi(gil, iterations, seed))
}

/// The sum of x*x over `data` (floats), with the GIL released. If given,
/// `progress(done, partial_sum)` is called with the GIL held after every
/// `every` items and at the end; an exception it raises stops the sum and
/// propagates.
#[pyfunction]
#[pyo3(signature = (data, progress = None, every = 1000, *, release = true))]
fn sum_of_squares(
    py: Python<'_>,
    data: Vec<f64>,
    progress: Option<Bound<'_, PyAny>>,
    every: usize,
    release: bool,
) -> PyResult<f64> {
    let every = NonZeroUsize::new(every)
        .ok_or_else(|| PyValueError::new_err("every must be >= 1, got 0"))?;
    if let Some(p) = &progress
        && !p.is_callable()
    {
        let kind = p.get_type().name()?;
        return Err(PyTypeError::new_err(format!(
            "progress must be callable or None, not {kind}"
        )));
    }
    // A `Py<PyAny>` is `Send`, so the callback can go into the released part;
    // it calls Python only when the library has taken the GIL back for it.
    let progress: Option<Py<PyAny>> = progress.map(Bound::unbind);
    let callback = |done: usize, sum: f64| -> PyResult<()> {
        match &progress {
            Some(p) => Python::attach(|py| p.call1(py, (done, sum)).map(drop)),
            None => Ok(()),
        }
    };
    let gil = Detach::release_if(py, release);
    let result = pyo3_extension_core::sum_of_squares(gil, &data, every, callback);
    result.map_err(|stopped| match stopped {
        Stopped::Callback(err) => err,
        Stopped::GilUnavailable(e) => PyRuntimeError::new_err(e.to_string()),
    })
}

/// Parses every string in `items` as a non-negative integer and returns the
/// sum, with the GIL released by the in-place nogil! (pure Rust inside).
#[pyfunction]
fn parse_sum(items: Vec<String>) -> PyResult<u64> {
    // The in-place form is safe here: the block (in the library) touches no
    // PyO3 object, and `?` and `return` leave it with the GIL taken back.
    pyo3_extension_core::parse_sum(CPython, &items)
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// A flag that Python threads set and blocks wait for: `Flag()`,
/// `flag.set()`, `flag.is_set()`. Setting it is a Python call, so on a
/// GIL build only a thread holding the GIL can set it.
#[pyclass(frozen)]
#[derive(Debug, Default)]
struct Flag {
    set: std::sync::atomic::AtomicBool,
}

#[pymethods]
impl Flag {
    #[new]
    fn new() -> Self {
        Flag::default()
    }

    /// Sets the flag.
    fn set(&self) {
        self.set.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether the flag is set.
    fn is_set(&self) -> bool {
        self.set.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// nuwa in a PyO3 module: GIL-releasing library code run through PyO3's own
/// detach.
#[pymodule]
mod pyo3_extension {
    #[pymodule_export]
    use super::{Flag, PanicError, compute_pi, parse_sum, sum_of_squares};

    #[pymodule_export]
    use super::hash::{Hasher, nogil_stats, reset_nogil_stats};

    #[pymodule_export]
    use super::crash::_test_crash;

    #[pymodule_export]
    use super::testing::{
        _test_adapter_in_place, _test_attach_from_rust_threads, _test_attach_in_released,
        _test_check_in_place, _test_detach_in_nuwa_part, _test_drop_in_released,
        _test_ignore_interrupted, _test_interrupted_twice, _test_nested, _test_nuwa_in_detach_part,
        _test_panic, _test_wait_for_flag, _test_with_gil_in_place,
    };

    #[pymodule_export]
    use super::hash::InterruptMain;

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        // The type PyO3 raises for a panic that reaches a #[pyfunction]; it
        // derives from BaseException, so `except Exception` does not catch it.
        m.add(
            "PanicException",
            m.py().get_type::<pyo3::panic::PanicException>(),
        )
    }
}
