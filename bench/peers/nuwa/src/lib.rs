//! nuwa's contenders: `cycles(n)` runs `n` empty blocks of one form, chosen
//! by a feature: `checked` (`nogil!`), `strict` (`nuwa_ffi::nogil(|gil| ..)`),
//! `token` (`nogil!(&mut gil => ..)` on a `GilHeld`); `checked` with `stats`
//! is the stats form; no form, the twin without a release.
//!
//! The few C API items the module needs are declared here rather than taken
//! from pyo3-ffi, which builds for neither 3.8 nor 3.13t: nuwa itself needs
//! no per-version build, and the module object's header is the only part
//! that differs (`free-threaded`).

use std::ffi::{c_char, c_int, c_void};
use std::ptr;

#[cfg(any(
    all(feature = "checked", feature = "strict"),
    all(feature = "checked", feature = "token"),
    all(feature = "strict", feature = "token"),
))]
compile_error!("one form at a time");

type PyObject = c_void;
type PyCFunction = unsafe extern "C" fn(*mut PyObject, *mut PyObject) -> *mut PyObject;

/// `PyObject_HEAD` of a GIL build: refcount, type.
#[cfg(not(feature = "free-threaded"))]
#[repr(C)]
struct ObjectHead {
    refcnt: isize,
    ob_type: *mut c_void,
}

/// `PyObject_HEAD` of a free-threaded build (3.13t): thread id, padding,
/// mutex, GC bits, local and shared refcounts, type.
#[cfg(feature = "free-threaded")]
#[repr(C)]
struct ObjectHead {
    tid: usize,
    padding: u16,
    mutex: u8,
    gc_bits: u8,
    ref_local: u32,
    ref_shared: isize,
    ob_type: *mut c_void,
}

#[repr(C)]
struct PyModuleDefBase {
    head: ObjectHead,
    m_init: *mut c_void,
    m_index: isize,
    m_copy: *mut PyObject,
}

#[repr(C)]
struct PyMethodDef {
    ml_name: *const c_char,
    ml_meth: Option<PyCFunction>,
    ml_flags: c_int,
    ml_doc: *const c_char,
}

#[repr(C)]
struct PyModuleDef {
    m_base: PyModuleDefBase,
    m_name: *const c_char,
    m_doc: *const c_char,
    m_size: isize,
    m_methods: *mut PyMethodDef,
    m_slots: *mut c_void,
    m_traverse: *mut c_void,
    m_clear: *mut c_void,
    m_free: *mut c_void,
}

const METH_O: c_int = 0x0008;
/// `PYTHON_API_VERSION`, the same from 3.8 to 3.15.
const API_VERSION: c_int = 1013;

unsafe extern "C" {
    fn PyModule_Create2(def: *mut PyModuleDef, api: c_int) -> *mut PyObject;
    fn PyLong_AsUnsignedLongLong(o: *mut PyObject) -> u64;
    fn PyErr_Occurred() -> *mut PyObject;
    fn Py_BuildValue(format: *const c_char, ...) -> *mut PyObject;
    #[cfg(feature = "free-threaded")]
    fn PyUnstable_Module_SetGIL(module: *mut PyObject, gil: *mut c_void) -> c_int;
}

/// `Py_MOD_GIL_NOT_USED`: without it, 3.13t enables the GIL on import.
#[cfg(feature = "free-threaded")]
const MOD_GIL_NOT_USED: *mut c_void = 1 as *mut c_void;

/// Keeps `i` (the block's "work") from being optimised away at no cost, as
/// the C peers' `SINK`: `std::hint::black_box` would store it to the stack,
/// two instructions per block the C peers do not pay.
#[inline(always)]
fn sink(i: u64) {
    // SAFETY: an empty assembly block that takes `i` in a register and does
    // nothing (the compiler must assume it reads memory, as C's clobber).
    unsafe { std::arch::asm!("/* {0} */", in(reg) i, options(nostack, preserves_flags)) }
}

