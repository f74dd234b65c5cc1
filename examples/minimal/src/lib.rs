//! `minimal`: one function, `adler32(data, value=1, /)`, that checksums a
//! `bytes` with the GIL released, so other Python threads run meanwhile. Raw C
//! API (`pyo3-ffi`), stable ABI only: maturin builds one abi3 wheel for every
//! CPython from 3.9 on (`pyproject.toml`). nuwa-ffi finds CPython's GIL
//! functions at run time: no link to libpython.
//!
//! Each function has three steps: with the GIL held, check the arguments and
//! turn them into Rust values; compute with the GIL released; with the GIL
//! held again, build the result. Each runs inside `edge`, which turns a
//! panic into `minimal.PanicError`.

use core::ffi::{c_int, c_void};
use core::ptr::null_mut;
use core::slice;

use nuwa_ffi::Panicked;
use pyo3_ffi::*;

/// The modulus of Adler-32: each 16-bit half of a checksum is below it.
const MOD: u32 = 65521;

/// Adler-32 (RFC 1950, as `zlib.adler32`) of `data`, continued from `value`
/// (1 for a new checksum): plain Rust, no Python object. Both halves of
/// `value` must be below [`MOD`], as in every Adler-32.
fn adler32_of(value: u32, data: &[u8]) -> u32 {
    let (mut a, mut b) = (value & 0xFFFF, value >> 16);
    // 5552 bytes is the most that can be added before `b` could overflow.
    for chunk in data.chunks(5552) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        (a, b) = (a % MOD, b % MOD);
    }
    (b << 16) | a
}

/// `adler32(data, value=1, /)`.
///
/// # Safety
///
/// Called by CPython, with the GIL held, as a `METH_VARARGS` function of
/// this module.
unsafe extern "C" fn adler32(module: *mut PyObject, args: *mut PyObject) -> *mut PyObject {
    // SAFETY: this function's own contract is `edge`'s and `adler32_body`'s.
    unsafe { edge(module, || adler32_body(args)) }
}

/// The body of `adler32`: the result, or `NULL` with an exception set.
///
/// # Safety
///
/// The GIL is held and `args` is the call's tuple of arguments.
unsafe fn adler32_body(args: *mut PyObject) -> *mut PyObject {
    // 1. GIL held: check the arguments and turn them into Rust values.
    let (mut data, mut value): (*mut PyObject, *mut PyObject) = (null_mut(), null_mut());
    let format = c"S|O:adler32".as_ptr();
    // SAFETY: `args` is a tuple; "S" stores a borrowed `bytes` (or subclass)
    // and "O" a borrowed object, each into a `*mut PyObject`. On failure it
    // raises a TypeError that names the function and the argument.
    if unsafe { PyArg_ParseTuple(args, format, &raw mut data, &raw mut value) } == 0 {
        return null_mut();
    }
    let value = if value.is_null() {
        1
    } else {
        // SAFETY: the GIL is held and `value` is a live object.
        match unsafe { checksum_arg(value) } {
            Some(value) => value,
            None => return null_mut(),
        }
    };
    // Only `bytes`: it never changes, and the argument tuple keeps it alive
    // until we return, so its buffer may be read without the GIL. (The
    // buffer of a `bytearray` could be changed by another thread meanwhile.)
    // SAFETY: `data` is a live `bytes`, and the GIL is held.
    let bytes: &[u8] = unsafe {
        slice::from_raw_parts(PyBytes_AsString(data).cast(), PyBytes_Size(data) as usize)
    };
    // 2. GIL released: the work. The strict form: its closure must be `Send`,
    // so the compiler rejects any `*mut PyObject` in it by type.
    let sum = nuwa_ffi::nogil(|_| adler32_of(value, bytes));
    // 3. SAFETY: the GIL is held again; build the result. (`unsigned long
    // long`: `unsigned long` is 32 bits on Windows, where the `u32` would
    // need no conversion and clippy would say so.)
    unsafe { PyLong_FromUnsignedLongLong(sum.into()) }
}

