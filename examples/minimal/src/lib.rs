//! `minimal`: one function, `adler32(data)`, that checksums a `bytes` with the
//! GIL released, so other Python threads run meanwhile. Raw C API (`pyo3-ffi`);
//! nuwa-ffi finds CPython's GIL functions at run time: no link to libpython.

use pyo3_ffi::*;

/// Adler-32 (RFC 1950, as `zlib.adler32`): plain Rust, no Python object.
fn adler32_of(data: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    let (mut a, mut b) = (1u32, 0u32);
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

/// `adler32(data, /)`: CPython checks that there is exactly one argument.
///
/// # Safety
///
/// Called by CPython, with the GIL held, as a `METH_O` function.
unsafe extern "C" fn adler32(_module: *mut PyObject, data: *mut PyObject) -> *mut PyObject {
    // 1. GIL held: check the argument and borrow its bytes. Only `bytes`: the
    // buffer of a `bytearray` could be resized by another thread meanwhile.
    // SAFETY: CPython passes a live object and holds the GIL.
    let bytes: &[u8] = unsafe {
        if PyBytes_Check(data) == 0 {
            let message = c"adler32() argument must be bytes, not %.200s".as_ptr();
            PyErr_Format(PyExc_TypeError, message, (*Py_TYPE(data)).tp_name);
            return core::ptr::null_mut();
        }
        // A `bytes` never changes, and the caller keeps `data` alive until
        // we return, so its buffer may be read without the GIL.
        core::slice::from_raw_parts(PyBytes_AsString(data).cast(), PyBytes_Size(data) as usize)
    };
    // 2. GIL released: the work. The strict form: its closure must be `Send`,
    // so the compiler rejects any `*mut PyObject` in it by type, where
    // `nogil!(hide(data) => ..)` checks names. If your work can panic, wrap
    // the block in `nuwa_ffi::Panicked::catch(|| ..)` and raise its `Err`: no
    // panic may leave here.
    let sum = nuwa_ffi::nogil(|_| adler32_of(bytes));
    // 3. SAFETY: the GIL is held again; build the result. (`unsigned long
    // long`: `unsigned long` is 32 bits on Windows and 32-bit Linux, where
    // the `u32` would need no conversion and clippy would say so.)
    unsafe { PyLong_FromUnsignedLongLong(sum.into()) }
}

static mut METHODS: [PyMethodDef; 2] = [
    PyMethodDef {
        ml_name: c"adler32".as_ptr(),
        ml_meth: PyMethodDefPointer {
            PyCFunction: adler32,
        },
        ml_flags: METH_O,
        ml_doc: c"adler32(data, /)\n--\n\nAdler-32 of a bytes, computed without the GIL.".as_ptr(),
    },
    PyMethodDef::zeroed(),
];

static mut MODULE: PyModuleDef = PyModuleDef {
    m_base: PyModuleDef_HEAD_INIT,
    m_name: c"minimal".as_ptr(),
    m_doc: c"The smallest extension on nuwa-ffi.".as_ptr(),
    m_size: 0,
    m_methods: (&raw mut METHODS).cast(),
    m_slots: core::ptr::null_mut(),
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
