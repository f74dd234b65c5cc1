//! Calling back into Python from inside a block, and stopping on Ctrl-C:
//! what `compute_pi(..., progress=...)` uses.
//!
//! The block takes the GIL back (`with_gil!`) to call the `progress`
//! callable at most [`MAX_REPORTS`] times, and checks for signals
//! ([`nuwa_ffi::SignalCheck`]) every [`STEP`] points, so that Ctrl-C stops it
//! within about 0.1 s. Either way out leaves the function with `?`: the
//! Python exception (the callback's own, or `KeyboardInterrupt`) is set, and
//! the function returns `NULL`.

use nuwa_ffi::Interrupted;
use pyo3_ffi::*;

use crate::py::{Owned, PyResult, Raised, raise};

/// The most times `progress` is called in one call of `compute_pi`.
pub(crate) const MAX_REPORTS: u64 = 100;

/// Points thrown between two signal checks: about 30 µs of work, so the
/// check (about 1 ns when not due) costs nothing measurable.
pub(crate) const STEP: u64 = 4096;

/// Why `with_gil!` cannot fail in `compute_pi`: it is called by Python, so
/// its thread holds the GIL, and [`can_call_back`] checked that nuwa sees it.
pub(crate) const HELD: &str =
    "compute_pi runs on a thread that holds the GIL, and nuwa sees it (checked before the block)";

/// A signal handler raised (`KeyboardInterrupt` for Ctrl-C): its exception is
/// set, which is what [`Raised`] means.
impl From<Interrupted> for Raised {
    fn from(_: Interrupted) -> Raised {
        Raised
    }
}

/// Where the progress is reported: after `total * k / n` points for `k` in
/// `1..=n`, with `n = min(reports, total)`; the last is `total`.
pub(crate) fn report_points(total: u64, reports: u64) -> impl Iterator<Item = u64> {
    let n = reports.min(total).max(1);
    // `total * k / n <= total`, so it fits in a u64.
    (1..=n).map(move |k| (u128::from(total) * u128::from(k) / u128::from(n)) as u64)
}

/// Raises `RuntimeError` if a block here could not take the GIL back (nuwa
/// did not find CPython's functions, or cannot tell that this thread holds
/// the GIL), so that a callback is refused before any work rather than
/// never called.
///
/// # Safety
///
/// The GIL is held (the function was called by Python).
pub(crate) unsafe fn can_call_back() -> PyResult<()> {
    if nuwa_ffi::gil_is_held() {
        return Ok(());
    }
    let message = format!(
        "compute_pi(progress=...) cannot call back into Python here: nuwa cannot take the GIL \
         back in this process ({})",
        nuwa_ffi::init()
    );
    // SAFETY: the GIL is held.
    Err(unsafe { raise(PyExc_RuntimeError, &message) })
}

/// Calls `callback(fraction)` and drops its result.
///
/// # Safety
///
/// The GIL is held and `callback` is a live object.
pub(crate) unsafe fn report(callback: &Owned, fraction: f64) -> PyResult<()> {
    // SAFETY: the GIL is held; every new reference is owned by an `Owned`,
    // released when it goes out of scope (with the GIL still held);
    // `PyObject_CallFunctionObjArgs` (limited API) takes a NULL-terminated
    // list of borrowed arguments.
    unsafe {
        let fraction = Owned::new(PyFloat_FromDouble(fraction))?;
        let result = PyObject_CallFunctionObjArgs(
            callback.as_ptr(),
            fraction.as_ptr(),
            core::ptr::null_mut::<PyObject>(),
        );
        Owned::new(result).map(drop)
    }
}
