//! `my_extension`: a CPython extension module written against the raw C API
//! (`pyo3-ffi`), that does its work with the GIL released by `nuwa-ffi`.
//!
//! Each function has the same three steps:
//!
//! 1. with the GIL held, parse and convert the arguments into Rust values;
//! 2. compute in **one** [`nuwa_ffi::nogil!`] block, with every Python
//!    pointer named in its `hide(...)`, so that none can be used inside;
//! 3. with the GIL held again, convert the result into a Python object.
//!
//! Every `extern "C"` entry point runs inside `call`, which catches any
//! panic and raises it as `my_extension.PanicError`: no panic can unwind
//! into the interpreter.
//!
//! The module uses multi-phase initialisation and keeps its one Python
//! object (the `PanicError` type) in module state, so it can be loaded into
//! several interpreters, each with its own GIL (3.12+), and declares that it
//! does not need the GIL on free-threaded builds (3.13+).

use core::ffi::{c_int, c_void};
use core::ptr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use pyo3_ffi::*;

mod args;
mod compute;
mod functions;
mod progress;
mod py;
mod stats;
mod testing;

use py::{Owned, PyResult, Raised, raise};

/// What each module object holds (one per interpreter that imports it).
#[repr(C)]
struct ModuleState {
    /// `my_extension.PanicError`, a strong reference (`NULL` once cleared).
    panic_error: *mut PyObject,
}

/// Runs the body of a Python-callable function: its `Ok` object is returned
/// to Python, its `Err` means an exception is already set, and a panic is
/// caught and raised as `PanicError`.
///
/// # Safety
///
/// Called by the interpreter with the GIL held, and `module` is this
/// module's object (the `self` of a module-level function).
unsafe fn call(module: *mut PyObject, body: impl FnOnce() -> PyResult<Owned>) -> *mut PyObject {
    match panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(object)) => object.into_ptr(),
        Ok(Err(Raised)) => ptr::null_mut(),
        Err(payload) => {
            let panicked = nuwa_ffi::Panicked::from(payload);
            let message = panicked.to_string();
            // A payload whose `drop` panics too is leaked rather than let out.
            if let Err(again) = panic::catch_unwind(AssertUnwindSafe(|| drop(panicked))) {
                core::mem::forget(again);
            }
            // SAFETY: the GIL is held again: every block's guard took it back
            // while the panic unwound out of the block; `module` is live.
            unsafe { raise_panic(module, &message) };
            ptr::null_mut()
        }
    }
}

/// Raises `PanicError(message)` from this module's state (or `SystemError`
/// if the state is gone, which only a cleared module could see).
///
/// # Safety
///
/// The GIL is held and `module` is this module's object.
unsafe fn raise_panic(module: *mut PyObject, message: &str) -> Raised {
    // SAFETY: the GIL is held; our module's state is a `ModuleState`.
    unsafe {
        let state = PyModule_GetState(module).cast::<ModuleState>();
        if state.is_null() || (*state).panic_error.is_null() {
            PyErr_Clear();
            return raise(PyExc_SystemError, message);
        }
        raise((*state).panic_error, message)
    }
}

/// The `Py_mod_exec` slot: fills a new module object.
///
/// # Safety
///
/// Called by the interpreter, with the GIL held, on a module created from
/// `MODULE_DEF`.
unsafe extern "C" fn module_exec(module: *mut PyObject) -> c_int {
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        // Finds CPython's GIL functions now rather than at the first block.
        nuwa_ffi::init();
        // SAFETY: called by the interpreter with the GIL held, on a module
        // made from `MODULE_DEF`, whose state is a zeroed `ModuleState`.
        unsafe {
            let exception = PyErr_NewExceptionWithDoc(
                c"my_extension.PanicError".as_ptr(),
                c"A Rust panic inside my_extension, caught before it could reach Python.\n\n\
                  The message is the panic's. The module stays usable."
                    .as_ptr(),
                PyExc_RuntimeError,
                ptr::null_mut(),
            );
            if exception.is_null() {
                return -1;
            }
            let state = PyModule_GetState(module).cast::<ModuleState>();
            (*state).panic_error = exception;
            if pyo3_ffi::compat::PyModule_AddObjectRef(module, c"PanicError".as_ptr(), exception)
                < 0
            {
                return -1;
            }
            add_all(module)
        }
    }));
    result.unwrap_or_else(|_| {
        // SAFETY: the GIL is held.
        unsafe { raise(PyExc_SystemError, "my_extension: panic while initialising") };
        -1
    })
}

/// The public API, in `__all__` (the `_test_` hooks are left out).
const PUBLIC_NAMES: [&core::ffi::CStr; 8] = [
    c"PanicError",
    c"bad_pattern",
    c"compute_pi",
    c"expensive_computation",
    c"good_pattern",
    c"nogil_stats",
    c"process_image",
    c"reset_nogil_stats",
];

