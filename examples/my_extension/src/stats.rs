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
pub(crate) const METHODS: [PyMethodDef; 5] = [
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
    method(
        c"_test_stats_pause",
        test_stats_pause,
        c"_test_stats_pause($module, /, point)\n--\n\n\
          Not public API. Start a thread that runs a strict-form block at the call site\n\
          of `point` (0, 1 or 2, each usable once per process) and stops inside nuwa's\n\
          registry of call sites: 0 while the site is looked up, 1 once it is claimed for\n\
          the list of sites, 2 once it is linked to the list. Returns when it has stopped\n\
          (TimeoutError after 10 s). _test_stats_resume() lets it go on.",
    ),
    method(
        c"_test_stats_probe",
        test_stats_probe,
        c"_test_stats_probe($module, /, point)\n--\n\n\
          Not public API. Run the strict-form block of `point` on this thread and return\n\
          the line of its call site.",
    ),
    method(
        c"_test_stats_resume",
        test_stats_resume,
        c"_test_stats_resume($module, /)\n--\n\n\
          Not public API. Let the thread that _test_stats_pause stopped go on, wait for\n\
          it, and return the line of the call site it ran (None if none was stopped).",
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
entry_point!(
    /// `_test_stats_pause(point) -> None`
    test_stats_pause => pause_body
);
entry_point!(
    /// `_test_stats_probe(point) -> int`
    test_stats_probe => probe_body
);
entry_point!(
    /// `_test_stats_resume() -> int | None`
    test_stats_resume => resume_body
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

// ---------------------------------------------------------------------------
// Test hooks: a thread stopped inside nuwa's registry of call sites (fork)
// ---------------------------------------------------------------------------

static PAUSE: Signature = Signature {
    name: "_test_stats_pause",
    params: &[c"point"],
    positional: 1,
    required: 1,
};

static PROBE: Signature = Signature {
    name: "_test_stats_probe",
    params: &[c"point"],
    positional: 1,
    required: 1,
};

static RESUME: Signature = Signature {
    name: "_test_stats_resume",
    params: &[],
    positional: 0,
    required: 0,
};

/// The body of `_test_stats_pause`.
///
/// # Safety
///
/// The GIL is held and `call_args` is what CPython passed.
unsafe fn pause_body(call_args: CallArgs) -> PyResult<Owned> {
    // SAFETY: the GIL is held and the arguments are live for the call.
    let point = unsafe { PAUSE.parse::<1>(call_args)?.u64("point", None, 0)? };
    #[cfg(not(feature = "stats"))]
    let _ = point;
    #[cfg(not(feature = "stats"))]
    // SAFETY: the GIL is held.
    return Err(unsafe { raise(PyExc_RuntimeError, WITHOUT_STATS) });
    #[cfg(feature = "stats")]
    // SAFETY: the GIL is held.
    unsafe {
        match registry_pause::pause(point) {
            Ok(()) => Owned::new(none_object()),
            Err((kind, message)) => Err(crate::py::raise(kind, &message)),
        }
    }
}

/// The body of `_test_stats_probe`.
///
/// # Safety
///
/// The GIL is held and `call_args` is what CPython passed.
unsafe fn probe_body(call_args: CallArgs) -> PyResult<Owned> {
    // SAFETY: the GIL is held and the arguments are live for the call.
    let point = unsafe { PROBE.parse::<1>(call_args)?.u64("point", None, 0)? };
    #[cfg(not(feature = "stats"))]
    let _ = point;
    #[cfg(not(feature = "stats"))]
    // SAFETY: the GIL is held.
    return Err(unsafe { raise(PyExc_RuntimeError, WITHOUT_STATS) });
    #[cfg(feature = "stats")]
    // SAFETY: the GIL is held.
    unsafe {
        match registry_pause::probe(point) {
            Some(line) => Owned::new(PyLong_FromUnsignedLongLong(u64::from(line))),
            None => Err(crate::py::raise(PyExc_ValueError, "point is 0, 1 or 2")),
        }
    }
}

/// The body of `_test_stats_resume`.
///
/// # Safety
///
/// The GIL is held and `call_args` is what CPython passed.
unsafe fn resume_body(call_args: CallArgs) -> PyResult<Owned> {
    // SAFETY: the GIL is held and the arguments are live for the call.
    unsafe { RESUME.parse::<0>(call_args)? };
    #[cfg(not(feature = "stats"))]
    // SAFETY: the GIL is held.
    return Err(unsafe { raise(PyExc_RuntimeError, WITHOUT_STATS) });
    #[cfg(feature = "stats")]
    // SAFETY: the GIL is held.
    unsafe {
        match registry_pause::resume() {
            Some(line) => Owned::new(PyLong_FromUnsignedLongLong(u64::from(line))),
            None => Owned::new(none_object()),
        }
    }
}

#[cfg(feature = "stats")]
mod registry_pause {
    //! A thread stopped at a point of nuwa's registry of call sites, through
    //! its test hook, until told to go on: what a thread of the parent was
    //! doing when another forked.

    use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
    use std::sync::{Condvar, Mutex, PoisonError};
    use std::thread::JoinHandle;
    use std::time::Duration;

    use nuwa_ffi::__private::RegistryPoint as Point;
    use pyo3_ffi::{PyExc_RuntimeError, PyExc_TimeoutError, PyExc_ValueError, PyObject};

    /// The point to stop at, plus one (0: none). Taken by the first thread
    /// that reaches it.
    static ARMED: AtomicU8 = AtomicU8::new(0);
    /// Each point's call site runs one test (it must be new to the registry).
    static USED: [AtomicBool; 3] = [const { AtomicBool::new(false) }; 3];
    /// (stopped, go on).
    static STATE: Mutex<(bool, bool)> = Mutex::new((false, false));
    static CHANGED: Condvar = Condvar::new();
    static THREAD: Mutex<Option<JoinHandle<u32>>> = Mutex::new(None);

    /// A strict-form block at the call site of `point`, one line each.
    pub(super) fn probe(point: u64) -> Option<u32> {
        match point {
            0 => Some(nuwa_ffi::nogil(|_| line!())),
            1 => Some(nuwa_ffi::nogil(|_| line!())),
            2 => Some(nuwa_ffi::nogil(|_| line!())),
            _ => None,
        }
    }

    fn hook(point: Point) {
        let n = match point {
            Point::Lookup => 1,
            Point::Claimed => 2,
            Point::Linked => 3,
        };
        if ARMED
            .compare_exchange(n, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let mut state = STATE.lock().unwrap_or_else(PoisonError::into_inner);
        state.0 = true;
        CHANGED.notify_all();
        while !state.1 {
            state = CHANGED.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    type Failure = (*mut PyObject, String);

    /// Starts the thread and returns once it has stopped.
    ///
    /// # Safety
    ///
    /// The GIL is held (for the exception types).
    pub(super) unsafe fn pause(point: u64) -> Result<(), Failure> {
        // SAFETY: the GIL is held.
        let (value_error, runtime_error, timeout_error) =
            unsafe { (PyExc_ValueError, PyExc_RuntimeError, PyExc_TimeoutError) };
        let used = usize::try_from(point)
            .ok()
            .and_then(|i| USED.get(i))
            .ok_or((value_error, "point is 0, 1 or 2".to_string()))?;
        if used.swap(true, Ordering::AcqRel) {
            return Err((runtime_error, format!("point {point} was used already")));
        }
        let mut thread = THREAD.lock().unwrap_or_else(PoisonError::into_inner);
        if thread.is_some() {
            return Err((runtime_error, "a thread is stopped already".into()));
        }
        *STATE.lock().unwrap_or_else(PoisonError::into_inner) = (false, false);
        nuwa_ffi::__private::set_registry_hook(Some(hook));
        ARMED.store(point as u8 + 1, Ordering::Release);
        *thread = Some(std::thread::spawn(move || probe(point).unwrap_or(0)));
        drop(thread);
        let state = STATE.lock().unwrap_or_else(PoisonError::into_inner);
        let (state, _) = CHANGED
            .wait_timeout_while(state, Duration::from_secs(10), |s| !s.0)
            .unwrap_or_else(PoisonError::into_inner);
        if !state.0 {
            ARMED.store(0, Ordering::Release);
            return Err((
                timeout_error,
                format!("no thread stopped at registry point {point} within 10 s"),
            ));
        }
        Ok(())
    }

    /// Lets the stopped thread go on and joins it.
    pub(super) fn resume() -> Option<u32> {
        ARMED.store(0, Ordering::Release);
        {
            let mut state = STATE.lock().unwrap_or_else(PoisonError::into_inner);
            state.1 = true;
            CHANGED.notify_all();
        }
        let thread = THREAD.lock().unwrap_or_else(PoisonError::into_inner).take();
        thread.and_then(|t| t.join().ok())
    }
}
