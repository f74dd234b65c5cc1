//! Test hooks, not public API: what `tests/` drives. Their names start with
//! `_test_`; they may change at any time.

use std::ffi::{CStr, CString};
use std::time::Duration;

use nuwa_ffi::{Nogil, Panicked};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;

use nuwa_ffi::Detach;

use crate::{Flag, PanicError};

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
    let gil = Detach::release_if(py, release);
    Ok(pyo3_extension_core::wait_for(gil, flag, entered, timeout))
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
    Detach::new(py).nogil(move |_| {
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
/// none). `finalized` is a flag the item's finalizer sets. Returns whether,
/// right after the drop inside the part, the thread held the GIL and the
/// flag was set: both must be false, as PyO3 queues a decref made while
/// detached and applies it when `detach` attaches again.
#[pyfunction]
pub(crate) fn _test_drop_in_released(
    py: Python<'_>,
    holder: &Bound<'_, PyList>,
    finalized: &Bound<'_, Flag>,
) -> PyResult<(bool, bool)> {
    let item: Py<PyAny> = holder.call_method0("pop")?.unbind();
    let finalized = &finalized.get().set;
    Ok(Detach::new(py).nogil(move |_| {
        drop(item);
        let held = nuwa_ffi::gil_is_held();
        (held, finalized.load(std::sync::atomic::Ordering::Acquire))
    }))
}

fn nested(depth: u32, code: &CStr) -> PyResult<Py<PyAny>> {
    Python::attach(|py| {
        if depth == 0 {
            return Ok(py.eval(code, None, None)?.unbind());
        }
        Detach::new(py).nogil(|released| {
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

/// Calls `Released::with_gil` from inside an in-place `nuwa_ffi::nogil!`
/// nested in `Python::attach` inside a `Detach` block: the one place where
/// PyO3 counts the thread as attached while it does not hold the GIL. The
/// adapter must refuse to run the part there. Returns `(ran, held_in_part)`.
#[pyfunction]
pub(crate) fn _test_with_gil_in_place(py: Python<'_>) -> (bool, bool) {
    Detach::new(py).nogil(|released| {
        Python::attach(|_py| {
            nuwa_ffi::nogil!({
                let mut held_in_part = false;
                let ran = released
                    .with_gil(|| held_in_part = nuwa_ffi::gil_is_held())
                    .is_ok();
                (ran, held_in_part)
            })
        })
    })
}

/// Spawns `threads` Rust threads inside a released part; each attaches with
/// `Python::attach` and evaluates `expression`. Returns their results.
#[pyfunction]
pub(crate) fn _test_attach_from_rust_threads(
    py: Python<'_>,
    threads: usize,
    expression: &str,
) -> PyResult<Vec<Py<PyAny>>> {
    if threads > 64 {
        return Err(PyValueError::new_err(format!(
            "threads must be <= 64, got {threads}"
        )));
    }
    let code = c_string(expression)?;
    Detach::new(py).nogil(|_| {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| s.spawn(|| Python::attach(|py| Ok(py.eval(&code, None, None)?.unbind()))))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
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
/// "caught" and "caught_callback" (nuwa's `Panicked::catch` around the
/// block turns it into `PanicError`), "in_place" (an in-place
/// `nuwa_ffi::nogil!` with no PyO3 code in it: PanicException).
#[pyfunction]
#[pyo3(signature = (message, *, at = "block"))]
pub(crate) fn _test_panic(py: Python<'_>, message: String, at: &str) -> PyResult<()> {
    let gil = Detach::new(py);
    match at {
        "block" => gil.nogil(move |_| -> () { panic!("{message}") }),
        "callback" => gil.nogil(move |released| {
            released
                .with_gil(|| -> () { panic!("{message}") })
                .map_err(|e| PyRuntimeError::new_err(e.to_string()))
        })?,
        "caught" => Panicked::catch(|| gil.nogil(move |_| -> () { panic!("{message}") }))
            .map_err(|panicked| PanicError::new_err(panicked.to_string()))?,
        "caught_callback" => Panicked::catch(|| {
            gil.nogil(move |released| released.with_gil(|| -> () { panic!("{message}") }).is_ok())
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

/// Asks for a SIGINT without running its handler: `_thread.interrupt_main()`
/// called from Rust, so no Python code runs after it (see `InterruptMain`).
fn interrupt_main(py: Python<'_>) -> PyResult<()> {
    py.import("_thread")?.call_method0("interrupt_main")?;
    Ok(())
}

/// The adapter inside nuwa's own in-place block (where PyO3 still counts
/// the thread as attached while the GIL is released): it must not release
/// (PyO3's `detach` would release a GIL that is not held) and its part must
/// not run. Returns `(block_ran, part_ran, held_in_block)`.
#[pyfunction]
pub(crate) fn _test_adapter_in_place(py: Python<'_>) -> (bool, bool, bool) {
    let gil = Detach::new(py);
    nuwa_ffi::nogil!({
        gil.nogil(|released| {
            let held = nuwa_ffi::gil_is_held();
            (true, released.with_gil(|| ()).is_ok(), held)
        })
    })
}

/// A signal check inside an in-place `nuwa_ffi::nogil!` (no other PyO3
/// code in the block), whose `?` turns `Interrupted` into a `PyErr` with the
/// GIL released: the conversion must call no Python there.
#[pyfunction]
pub(crate) fn _test_check_in_place() -> PyResult<()> {
    nuwa_ffi::nogil!({
        let mut signals = nuwa_ffi::SignalCheck::every(Duration::ZERO);
        // The part holds the GIL, and PyO3 counts the thread as attached:
        // here, and only here, PyO3 code in an in-place block is right.
        with_gil! { Python::attach(interrupt_main) }
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))??;
        signals.check(&mut released!())?;
        Err(PyRuntimeError::new_err("the signal check found nothing"))
    })
}

/// One `Interrupted`, converted into a `PyErr` twice: the first carries the
/// exception the handler raised, the second finds it gone. Returns the
/// two exceptions' type names.
#[pyfunction]
pub(crate) fn _test_interrupted_twice(py: Python<'_>) -> PyResult<(String, String)> {
    let interrupted = Detach::new(py).nogil(|released| {
        let mut signals = nuwa_ffi::SignalCheck::every(Duration::ZERO);
        released
            .with_gil(|| Python::attach(interrupt_main))
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))??;
        match signals.check(released) {
            Err(interrupted) => Ok(interrupted),
            Ok(()) => Err(PyRuntimeError::new_err("the signal check found nothing")),
        }
    })?;
    let name = |err: PyErr| -> PyResult<String> { Ok(err.get_type(py).name()?.to_string()) };
    Ok((name(interrupted.into())?, name(interrupted.into())?))
}

/// nuwa's own block (which releases) with the adapter's block inside its
/// part, and a part of the adapter's inside that: evaluates `expression`
/// there. Returns `(value, held_in_adapter_block, held_in_adapter_part)`.
#[pyfunction]
pub(crate) fn _test_detach_in_nuwa_part(expression: &str) -> PyResult<(Py<PyAny>, bool, bool)> {
    let code = c_string(expression)?;
    let code = &code;
    nuwa_ffi::nogil!({
        with_gil! {
            Python::attach(|py| {
                Detach::new(py).nogil(move |released| {
                    let held_block = nuwa_ffi::gil_is_held();
                    released
                        .with_gil(|| {
                            Python::attach(|py| -> PyResult<_> {
                                let value = py.eval(code, None, None)?.unbind();
                                Ok((value, held_block, nuwa_ffi::gil_is_held()))
                            })
                        })
                        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?
                })
            })
        }
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?
    })
}

/// The adapter's block with nuwa's own block (which releases) inside its
/// part, and nuwa's part inside that: evaluates `expression` there.
/// Returns `(value, held_in_nuwa_block, held_in_nuwa_part)`.
#[pyfunction]
pub(crate) fn _test_nuwa_in_detach_part(
    py: Python<'_>,
    expression: &str,
) -> PyResult<(Py<PyAny>, bool, bool)> {
    let code = c_string(expression)?;
    let code = &code;
    Detach::new(py).nogil(move |released| {
        released
            .with_gil(|| {
                nuwa_ffi::nogil!({
                    let held_block = nuwa_ffi::gil_is_held();
                    with_gil! {
                        Python::attach(|py| -> PyResult<_> {
                            let value = py.eval(code, None, None)?.unbind();
                            Ok((value, held_block, nuwa_ffi::gil_is_held()))
                        })
                    }
                    .map_err(|e| PyRuntimeError::new_err(e.to_string()))?
                })
            })
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?
    })
}

/// Careless code: a signal check's `Interrupted` dropped (`let _ =`), then
/// a part that calls Python. Returns whether an exception was set on the
/// thread when that Python code began (the handler's, left set by the
/// check): CPython's API must not be called so, and a debug build aborts
/// (`_PyAST_Validate: Assertion !PyErr_Occurred()` for an `eval`).
#[pyfunction]
pub(crate) fn _test_ignore_interrupted(py: Python<'_>) -> PyResult<bool> {
    Detach::new(py).nogil(move |released| {
        let mut signals = nuwa_ffi::SignalCheck::every(Duration::ZERO);
        released
            .with_gil(|| Python::attach(interrupt_main))
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))??;
        let _ = signals.check(released);
        let set = released
            .with_gil(|| Python::attach(PyErr::occurred))
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        // Clean up, so that the test reports instead of the next call.
        Python::attach(|py| drop(PyErr::take(py)));
        Ok(set)
    })
}