/// Sets `module.__all__` to [`PUBLIC_NAMES`]; `-1` with an exception set if
/// that fails.
///
/// # Safety
///
/// The GIL is held and `module` is a live module object.
unsafe fn add_all(module: *mut PyObject) -> c_int {
    let fill = || -> PyResult<c_int> {
        // SAFETY: the GIL is held; every new reference is owned by an
        // `Owned` (`PyList_Append` does not steal).
        unsafe {
            let all = Owned::new(PyList_New(0))?;
            for name in PUBLIC_NAMES {
                let name = Owned::new(PyUnicode_FromString(name.as_ptr()))?;
                if PyList_Append(all.as_ptr(), name.as_ptr()) < 0 {
                    return Err(Raised);
                }
            }
            Ok(pyo3_ffi::compat::PyModule_AddObjectRef(
                module,
                c"__all__".as_ptr(),
                all.as_ptr(),
            ))
        }
    };
    fill().unwrap_or(-1)
}

/// The GC's `m_traverse`: visits the objects the state holds.
///
/// # Safety
///
/// Called by the GC on a module created from `MODULE_DEF`.
unsafe extern "C" fn module_traverse(
    module: *mut PyObject,
    visit: visitproc,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: called by the GC on our module; the state, if allocated, is a
    // `ModuleState`. Nothing here can panic.
    unsafe {
        let state = PyModule_GetState(module).cast::<ModuleState>();
        if !state.is_null() && !(*state).panic_error.is_null() {
            return visit((*state).panic_error, arg);
        }
    }
    0
}

/// `m_clear`: drops the references the state holds.
///
/// # Safety
///
/// Called with the GIL held on a module created from `MODULE_DEF`.
unsafe extern "C" fn module_clear(module: *mut PyObject) -> c_int {
    // SAFETY: called with the GIL held on our module; the state, if
    // allocated, is a `ModuleState`; the pointer is nulled before the
    // reference is dropped. Nothing here can panic.
    unsafe {
        let state = PyModule_GetState(module).cast::<ModuleState>();
        if !state.is_null() {
            let exception = core::mem::take(&mut (*state).panic_error);
            if !exception.is_null() {
                Py_DECREF(exception);
            }
        }
    }
    0
}

/// `m_free`: the module object is being freed.
///
/// # Safety
///
/// Called with the GIL held on a module created from `MODULE_DEF`.
unsafe extern "C" fn module_free(module: *mut c_void) {
    // SAFETY: `module` is our module object, still valid during `m_free`.
    unsafe { module_clear(module.cast()) };
}

/// A `PyMethodDef` for a `METH_VARARGS | METH_KEYWORDS` function (the
/// limited API of 3.9 has no `METH_FASTCALL`). `doc` starts with the
/// `__text_signature__` CPython reads for `help()` and `inspect.signature`.
const fn method(
    name: &'static core::ffi::CStr,
    function: PyCFunctionWithKeywords,
    doc: &'static core::ffi::CStr,
) -> PyMethodDef {
    PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: PyMethodDefPointer {
            PyCFunctionWithKeywords: function,
        },
        ml_flags: METH_VARARGS | METH_KEYWORDS,
        ml_doc: doc.as_ptr(),
    }
}

const METHOD_COUNT: usize =
    functions::METHODS.len() + stats::METHODS.len() + testing::METHODS.len();

/// The module's functions: the public ones, the `_test_` hooks, and the
/// zeroed sentinel. CPython only reads it.
static mut METHODS: [PyMethodDef; METHOD_COUNT + 1] = {
    let mut all = [PyMethodDef::zeroed(); METHOD_COUNT + 1];
    let mut i = 0;
    while i < functions::METHODS.len() {
        all[i] = functions::METHODS[i];
        i += 1;
    }
    let mut k = 0;
    while k < stats::METHODS.len() {
        all[i] = stats::METHODS[k];
        i += 1;
        k += 1;
    }
    let mut j = 0;
    while j < testing::METHODS.len() {
        all[i + j] = testing::METHODS[j];
        j += 1;
    }
    all
};

/// `Py_MOD_PER_INTERPRETER_GIL_SUPPORTED`, the value of the
/// `Py_mod_multiple_interpreters` slot (3.12+): each interpreter, with its
/// own GIL, gets its own module. pyo3-ffi defines it only for 3.12+ builds;
/// the value is part of the stable ABI.
const PER_INTERPRETER_GIL_SUPPORTED: *mut c_void = ptr::without_provenance_mut(2);

/// `Py_MOD_GIL_NOT_USED`, the value of the `Py_mod_gil` slot (3.13+): the
/// functions share no mutable Python state (the flag registry of the test
/// hooks is a mutex and atomics), so a free-threaded build keeps the GIL off.
const GIL_NOT_USED: *mut c_void = ptr::without_provenance_mut(1);

