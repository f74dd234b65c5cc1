//! Small helpers over the raw C API: owned references and raising
//! exceptions. Everything here needs the GIL.

use core::ffi::c_char;
use core::ptr::NonNull;

use pyo3_ffi::*;

/// A Python exception is set on this thread; the caller must return `NULL`
/// (or `-1`) to the interpreter.
#[derive(Debug)]
pub(crate) struct Raised;

/// The result of a step that may raise a Python exception.
pub(crate) type PyResult<T> = Result<T, Raised>;

/// An owned (strong) reference to a Python object, released on drop.
///
/// Only made and dropped with the GIL held: it is neither `Send` nor `Sync`,
/// and the functions name every `Owned` in the `hide(...)` of their block,
/// so none is touched (or dropped) while the GIL is released.
#[derive(Debug)]
pub(crate) struct Owned(NonNull<PyObject>);

impl Owned {
    /// Takes ownership of `ptr`, a new reference returned by the C API, or
    /// reports the exception that a `NULL` means.
    ///
    /// # Safety
    ///
    /// The GIL is held, and `ptr` is either `NULL` with an exception set or a
    /// strong reference that the caller owns and hands over.
    pub(crate) unsafe fn new(ptr: *mut PyObject) -> PyResult<Owned> {
        NonNull::new(ptr).map(Owned).ok_or(Raised)
    }

    /// The borrowed pointer.
    pub(crate) fn as_ptr(&self) -> *mut PyObject {
        self.0.as_ptr()
    }

    /// Gives the reference to the caller (to return it to Python).
    pub(crate) fn into_ptr(self) -> *mut PyObject {
        let ptr = self.0.as_ptr();
        core::mem::forget(self);
        ptr
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        // SAFETY: we own this reference, and an `Owned` is only dropped with
        // the GIL held (see the type's documentation).
        unsafe { Py_DECREF(self.0.as_ptr()) }
    }
}

/// Raises `exception(message)`; `message` may hold any UTF-8, NULs included.
///
/// # Safety
///
/// The GIL is held and `exception` is an exception type.
pub(crate) unsafe fn raise(exception: *mut PyObject, message: &str) -> Raised {
    // SAFETY: the GIL is held; the pointer and length describe `message`.
    let text = unsafe {
        PyUnicode_FromStringAndSize(
            message.as_ptr().cast::<c_char>(),
            message.len() as Py_ssize_t,
        )
    };
    if !text.is_null() {
        // SAFETY: the GIL is held, `exception` is an exception type, and
        // `text` is a new reference that we release after it is stored.
        unsafe {
            PyErr_SetObject(exception, text);
            Py_DECREF(text);
        }
    }
    // If the message could not be made, that MemoryError is raised instead.
    Raised
}

/// The type name of `obj` for messages (`bytearray`): its type's
/// `__name__`. The limited API has no `tp_name`; the two agree for built-in
/// types and classes defined in Python.
///
/// # Safety
///
/// The GIL is held and `obj` is a live object.
pub(crate) unsafe fn type_name(obj: *mut PyObject) -> String {
    // SAFETY: the GIL is held and `obj` is live, so is its type; the name
    // is a new reference owned by `Owned`.
    let name = unsafe {
        Owned::new(PyObject_GetAttrString(
            Py_TYPE(obj).cast(),
            c"__name__".as_ptr(),
        ))
    };
    let text = name.and_then(|name| {
        // SAFETY: the GIL is held; `__name__` of a type is a `str`.
        unsafe { str_to_string(name.as_ptr()) }
    });
    text.unwrap_or_else(|Raised| {
        // SAFETY: the GIL is held; this error is not the one to report.
        unsafe { PyErr_Clear() };
        String::from("<unknown type>")
    })
}

/// `str(obj)`, for messages; never fails (falls back to a placeholder).
///
/// # Safety
///
/// The GIL is held and `obj` is a live object.
pub(crate) unsafe fn display(obj: *mut PyObject) -> String {
    // SAFETY: the GIL is held and `obj` is live; the result is owned.
    let Ok(text) = (unsafe { Owned::new(PyObject_Str(obj)) }) else {
        // SAFETY: the GIL is held; the error of `str()` is not the one to report.
        unsafe { PyErr_Clear() };
        return String::from("<unprintable object>");
    };
    // SAFETY: the GIL is held and `text` is a `str`.
    unsafe { str_to_string(text.as_ptr()) }.unwrap_or_else(|Raised| {
        // SAFETY: as above.
        unsafe { PyErr_Clear() };
        String::from("<unprintable object>")
    })
}

/// Copies a `str` into a Rust `String`.
///
/// # Safety
///
/// The GIL is held and `obj` is a `str`.
pub(crate) unsafe fn str_to_string(obj: *mut PyObject) -> PyResult<String> {
    // SAFETY: the GIL is held and `obj` is a `str`. `PyUnicode_AsUTF8String`
    // (the limited API's way before 3.10) returns a new `bytes`, owned by
    // `utf8`, whose buffer holds `PyBytes_Size` bytes while we copy them.
    unsafe {
        let utf8 = Owned::new(PyUnicode_AsUTF8String(obj))?;
        let data = PyBytes_AsString(utf8.as_ptr());
        let size = PyBytes_Size(utf8.as_ptr());
        if data.is_null() || size < 0 {
            return Err(Raised);
        }
        let bytes = core::slice::from_raw_parts(data.cast::<u8>(), size as usize);
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// Returns a new reference to `True` or `False`.
///
/// # Safety
///
/// The GIL is held.
pub(crate) unsafe fn bool_object(value: bool) -> *mut PyObject {
    // SAFETY: the GIL is held; `PyBool_FromLong` cannot fail.
    unsafe { PyBool_FromLong(value.into()) }
}

/// Returns a new reference to `None`.
///
/// # Safety
///
/// The GIL is held.
pub(crate) unsafe fn none_object() -> *mut PyObject {
    // SAFETY: the GIL is held; `None` is a live object in every interpreter.
    unsafe {
        let none = Py_None();
        Py_INCREF(none);
        none
    }
}