/// One block of the form the features chose.
#[inline(always)]
#[allow(unused_variables)]
fn block(i: u64, token: &mut Option<nuwa_ffi::GilHeld>) {
    #[cfg(feature = "checked")]
    nuwa_ffi::nogil! { sink(i); }
    #[cfg(feature = "strict")]
    nuwa_ffi::nogil(|_| sink(i));
    #[cfg(feature = "token")]
    if let Some(gil) = token {
        nuwa_ffi::nogil!(gil => { sink(i); });
    }
    #[cfg(not(any(feature = "checked", feature = "strict", feature = "token")))]
    sink(i);
}

/// `cycles(n, /)`: `n` empty blocks.
///
/// # Safety
///
/// Called by CPython, with the GIL held, as a `METH_O` function.
unsafe extern "C" fn cycles(_module: *mut PyObject, arg: *mut PyObject) -> *mut PyObject {
    // SAFETY: CPython passes a live object and holds the GIL.
    let n = unsafe { PyLong_AsUnsignedLongLong(arg) };
    // SAFETY: the GIL is held.
    if n == u64::MAX && unsafe { !PyErr_Occurred().is_null() } {
        return ptr::null_mut();
    }
    #[cfg(feature = "token")]
    // SAFETY: CPython called this function with the GIL held, outside any
    // block; the token lives only during this call, on this thread.
    let mut token = Some(unsafe { nuwa_ffi::GilHeld::new() });
    #[cfg(not(feature = "token"))]
    let mut token = None;
    for i in 0..n {
        block(i, &mut token);
    }
    // SAFETY: the GIL is held again; an empty format builds `None`.
    unsafe { Py_BuildValue(c"".as_ptr()) }
}

/// What only CPython touches, while it holds the GIL.
struct GilProtected<T>(std::cell::UnsafeCell<T>);
// SAFETY: only CPython reads or writes the contents, holding the GIL (or,
// free-threaded, during the single import of the module).
unsafe impl<T> Sync for GilProtected<T> {}

static METHODS: GilProtected<[PyMethodDef; 2]> = GilProtected(std::cell::UnsafeCell::new([
    PyMethodDef {
        ml_name: c"cycles".as_ptr(),
        ml_meth: Some(cycles),
        ml_flags: METH_O,
        ml_doc: ptr::null(),
    },
    PyMethodDef {
        ml_name: ptr::null(),
        ml_meth: None,
        ml_flags: 0,
        ml_doc: ptr::null(),
    },
]));

static MODULE: GilProtected<PyModuleDef> = GilProtected(std::cell::UnsafeCell::new(PyModuleDef {
    m_base: PyModuleDefBase {
        #[cfg(not(feature = "free-threaded"))]
        head: ObjectHead {
            refcnt: 1,
            ob_type: ptr::null_mut(),
        },
        #[cfg(feature = "free-threaded")]
        head: ObjectHead {
            tid: 0,
            padding: 0,
            mutex: 0,
            gc_bits: 0,
            ref_local: u32::MAX,
            ref_shared: 0,
            ob_type: ptr::null_mut(),
        },
        m_init: ptr::null_mut(),
        m_index: 0,
        m_copy: ptr::null_mut(),
    },
    m_name: c"bench_m".as_ptr(),
    m_doc: ptr::null(),
    m_size: -1,
    m_methods: ptr::null_mut(),
    m_slots: ptr::null_mut(),
    m_traverse: ptr::null_mut(),
    m_clear: ptr::null_mut(),
    m_free: ptr::null_mut(),
}));

/// The module's entry point (single-phase init).
///
/// # Safety
///
/// Called by CPython's import machinery, with the GIL held.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyInit_bench_m() -> *mut PyObject {
    let module = MODULE.0.get();
    // SAFETY: the GIL is held; the method table ends with a zeroed entry and
    // both statics live as long as the process.
    unsafe {
        (*module).m_methods = METHODS.0.get().cast();
        let m = PyModule_Create2(module, API_VERSION);
        #[cfg(feature = "free-threaded")]
        if !m.is_null() {
            PyUnstable_Module_SetGIL(m, MOD_GIL_NOT_USED);
        }
        m
    }
}