/// `value` as a checksum to continue from, or `None` with an exception set:
/// `TypeError` if it is not an integer, `OverflowError` if it is not in
/// 0..2**32, `ValueError` if a half is not below [`MOD`] (no Adler-32 is).
///
/// # Safety
///
/// The GIL is held and `value` is a live object.
unsafe fn checksum_arg(value: *mut PyObject) -> Option<u32> {
    // SAFETY: the GIL is held; `int` is a new reference, dropped at once.
    unsafe {
        // Any object with `__index__` (as a NumPy integer), like `zlib`.
        let int = PyNumber_Index(value);
        if int.is_null() {
            return None;
        }
        let mut overflow = 0;
        let wide = PyLong_AsLongLongAndOverflow(int, &raw mut overflow);
        Py_DECREF(int);
        if wide == -1 && !PyErr_Occurred().is_null() {
            return None;
        }
        // Out of `long long` range, it is -1 with `overflow` set.
        let Ok(value) = u32::try_from(wide) else {
            let message = c"adler32() value must be from 0 to 2**32 - 1";
            PyErr_SetString(PyExc_OverflowError, message.as_ptr());
            return None;
        };
        if value & 0xFFFF >= MOD || value >> 16 >= MOD {
            let message = c"adler32() value %u is not an Adler-32 checksum: \
                            both 16-bit halves must be below 65521";
            PyErr_Format(PyExc_ValueError, message.as_ptr(), value);
            return None;
        }
        Some(value)
    }
}

/// `_test_panic(message, /)`, not public API: panics with `message` in a
/// released block, through the same `edge` and `nuwa_ffi::nogil` as
/// `adler32` (which no input makes panic), so that the tests can prove that
/// such a panic raises `PanicError(message)`. Keep it and its test, or
/// remove both.
///
/// # Safety
///
/// As `adler32`.
unsafe extern "C" fn test_panic(module: *mut PyObject, args: *mut PyObject) -> *mut PyObject {
    // SAFETY: this function's own contract is `edge`'s.
    unsafe {
        edge(module, || {
            let mut message: *mut PyObject = null_mut();
            // "U" stores a borrowed `str`; its UTF-8 (a `bytes`, or a
            // UnicodeEncodeError for a lone surrogate) is copied out.
            if PyArg_ParseTuple(args, c"U:_test_panic".as_ptr(), &raw mut message) == 0 {
                return null_mut();
            }
            let utf8 = PyUnicode_AsUTF8String(message);
            if utf8.is_null() {
                return null_mut();
            }
            let bytes =
                slice::from_raw_parts(PyBytes_AsString(utf8).cast(), PyBytes_Size(utf8) as usize);
            let message = String::from_utf8_lossy(bytes).into_owned();
            Py_DECREF(utf8);
            let () = nuwa_ffi::nogil(move |_| panic!("{message}"));
            unreachable!("the block returned")
        })
    }
}

/// The edge between CPython and Rust, around each function's body: a panic
/// must not unwind into CPython (the process would abort), so one in `body`,
/// in its released block or not, is caught here and raised as
/// `minimal.PanicError` with the panic's message. The GIL is held again by
/// then. An exception the body raised before it panicked is dropped: the
/// panic is what to report.
///
/// # Safety
///
/// The GIL is held, and `module` is this module (the `self` CPython passes
/// to its functions).
unsafe fn edge(module: *mut PyObject, body: impl FnOnce() -> *mut PyObject) -> *mut PyObject {
    let panicked = match Panicked::catch(body) {
        Ok(result) => return result,
        Err(panicked) => panicked,
    };
    let message = panicked.to_string();
    match panicked.message() {
        Some(_) => drop(panicked),
        // Leaked, not dropped: its `drop` is someone else's code, and a panic
        // in it here would abort the process.
        None => core::mem::forget(panicked),
    }
    // SAFETY: the GIL is held and `module` is live; each new reference is
    // dropped before return.
    unsafe {
        PyErr_Clear();
        // Looked up in the module object (one per interpreter that imports
        // the module); a RuntimeError if someone replaced it.
        let mut kind = PyObject_GetAttrString(module, c"PanicError".as_ptr());
        if kind.is_null() || PyExceptionClass_Check(kind) == 0 {
            PyErr_Clear();
            Py_XDECREF(kind);
            kind = compat::Py_NewRef(PyExc_RuntimeError);
        }
        let text =
            PyUnicode_FromStringAndSize(message.as_ptr().cast(), message.len() as Py_ssize_t);
        if !text.is_null() {
            PyErr_SetObject(kind, text);
            Py_DECREF(text);
        }
        Py_DECREF(kind);
    }
    null_mut()
}

