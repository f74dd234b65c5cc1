//! `nuwa_bench`: the contenders of `make bench`, side by side in one module.
//!
//! Each timing function runs the same loop around a different way of
//! releasing the GIL and returns the elapsed nanoseconds, measured in Rust so
//! that Python's call overhead is not part of the figure:
//!
//! - `raw`: `PyEval_SaveThread` / `PyEval_RestoreThread`, linked through
//!   `pyo3-ffi`: what `Py_BEGIN_ALLOW_THREADS` / `Py_END_ALLOW_THREADS` do.
//! - `nogil`: `nuwa_ffi::nogil!` (held check, then the same pair).
//! - `unchecked`: `nogil!` on a `nuwa_ffi::GilHeld` token (no held check).
//!
//! Every function must be called with the GIL held, as Python does.

use std::cell::UnsafeCell;
use std::ffi::c_char;
use std::hint::black_box;
use std::ptr;
use std::time::Instant;

use pyo3_ffi::*;

/// `k` units of dependent integer work (one multiply-add each), so that the
/// compiler can neither skip nor batch them.
#[inline(always)]
fn work(k: u64, seed: u64) -> u64 {
    let mut x = seed;
    for _ in 0..k {
        x = black_box(
            x.wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407),
        );
    }
    x
}

fn elapsed_ns(f: impl FnOnce()) -> u64 {
    let start = Instant::now();
    f();
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Parses `N` non-negative integers (`Py_ssize_t`) from a tuple.
///
/// # Safety
///
/// The GIL is held and `args` is a tuple.
unsafe fn counts<const N: usize>(args: *mut PyObject) -> Option<[u64; N]> {
    let mut values = [0 as Py_ssize_t; N];
    // SAFETY: the GIL is held and `args` is a tuple; each "n" writes one
    // Py_ssize_t into the pointer given for it.
    let ok = unsafe {
        match &mut values[..] {
            [a] => PyArg_ParseTuple(args, c"n".as_ptr(), a as *mut Py_ssize_t),
            [a, b] => PyArg_ParseTuple(
                args,
                c"nn".as_ptr(),
                a as *mut Py_ssize_t,
                b as *mut Py_ssize_t,
            ),
            _ => unreachable!("only 1 or 2 counts are parsed"),
        }
    };
    if ok == 0 {
        return None;
    }
    let mut out = [0u64; N];
    for (o, v) in out.iter_mut().zip(values) {
        match u64::try_from(v) {
            Ok(v) => *o = v,
            Err(_) => {
                // SAFETY: the GIL is held.
                unsafe {
                    PyErr_SetString(PyExc_ValueError, c"counts must be >= 0".as_ptr());
                }
                return None;
            }
        }
    }
    Some(out)
}

/// Returns `ns` as a Python int.
///
/// # Safety
///
/// The GIL is held.
unsafe fn ns_result(ns: u64) -> *mut PyObject {
    // SAFETY: the GIL is held.
    unsafe { PyLong_FromUnsignedLongLong(ns) }
}

unsafe extern "C" fn cycles_raw(_: *mut PyObject, args: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by Python with the GIL held and an args tuple.
    let Some([n]) = (unsafe { counts(args) }) else {
        return ptr::null_mut();
    };
    let ns = elapsed_ns(|| {
        for _ in 0..n {
            // SAFETY: this thread holds the GIL (Python called us); the state
            // saved is restored on the next line.
            unsafe {
                let state = PyEval_SaveThread();
                black_box(());
                PyEval_RestoreThread(state);
            }
        }
    });
    // SAFETY: the GIL is held again.
    unsafe { ns_result(ns) }
}

unsafe extern "C" fn cycles_nogil(_: *mut PyObject, args: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by Python with the GIL held and an args tuple.
    let Some([n]) = (unsafe { counts(args) }) else {
        return ptr::null_mut();
    };
    let ns = elapsed_ns(|| {
        for _ in 0..n {
            nuwa_ffi::nogil! { black_box(()) }
        }
    });
    // SAFETY: the GIL is held again.
    unsafe { ns_result(ns) }
}

unsafe extern "C" fn cycles_unchecked(_: *mut PyObject, args: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by Python with the GIL held and an args tuple.
    let Some([n]) = (unsafe { counts(args) }) else {
        return ptr::null_mut();
    };
    // SAFETY: Python called us, so this thread holds the GIL at each block
    // (the blocks are not nested).
    let mut gil = unsafe { nuwa_ffi::GilHeld::new() };
    let ns = elapsed_ns(|| {
        for _ in 0..n {
            nuwa_ffi::nogil!(&mut gil => { black_box(()) })
        }
    });
    // SAFETY: the GIL is held again.
    unsafe { ns_result(ns) }
}

unsafe extern "C" fn blocks_raw(_: *mut PyObject, args: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by Python with the GIL held and an args tuple.
    let Some([k, n]) = (unsafe { counts(args) }) else {
        return ptr::null_mut();
    };
    let mut acc = 0;
    let ns = elapsed_ns(|| {
        for i in 0..n {
            // SAFETY: as in `cycles_raw`.
            unsafe {
                let state = PyEval_SaveThread();
                acc ^= work(k, i);
                PyEval_RestoreThread(state);
            }
        }
    });
    black_box(acc);
    // SAFETY: the GIL is held again.
    unsafe { ns_result(ns) }
}

unsafe extern "C" fn blocks_nogil(_: *mut PyObject, args: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by Python with the GIL held and an args tuple.
    let Some([k, n]) = (unsafe { counts(args) }) else {
        return ptr::null_mut();
    };
    let mut acc = 0;
    let ns = elapsed_ns(|| {
        for i in 0..n {
            acc ^= nuwa_ffi::nogil! { work(k, i) };
        }
    });
    black_box(acc);
    // SAFETY: the GIL is held again.
    unsafe { ns_result(ns) }
}

unsafe extern "C" fn first_use_ns(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // Meaningful only as the first nuwa call in the process: the driver calls
    // it once, right after importing this module in a fresh interpreter.
    let ns = elapsed_ns(|| {
        black_box(nuwa_ffi::init());
    });
    // SAFETY: the GIL is held.
    unsafe { ns_result(ns) }
}

unsafe extern "C" fn resolution(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    let text = nuwa_ffi::init().to_string();
    // SAFETY: the GIL is held; the pointer and length describe `text`, UTF-8.
    unsafe { PyUnicode_FromStringAndSize(text.as_ptr().cast::<c_char>(), text.len() as Py_ssize_t) }
}

/// Static data that CPython reads and writes through raw pointers; only
/// touched while the GIL is held, during module creation.
struct GilProtected<T>(UnsafeCell<T>);

// SAFETY: the contents are only accessed by CPython while it holds the GIL.
unsafe impl<T> Sync for GilProtected<T> {}

const fn method(
    name: &'static std::ffi::CStr,
    f: unsafe extern "C" fn(*mut PyObject, *mut PyObject) -> *mut PyObject,
    doc: &'static std::ffi::CStr,
) -> PyMethodDef {
    PyMethodDef {
        ml_name: name.as_ptr(),
        ml_meth: PyMethodDefPointer { PyCFunction: f },
        ml_flags: METH_VARARGS,
        ml_doc: doc.as_ptr(),
    }
}

const fn method_noargs(
    name: &'static std::ffi::CStr,
    f: unsafe extern "C" fn(*mut PyObject, *mut PyObject) -> *mut PyObject,
    doc: &'static std::ffi::CStr,
) -> PyMethodDef {
    PyMethodDef {
        ml_flags: METH_NOARGS,
        ..method(name, f, doc)
    }
}

static METHODS: GilProtected<[PyMethodDef; 8]> = GilProtected(UnsafeCell::new([
    method(
        c"cycles_raw",
        cycles_raw,
        c"cycles_raw(n) -> ns: n empty raw SaveThread/RestoreThread pairs.",
    ),
    method(
        c"cycles_nogil",
        cycles_nogil,
        c"cycles_nogil(n) -> ns: n empty nogil! blocks.",
    ),
    method(
        c"cycles_unchecked",
        cycles_unchecked,
        c"cycles_unchecked(n) -> ns: n empty nogil! blocks on a GilHeld token.",
    ),
    method(
        c"blocks_raw",
        blocks_raw,
        c"blocks_raw(k, n) -> ns: n raw-pair blocks of k work units.",
    ),
    method(
        c"blocks_nogil",
        blocks_nogil,
        c"blocks_nogil(k, n) -> ns: n nogil! blocks of k work units.",
    ),
    method_noargs(
        c"first_use_ns",
        first_use_ns,
        c"first_use_ns() -> ns: time of nuwa_ffi::init(); call first.",
    ),
    method_noargs(
        c"resolution",
        resolution,
        c"resolution() -> str: what nuwa found.",
    ),
    PyMethodDef::zeroed(),
]));

static MODULE: GilProtected<PyModuleDef> = GilProtected(UnsafeCell::new(PyModuleDef {
    m_base: PyModuleDef_HEAD_INIT,
    m_name: c"nuwa_bench".as_ptr(),
    m_doc: c"nuwa's benchmark contenders (see BENCHMARKS.md).".as_ptr(),
    m_size: 0,
    m_methods: ptr::null_mut(),
    m_slots: ptr::null_mut(),
    m_traverse: None,
    m_clear: None,
    m_free: None,
}));

/// The module's entry point.
///
/// # Safety
///
/// Called by CPython's import machinery, with the GIL held.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyInit_nuwa_bench() -> *mut PyObject {
    let module = MODULE.0.get();
    // SAFETY: the GIL is held, so nothing else touches these statics; the
    // method table ends with a zeroed sentinel and lives forever.
    unsafe {
        (*module).m_methods = METHODS.0.get().cast();
        PyModule_Create(module)
    }
}
