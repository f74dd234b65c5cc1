//! Test hooks, not public API: what `tests/` drives. Their names start with
//! `_test_`; they may change at any time.

use std::ffi::{CStr, CString};
use std::time::Duration;

use nuwa_ffi::nuwa_core::nogil;
use nuwa_ffi::nuwa_std::nogil_catch;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::{Detach, Flag, PanicError, with_backend};

fn c_string(text: &str) -> PyResult<CString> {
    CString::new(text).map_err(|_| PyValueError::new_err("the expression contains a NUL character"))
}

/// Waits in a block for `flag` (bounded by `timeout` seconds) and returns
/// whether it was set. `entered` is set once the block has started.
/// `release=False` keeps the GIL: then no other Python thread can set `flag`.
#[pyfunction]
#[pyo3(signature = (flag, timeout, *, entered = None, release = true))]
pub(crate) fn _test_wait_for_flag(
    py: Python<'_>,
    flag: &Bound<'_, Flag>,
    timeout: f64,
    entered: Option<&Bound<'_, Flag>>,
    release: bool,
) -> PyResult<bool> {
    let timeout = Duration::try_from_secs_f64(timeout).map_err(|_| {
        PyValueError::new_err(format!(
            "timeout must be a finite number >= 0, got {timeout}"
        ))
    })?;
    // The atomics live inside the (frozen) Python objects, which the caller
    // keeps alive for the call; the block sees plain `&AtomicBool`s.
    let flag = &flag.get().set;
    let entered = entered.map(|e| &e.get().set);
    Ok(with_backend!(py, release, |gil| {
        pyo3_extension_core::wait_for(gil, flag, entered, timeout)
    }))
}

/// Evaluates `expression` with `Python::attach` inside a released part and
/// returns `(value, held_before, held_inside)`: whether the thread held the
/// GIL just before `attach` (it must not) and inside it (it must).
#[pyfunction]
pub(crate) fn _test_attach_in_released(
    py: Python<'_>,
    expression: &str,
) -> PyResult<(Py<PyAny>, bool, bool)> {
    let code = c_string(expression)?;
    nogil(Detach::new(py), move |_| {
        let held_before = nuwa_ffi::gil_is_held();
        Python::attach(|py| {
            let held_inside = nuwa_ffi::gil_is_held();
            let value = py.eval(&code, None, None)?.unbind();
            Ok((value, held_before, held_inside))
        })
    })
}

/// Pops the last item of `holder` and drops it inside a released part (so
/// the `Py<PyAny>` dropped there holds the last reference if the caller kept
/// none). Returns whether the thread held the GIL where it dropped it.
#[pyfunction]
pub(crate) fn _test_drop_in_released(py: Python<'_>, holder: &Bound<'_, PyList>) -> PyResult<bool> {
    let item: Py<PyAny> = holder.call_method0("pop")?.unbind();
    Ok(nogil(Detach::new(py), move |_| {
        let held = nuwa_ffi::gil_is_held();
        drop(item);
        held
    }))
}

fn nested(depth: u32, code: &CStr) -> PyResult<Py<PyAny>> {
    Python::attach(|py| {
        if depth == 0 {
            return Ok(py.eval(code, None, None)?.unbind());
        }
        nogil(Detach::new(py), |released| {
            if depth.is_multiple_of(2) {
                // Attach by PyO3's own means inside the released part ...
                nested(depth - 1, code)
            } else {
                // ... or through the adapter's `with_gil`.
                released
                    .with_gil(|| nested(depth - 1, code))
                    .map_err(|e| PyRuntimeError::new_err(e.to_string()))?
            }
        })
    })
}

/// Evaluates `expression` `depth` blocks deep: each level releases through
/// the adapter and attaches again, alternately with `Python::attach` and
/// with `Released::with_gil`.
#[pyfunction]
pub(crate) fn _test_nested(depth: u32, expression: &str) -> PyResult<Py<PyAny>> {
    if depth > 64 {
        return Err(PyValueError::new_err(format!(
            "depth must be <= 64, got {depth}"
        )));
    }
    nested(depth, &c_string(expression)?)
}

/// Panics with `message` in a released part. `at`: "block" (the panic leaves
/// as PyO3's PanicException), "callback" (in a `with_gil` part, the same),
/// "caught" and "caught_callback" (nuwa's `nogil_catch` turns it into
/// `PanicError`), "in_place" (an in-place `nuwa_ffi::nogil!` with no PyO3
/// code in it: PanicException).
#[pyfunction]
#[pyo3(signature = (message, *, at = "block"))]
pub(crate) fn _test_panic(py: Python<'_>, message: String, at: &str) -> PyResult<()> {
    let gil = Detach::new(py);
    match at {
        "block" => nogil(gil, move |_| -> () { panic!("{message}") }),
        "callback" => nogil(gil, move |released| {
            released
                .with_gil(|| -> () { panic!("{message}") })
                .map_err(|e| PyRuntimeError::new_err(e.to_string()))
        })?,
        "caught" => nogil_catch(gil, move |_| -> () { panic!("{message}") })
            .map_err(|panicked| PanicError::new_err(panicked.to_string()))?,
        "caught_callback" => nogil_catch(gil, move |released| {
            released.with_gil(|| -> () { panic!("{message}") }).is_ok()
        })
        .map(drop)
        .map_err(|panicked| PanicError::new_err(panicked.to_string()))?,
        // The in-place form: safe here, as the block runs no PyO3 code; the
        // guard takes the GIL back before the panic reaches PyO3.
        "in_place" => nuwa_ffi::nogil!({
            panic!("{message}");
        }),
        other => {
            return Err(PyValueError::new_err(format!(
                "at must be 'block', 'callback', 'caught', 'caught_callback' or 'in_place', \
                 not {other:?}"
            )));
        }
    }
    Ok(())
}
