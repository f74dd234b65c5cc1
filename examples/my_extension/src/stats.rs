//! `nogil_stats()` and `reset_nogil_stats()`: nuwa's release statistics,
//! per call site (`nuwa_ffi::stats`), read from Python.
//!
//! They need nuwa-ffi's `stats` feature, which this module's own `stats`
//! feature turns on (maturin builds with it: pyproject.toml). Built without
//! it, both raise `RuntimeError` saying so.

use pyo3_ffi::*;

use crate::args::{CallArgs, Signature};
use crate::functions::entry_point;
use crate::method;
#[cfg(feature = "stats")]
use crate::py::none_object;
#[cfg(not(feature = "stats"))]
use crate::py::raise;
use crate::py::{Owned, PyResult};

/// The functions, for the module's method table.
pub(crate) const METHODS: [PyMethodDef; 2] = [
    method(
        c"nogil_stats",
        nogil_stats,
        c"nogil_stats($module, /)\n--\n\n\
          nuwa's release statistics, one dict per call site of a block in this module:\n\
          file, line, blocks, not_released, short (released for less than 10 us),\n\
          released_s and max_released_s (time spent released), waiting_s and\n\
          max_waiting_s (time spent waiting to take the GIL back).",
    ),
    method(
        c"reset_nogil_stats",
        reset_nogil_stats,
        c"reset_nogil_stats($module, /)\n--\n\n\
          Set every counter of nogil_stats() back to zero.",
    ),
];

entry_point!(
    /// `nogil_stats() -> list[dict]`
    nogil_stats => nogil_stats_body
);
entry_point!(
    /// `reset_nogil_stats() -> None`
    reset_nogil_stats => reset_body
);

static NOGIL_STATS: Signature = Signature {
    name: "nogil_stats",
    params: &[],
    positional: 0,
    required: 0,
};

static RESET: Signature = Signature {
    name: "reset_nogil_stats",
    params: &[],
    positional: 0,
    required: 0,
};

/// The body of `nogil_stats`.
///
/// # Safety
///
/// The GIL is held and `call_args` is what CPython passed.
unsafe fn nogil_stats_body(call_args: CallArgs) -> PyResult<Owned> {
    // SAFETY: the GIL is held and the arguments are live for the call.
    unsafe { NOGIL_STATS.parse::<0>(call_args)? };
    #[cfg(not(feature = "stats"))]
    // SAFETY: the GIL is held.
    return Err(unsafe { raise(PyExc_RuntimeError, WITHOUT_STATS) });
    #[cfg(feature = "stats")]
    // SAFETY: the GIL is held.
    unsafe {
        sites_as_list()
    }
}

/// The body of `reset_nogil_stats`.
///
/// # Safety
///
/// The GIL is held and `call_args` is what CPython passed.
unsafe fn reset_body(call_args: CallArgs) -> PyResult<Owned> {
    // SAFETY: the GIL is held and the arguments are live for the call.
    unsafe { RESET.parse::<0>(call_args)? };
    #[cfg(not(feature = "stats"))]
    // SAFETY: the GIL is held.
    return Err(unsafe { raise(PyExc_RuntimeError, WITHOUT_STATS) });
    #[cfg(feature = "stats")]
    {
        nuwa_ffi::stats::reset();
        // SAFETY: the GIL is held.
        unsafe { Owned::new(none_object()) }
    }
}

#[cfg(not(feature = "stats"))]
const WITHOUT_STATS: &str =
    "my_extension was built without nuwa's statistics (its `stats` feature is off)";

/// A list of one dict per call site.
///
/// # Safety
///
/// The GIL is held.
#[cfg(feature = "stats")]
unsafe fn sites_as_list() -> PyResult<Owned> {
    // SAFETY: the GIL is held; each new reference is owned by an `Owned`
    // (`PyList_Append` and `PyDict_SetItemString` do not steal).
    unsafe {
        let list = Owned::new(PyList_New(0))?;
        for site in nuwa_ffi::stats::sites() {
            let s = site.stats;
            let dict = Owned::new(PyDict_New())?;
            let file = Owned::new(PyUnicode_FromStringAndSize(
                site.file.as_ptr().cast(),
                site.file.len() as Py_ssize_t,
            ))?;
            set(&dict, c"file", file)?;
            for (key, value) in [
                (c"line", u64::from(site.line)),
                (c"blocks", s.blocks),
                (c"not_released", s.not_released),
                (c"short", s.short),
            ] {
                set(&dict, key, Owned::new(PyLong_FromUnsignedLongLong(value))?)?;
            }
            for (key, value) in [
                (c"released_s", s.released),
                (c"max_released_s", s.max_released),
                (c"waiting_s", s.waiting),
                (c"max_waiting_s", s.max_waiting),
            ] {
                set(
                    &dict,
                    key,
                    Owned::new(PyFloat_FromDouble(value.as_secs_f64()))?,
                )?;
            }
            if PyList_Append(list.as_ptr(), dict.as_ptr()) < 0 {
                return Err(crate::py::Raised);
            }
        }
        Ok(list)
    }
}

/// `dict[key] = value`.
///
/// # Safety
///
/// The GIL is held and `dict` is a dict.
#[cfg(feature = "stats")]
unsafe fn set(dict: &Owned, key: &core::ffi::CStr, value: Owned) -> PyResult<()> {
    // SAFETY: the caller's contract; the key is NUL-terminated.
    if unsafe { PyDict_SetItemString(dict.as_ptr(), key.as_ptr(), value.as_ptr()) } < 0 {
        return Err(crate::py::Raised);
    }
    Ok(())
}