/// The slots for CPython `version` (major, minor), without the sentinel:
/// `Py_mod_exec`, then `Py_mod_multiple_interpreters` from 3.12 and
/// `Py_mod_gil` from 3.13.
///
/// One abi3 build serves every version, so this is decided at import time:
/// CPython refuses a slot it does not know (3.9 to 3.11: `SystemError:
/// module my_extension.my_extension uses unknown slot ID 3`; 3.12: `... ID
/// 4`), and a build for 3.9's stable ABI has no `cfg(Py_3_12)` to decide it
/// at compile time.
fn slots_for(version: (u32, u32)) -> impl Iterator<Item = PyModuleDef_Slot> {
    let exec = PyModuleDef_Slot {
        slot: Py_mod_exec,
        value: module_exec as unsafe extern "C" fn(*mut PyObject) -> c_int as *mut c_void,
    };
    let interpreters = PyModuleDef_Slot {
        slot: Py_mod_multiple_interpreters,
        value: PER_INTERPRETER_GIL_SUPPORTED,
    };
    let gil = PyModuleDef_Slot {
        slot: Py_mod_gil,
        value: GIL_NOT_USED,
    };
    core::iter::once(exec)
        .chain((version >= (3, 12)).then_some(interpreters))
        .chain((version >= (3, 13)).then_some(gil))
}

/// The running CPython's (major, minor), read from `Py_GetVersion()` (in the
/// stable ABI on every version; `Py_Version` is 3.11+). `(0, 0)` if the text
/// cannot be read, which declares only `Py_mod_exec`.
///
/// # Safety
///
/// Python is initialised (an import is running).
unsafe fn running_version() -> (u32, u32) {
    // SAFETY: `Py_GetVersion` returns a static NUL-terminated string such as
    // "3.14.0 (main, ...)"; Python is initialised.
    let text = unsafe { core::ffi::CStr::from_ptr(Py_GetVersion()) };
    let text = text.to_str().unwrap_or("");
    let mut parts = text.split(|c: char| !c.is_ascii_digit());
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => (major.parse().unwrap_or(0), minor.parse().unwrap_or(0)),
        _ => (0, 0),
    }
}

/// The slots of `MODULE_DEF`, filled once by [`PyInit_my_extension`] for the
/// running CPython: at most three slots and the zeroed sentinel. CPython
/// only reads it.
static mut SLOTS: [PyModuleDef_Slot; 4] = [PyModuleDef_Slot {
    slot: 0,
    value: ptr::null_mut(),
}; 4];

/// Guards the one write to [`SLOTS`] (imports in several interpreters, each
/// with its own GIL, may run `PyInit_my_extension` at the same time).
static SLOTS_FILLED: Once = Once::new();

/// The slot IDs this module declared in this process, for the tests (the
/// `_test_module_slots` hook).
pub(crate) fn declared_slots() -> Vec<c_int> {
    let mut ids = Vec::new();
    if !SLOTS_FILLED.is_completed() {
        return ids;
    }
    // SAFETY: `SLOTS` is written only inside `SLOTS_FILLED.call_once`, which
    // has completed (and so happens-before this read); it is never written
    // again.
    let slots = unsafe { (&raw const SLOTS).read() };
    ids.extend(slots.iter().take_while(|s| s.slot != 0).map(|s| s.slot));
    ids
}

/// The module definition; `PyModuleDef_Init` and the import machinery write
/// to its header, so it is a `static mut` reached through raw pointers only.
static mut MODULE_DEF: PyModuleDef = PyModuleDef {
    m_base: PyModuleDef_HEAD_INIT,
    m_name: c"my_extension".as_ptr(),
    m_doc: c"Monte Carlo pi, image inversion and sums computed in Rust with the GIL released \
             (nuwa example)."
        .as_ptr(),
    m_size: core::mem::size_of::<ModuleState>() as Py_ssize_t,
    m_methods: (&raw mut METHODS).cast(),
    m_slots: (&raw mut SLOTS).cast(),
    m_traverse: Some(module_traverse),
    m_clear: Some(module_clear),
    m_free: Some(module_free),
};

/// The module's entry point: returns the definition; CPython then creates
/// and executes a module from it (multi-phase initialisation, PEP 489).
///
/// # Safety
///
/// Called by the import machinery with the GIL held.
#[allow(non_snake_case, reason = "CPython looks for PyInit_<module name>")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyInit_my_extension() -> *mut PyObject {
    SLOTS_FILLED.call_once(|| {
        // SAFETY: Python is initialised (an import is running). `SLOTS` is
        // written here only, once, before any module is made from
        // `MODULE_DEF`; `slots_for` gives at most three slots, so the last
        // entry stays the zeroed sentinel.
        unsafe {
            let mut slots = [PyModuleDef_Slot {
                slot: 0,
                value: ptr::null_mut(),
            }; 4];
            for (entry, slot) in slots[..3].iter_mut().zip(slots_for(running_version())) {
                *entry = slot;
            }
            (&raw mut SLOTS).write(slots);
        }
    });
    // SAFETY: called by the import machinery with the GIL held;
    // `MODULE_DEF` is a valid definition that lives forever, reached by raw
    // pointer, and its slots are filled. `PyModuleDef_Init` only initialises
    // its object header.
    unsafe { PyModuleDef_Init(&raw mut MODULE_DEF) }
}