/// `Py_mod_exec`: adds `PanicError`, a `RuntimeError`, to a new module.
///
/// # Safety
///
/// Called by CPython, with the GIL held, on a new module made from `MODULE`.
unsafe extern "C" fn exec(module: *mut PyObject) -> c_int {
    // SAFETY: the GIL is held and `module` is live; the module takes a
    // reference of its own to `kind`, ours is dropped. Nothing here panics.
    unsafe {
        let kind = PyErr_NewExceptionWithDoc(
            c"minimal.PanicError".as_ptr(),
            c"A Rust panic in minimal, caught before it could reach Python: a bug.\n\n\
              The message is the panic's. The module stays usable."
                .as_ptr(),
            PyExc_RuntimeError,
            null_mut(),
        );
        if kind.is_null() {
            return -1;
        }
        let added = compat::PyModule_AddObjectRef(module, c"PanicError".as_ptr(), kind);
        Py_DECREF(kind);
        added
    }
}

static mut METHODS: [PyMethodDef; 3] = [
    PyMethodDef {
        ml_name: c"adler32".as_ptr(),
        ml_meth: PyMethodDefPointer {
            PyCFunction: adler32,
        },
        ml_flags: METH_VARARGS,
        ml_doc: c"adler32(data, value=1, /)\n--\n\n\
                  Adler-32 of a bytes, continued from value (as zlib.adler32), without the GIL."
            .as_ptr(),
    },
    PyMethodDef {
        ml_name: c"_test_panic".as_ptr(),
        ml_meth: PyMethodDefPointer {
            PyCFunction: test_panic,
        },
        ml_flags: METH_VARARGS,
        ml_doc: c"_test_panic(message, /)\n--\n\n\
                  Not public API: panics with message in a released block (raises PanicError)."
            .as_ptr(),
    },
    PyMethodDef::zeroed(),
];

static mut SLOTS: [PyModuleDef_Slot; 2] = [
    PyModuleDef_Slot {
        slot: Py_mod_exec,
        value: exec as unsafe extern "C" fn(*mut PyObject) -> c_int as *mut c_void,
    },
    PyModuleDef_Slot {
        slot: 0,
        value: null_mut(),
    },
];

static mut MODULE: PyModuleDef = PyModuleDef {
    m_base: PyModuleDef_HEAD_INIT,
    m_name: c"minimal".as_ptr(),
    m_doc: c"The smallest extension on nuwa-ffi.".as_ptr(),
    m_size: 0,
    m_methods: (&raw mut METHODS).cast(),
    m_slots: (&raw mut SLOTS).cast(),
    m_traverse: None,
    m_clear: None,
    m_free: None,
};

/// The module's entry point: CPython looks for `PyInit_<module name>`.
///
/// # Safety
///
/// Called by the import machinery, with the GIL held.
#[allow(non_snake_case)]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyInit_minimal() -> *mut PyObject {
    // SAFETY: the GIL is held; `MODULE` lives forever and is only reached
    // through this raw pointer, by CPython.
    unsafe { PyModuleDef_Init(&raw mut MODULE) }
}
