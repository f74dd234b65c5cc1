//! What must never run inside an in-place `nuwa_ffi::nogil!` (nor in nuwa's
//! strict form with its CPython backend) in a PyO3 process, kept here so
//! that a test can check that it still crashes (in a child process). DO NOT
//! COPY: every pattern below is safe Rust that compiles without a warning
//! and kills the interpreter.
//!
//! The reason is one and the same: nuwa's release calls
//! `PyEval_SaveThread`, but PyO3 keeps its own per-thread count of
//! "attached", which still says yes inside the block. So `Python::attach`
//! hands out a token without taking the GIL, a dropped `Py<T>` decrements
//! the reference count directly, a nested `py.detach` releases a GIL that is
//! not held, and a `Bound` reached by a name `hide` did not list works as if
//! the GIL were held. Use `Python::detach`, or nuwa's strict form through
//! the `Detach` adapter, instead.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// The patterns, by the name the test uses.
const PATTERNS: [&str; 5] = [
    "attach_eval",
    "drop_py",
    "detach",
    "list_append",
    "strict_cpython_attach",
];

/// Runs one crashing pattern inside an in-place `nuwa_ffi::nogil!` (the
/// last one in `nuwa_ffi::nogil()`, the strict form with nuwa's CPython
/// backend). It writes `nuwa-crash-test: in the block` to stderr when the block starts,
/// and `nuwa-crash-test: survived` if the block ends, which it must not.
/// An unknown pattern raises ValueError; a known one ends the process.
#[pyfunction]
pub(crate) fn _test_crash(py: Python<'_>, pattern: &str) -> PyResult<()> {
    match pattern {
        // `Python::attach` inside the block, with `py` hidden: PyO3 thinks
        // the thread is attached, so it does not take the GIL.
        "attach_eval" => nuwa_ffi::nogil!(hide(py) => {
            eprintln!("nuwa-crash-test: in the block");
            let _ = Python::attach(|py| py.eval(c"1 + 1", None, None).map(Bound::unbind));
        }),
        // The last reference to a dict, moved into the block and dropped
        // there: PyO3 decrements and deallocates at once, without the GIL.
        // (A dict, because its deallocator needs the thread state on every
        // version; a list's, on 3.12, may instead park the list for later
        // with garbage from uninitialised memory: no crash, a silent leak.)
        "drop_py" => {
            let dict = PyDict::new(py);
            dict.set_item("answer", 42)?;
            let object: Py<PyAny> = dict.into_any().unbind();
            nuwa_ffi::nogil!(hide(py) => {
                eprintln!("nuwa-crash-test: in the block");
                drop(object);
            })
        }
        // PyO3's own release inside nuwa's: `PyEval_SaveThread` without the GIL.
        "detach" => nuwa_ffi::nogil! {
            eprintln!("nuwa-crash-test: in the block");
            py.detach(|| 1 + 1);
        },
        // Appending to a list that `hide` does not name: each value is
        // converted into a new Python object (a tuple of an int and a
        // float), and the allocators of 3.9+ need the thread state.
        "list_append" => {
            let list = PyList::empty(py);
            nuwa_ffi::nogil!(hide(py) => {
                eprintln!("nuwa-crash-test: in the block");
                for i in 0..1000 {
                    let _ = list.append((i, f64::from(i) * 0.5));
                }
            })
        }
        // The strict form keeps `py` out (it is not `Send`), but nothing
        // stops the closure from attaching by itself: with nuwa's CPython
        // backend, PyO3's count still says "attached".
        "strict_cpython_attach" => nuwa_ffi::nogil(|_| {
            eprintln!("nuwa-crash-test: in the block");
            let _ = Python::attach(|py| py.eval(c"1 + 1", None, None).map(Bound::unbind));
        }),
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown pattern {other:?}; the patterns are {PATTERNS:?}"
            )));
        }
    }
    eprintln!("nuwa-crash-test: survived");
    Ok(())
}
