// Shared by the two size contenders (included with `include!`): a module
// with one function, `sum(n)`, that adds 0..n with the GIL released by
// `release_gil!`, which each contender defines before including this file.

use std::cell::UnsafeCell;
use std::ptr;

use pyo3_ffi::*;

unsafe extern "C" fn sum(_: *mut PyObject, arg: *mut PyObject) -> *mut PyObject {
    // SAFETY: Python calls this with the GIL held and one argument.
    let n = unsafe { PyLong_AsUnsignedLongLong(arg) };
    // SAFETY: the GIL is held.
    if n == u64::MAX && unsafe { !PyErr_Occurred().is_null() } {
        return ptr::null_mut();
    }
    let total = release_gil!({ (0..n).fold(0u64, |a, b| a.wrapping_add(std::hint::black_box(b))) });
    // SAFETY: the GIL is held again.
    unsafe { PyLong_FromUnsignedLongLong(total) }
}

struct GilProtected<T>(UnsafeCell<T>);
// SAFETY: only CPython touches the contents, while holding the GIL.
unsafe impl<T> Sync for GilProtected<T> {}

static METHODS: GilProtected<[PyMethodDef; 2]> = GilProtected(UnsafeCell::new([
    PyMethodDef {
        ml_name: c"sum".as_ptr(),
        ml_meth: PyMethodDefPointer { PyCFunction: sum },
        ml_flags: METH_O,
        ml_doc: ptr::null(),
    },
    PyMethodDef::zeroed(),
]));

static MODULE: GilProtected<PyModuleDef> = GilProtected(UnsafeCell::new(PyModuleDef {
    m_base: PyModuleDef_HEAD_INIT,
    m_name: MODULE_NAME.as_ptr(),
    m_doc: ptr::null(),
    m_size: 0,
    m_methods: ptr::null_mut(),
    m_slots: ptr::null_mut(),
    m_traverse: None,
    m_clear: None,
    m_free: None,
}));

/// Creates the module (single-phase init).
///
/// # Safety
///
/// Called from `PyInit_*`, with the GIL held.
unsafe fn create_module() -> *mut PyObject {
    let module = MODULE.0.get();
    // SAFETY: the GIL is held; the method table ends with a zeroed sentinel.
    unsafe {
        (*module).m_methods = METHODS.0.get().cast();
        PyModule_Create(module)
    }
}
