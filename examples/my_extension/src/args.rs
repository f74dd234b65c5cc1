//! Argument parsing for `METH_VARARGS | METH_KEYWORDS` functions, with
//! CPython's own error messages, and the conversions the functions need.
//!
//! A [`Signature`] describes `name(a, b=..., *, c=...)`; [`Signature::parse`]
//! matches the positional and keyword arguments of one call to it, and the
//! [`Args`] it returns converts each argument by name.
//!
//! The module is built against the stable ABI of CPython 3.9 (abi3), where
//! `METH_FASTCALL` is not part of the limited API (it is from 3.10 on): the
//! arguments come as a tuple and a dict, and only limited-API functions
//! read them.

use core::ffi::CStr;

use pyo3_ffi::*;

use crate::py::{Owned, PyResult, Raised, display, raise, str_to_string, type_name};

/// The arguments of one `METH_VARARGS | METH_KEYWORDS` call, as CPython
/// passes them: a tuple of the positional values, and a dict of the keyword
/// ones (`NULL` when there are none). Both are borrowed for the call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CallArgs {
    pub(crate) args: *mut PyObject,
    pub(crate) kwargs: *mut PyObject,
}

/// The parameters of a function: `params[..positional]` may be passed by
/// position or keyword, the rest by keyword only, and the first `required`
/// must be given.
#[derive(Debug)]
pub(crate) struct Signature {
    pub(crate) name: &'static str,
    pub(crate) params: &'static [&'static CStr],
    pub(crate) positional: usize,
    pub(crate) required: usize,
}

/// The arguments of one call, matched to a [`Signature`]: borrowed pointers,
/// valid for the call, usable only with the GIL held.
#[derive(Debug)]
pub(crate) struct Args<const N: usize> {
    signature: &'static Signature,
    values: [*mut PyObject; N],
}

impl Signature {
    /// Matches the arguments of a call to the parameters; raises `TypeError`
    /// for too many positional arguments, an unknown or repeated keyword,
    /// or a missing required argument.
    ///
    /// # Safety
    ///
    /// The GIL is held and `call` is what CPython passed to the function.
    ///
    /// # Panics
    ///
    /// If `N` is not the number of parameters (a bug in this crate).
    pub(crate) unsafe fn parse<const N: usize>(&'static self, call: CallArgs) -> PyResult<Args<N>> {
        assert_eq!(N, self.params.len(), "{}: wrong parameter count", self.name);
        let mut values = [core::ptr::null_mut(); N];
        // SAFETY: the GIL is held and `args` is a tuple.
        let nargs = unsafe { PyTuple_Size(call.args) };
        if nargs < 0 {
            return Err(Raised);
        }
        let nargs = nargs as usize;
        if nargs > self.positional {
            // SAFETY: the GIL is held.
            return Err(unsafe { self.too_many_positional(nargs) });
        }
        for (i, value) in values.iter_mut().enumerate().take(nargs) {
            // SAFETY: the GIL is held and `i` is within the tuple; the item
            // is borrowed from the tuple, which lives for the call.
            *value = unsafe { PyTuple_GetItem(call.args, i as Py_ssize_t) };
            if value.is_null() {
                return Err(Raised);
            }
        }
        let mut position: Py_ssize_t = 0;
        let (mut key, mut value) = (core::ptr::null_mut(), core::ptr::null_mut());
        loop {
            // SAFETY: the GIL is held and `kwargs`, when not `NULL`, is a
            // dict that nothing changes while it is read; keys and values
            // are borrowed from it, which lives for the call.
            let more = !call.kwargs.is_null()
                && unsafe { PyDict_Next(call.kwargs, &mut position, &mut key, &mut value) } != 0;
            if !more {
                break;
            }
            // SAFETY: the GIL is held and `key` is a live object.
            let slot = unsafe { self.find(key) }?;
            if !values[slot].is_null() {
                let message = format!(
                    "{}() got multiple values for argument '{}'",
                    self.name,
                    self.params[slot].to_string_lossy()
                );
                // SAFETY: the GIL is held.
                return Err(unsafe { raise(PyExc_TypeError, &message) });
            }
            values[slot] = value;
        }
        if let Some(missing) = values[..self.required].iter().position(|v| v.is_null()) {
            let message = format!(
                "{}() missing required argument '{}'",
                self.name,
                self.params[missing].to_string_lossy()
            );
            // SAFETY: the GIL is held.
            return Err(unsafe { raise(PyExc_TypeError, &message) });
        }
        Ok(Args {
            signature: self,
            values,
        })
    }

    /// The parameter that a keyword names.
    ///
    /// # Safety
    ///
    /// The GIL is held and `key` is a live object.
    unsafe fn find(&self, key: *mut PyObject) -> PyResult<usize> {
        // SAFETY: the GIL is held and `key` is live.
        if unsafe { PyUnicode_Check(key) } == 0 {
            let message = format!("{}() keywords must be strings", self.name);
            // SAFETY: the GIL is held.
            return Err(unsafe { raise(PyExc_TypeError, &message) });
        }
        for (i, param) in self.params.iter().enumerate() {
            // SAFETY: the GIL is held, `key` is a `str`, `param` is ASCII.
            if unsafe { PyUnicode_CompareWithASCIIString(key, param.as_ptr()) } == 0 {
                return Ok(i);
            }
        }
        // SAFETY: the GIL is held and `key` is live.
        let key = unsafe { display(key) };
        let message = format!("{}() got an unexpected keyword argument '{key}'", self.name);
        // SAFETY: the GIL is held.
        Err(unsafe { raise(PyExc_TypeError, &message) })
    }

    /// Raises the `TypeError` for `given` positional arguments.
    ///
    /// # Safety
    ///
    /// The GIL is held.
    unsafe fn too_many_positional(&self, given: usize) -> Raised {
        let takes = if self.required == self.positional {
            let s = if self.positional == 1 { "" } else { "s" };
            format!("{} positional argument{s}", self.positional)
        } else {
            format!(
                "from {} to {} positional arguments",
                self.required, self.positional
            )
        };
        let were = if given == 1 { "was" } else { "were" };
        let message = format!("{}() takes {takes} but {given} {were} given", self.name);
        // SAFETY: the GIL is held.
        unsafe { raise(PyExc_TypeError, &message) }
    }
}

/// An integer argument, sorted by where it falls around `0..2**64`.
enum Index {
    U64(u64),
    /// Below zero; the text is its `str()`.
    Negative(String),
    /// `2**64` or more; the text is its `str()`.
    TooLarge(String),
}

impl<const N: usize> Args<N> {
    /// The argument for `name`, or `None` if it was not passed.
    fn get(&self, name: &str) -> Option<*mut PyObject> {
        let i = self
            .signature
            .params
            .iter()
            .position(|p| p.to_bytes() == name.as_bytes())
            .unwrap_or_else(|| panic!("{}() has no parameter {name}", self.signature.name));
        let value = self.values[i];
        (!value.is_null()).then_some(value)
    }

    /// The argument for a required parameter.
    fn required(&self, name: &str) -> *mut PyObject {
        self.get(name)
            .unwrap_or_else(|| panic!("{}() {name} is not required", self.signature.name))
    }

    /// Raises `TypeError("f() argument 'x' must be {expected}, not {type}")`.
    ///
    /// # Safety
    ///
    /// The GIL is held and `value` is live.
    unsafe fn wrong_type(&self, name: &str, expected: &str, value: *mut PyObject) -> Raised {
        // SAFETY: the caller's contract.
        let got = unsafe { type_name(value) };
        let message = format!(
            "{}() argument '{name}' must be {expected}, not {got}",
            self.signature.name
        );
        // SAFETY: the GIL is held.
        unsafe { raise(PyExc_TypeError, &message) }
    }

    /// Converts an argument that must be an integer (`int`, `bool`, or any
    /// object with `__index__`; not `float`).
    ///
    /// # Safety
    ///
    /// The GIL is held.
    unsafe fn index(&self, name: &str, value: *mut PyObject) -> PyResult<Index> {
        // SAFETY: the GIL is held and `value` is a live argument.
        unsafe {
            let index = PyNumber_Index(value);
            if index.is_null() {
                if PyErr_ExceptionMatches(PyExc_TypeError) != 0 {
                    PyErr_Clear();
                    return Err(self.wrong_type(name, "int", value));
                }
                return Err(Raised);
            }
            let index = crate::py::Owned::new(index)?;
            let mut overflow = 0;
            let small = PyLong_AsLongLongAndOverflow(index.as_ptr(), &mut overflow);
            if small == -1 && overflow == 0 && !PyErr_Occurred().is_null() {
                return Err(Raised);
            }
            Ok(match overflow {
                0 if small >= 0 => Index::U64(small as u64),
                0 => Index::Negative(small.to_string()),
                o if o < 0 => Index::Negative(display(index.as_ptr())),
                _ => {
                    let large = PyLong_AsUnsignedLongLong(index.as_ptr());
                    if large == u64::MAX && !PyErr_Occurred().is_null() {
                        if PyErr_ExceptionMatches(PyExc_OverflowError) == 0 {
                            return Err(Raised);
                        }
                        PyErr_Clear();
                        Index::TooLarge(display(index.as_ptr()))
                    } else {
                        Index::U64(large)
                    }
                }
            })
        }
    }

    /// An integer argument in `min..2**64`, or `default` if it was not
    /// passed (`None` for a required one). Raises `TypeError` for a
    /// non-integer, `ValueError` below `min`, `OverflowError` from `2**64`.
    ///
    /// # Safety
    ///
    /// The GIL is held.
    pub(crate) unsafe fn u64(&self, name: &str, default: Option<u64>, min: u64) -> PyResult<u64> {
        let value = match (self.get(name), default) {
            (Some(value), _) => value,
            (None, Some(default)) => return Ok(default),
            (None, None) => self.required(name),
        };
        // SAFETY: the GIL is held and `value` is a live argument.
        let (text, too_large) = match unsafe { self.index(name, value) }? {
            Index::U64(n) if n >= min => return Ok(n),
            Index::U64(n) => (n.to_string(), false),
            Index::Negative(text) => (text, false),
            Index::TooLarge(text) => (text, true),
        };
        // SAFETY: the GIL is held (and the exception types are live).
        Err(unsafe {
            if too_large {
                let message = format!("{name} must be < 2**64, got {text}");
                raise(PyExc_OverflowError, &message)
            } else {
                let message = format!("{name} must be >= {min}, got {text}");
                raise(PyExc_ValueError, &message)
            }
        })
    }

    /// An optional integer argument in `0..2**64`: `None` if it was not
    /// passed or is `None`.
    ///
    /// # Safety
    ///
    /// The GIL is held.
    pub(crate) unsafe fn u64_or_none(&self, name: &str) -> PyResult<Option<u64>> {
        match self.get(name) {
            // SAFETY: the GIL is held; `None` is live.
            Some(value) if value != unsafe { Py_None() } => {
                // SAFETY: the GIL is held.
                unsafe { self.u64(name, None, 0) }.map(Some)
            }
            _ => Ok(None),
        }
    }

    /// An optional callable argument: `None` if it was not passed or is
    /// `None`, otherwise a new strong reference to it (so that it stays alive
    /// for as long as the function needs it, whatever the callable itself
    /// does). Raises `TypeError` for anything that is not callable.
    ///
    /// # Safety
    ///
    /// The GIL is held.
    pub(crate) unsafe fn callable_or_none(&self, name: &str) -> PyResult<Option<Owned>> {
        let value = match self.get(name) {
            // SAFETY: the GIL is held; `None` is live.
            Some(value) if value != unsafe { Py_None() } => value,
            _ => return Ok(None),
        };
        // SAFETY: the GIL is held and `value` is a live argument; the new
        // reference taken by `Py_INCREF` is handed to `Owned`.
        unsafe {
            if PyCallable_Check(value) == 0 {
                return Err(self.wrong_type(name, "callable or None", value));
            }
            Py_INCREF(value);
            Owned::new(value).map(Some)
        }
    }

    /// A `bool` argument (only `True` or `False`), or `default`.
    ///
    /// # Safety
    ///
    /// The GIL is held.
    pub(crate) unsafe fn flag(&self, name: &str, default: bool) -> PyResult<bool> {
        let Some(value) = self.get(name) else {
            return Ok(default);
        };
        // SAFETY: the GIL is held; `True` and `False` are live.
        unsafe {
            if value == Py_True() {
                Ok(true)
            } else if value == Py_False() {
                Ok(false)
            } else {
                Err(self.wrong_type(name, "bool", value))
            }
        }
    }

    /// A real-number argument (`float`, `int`, or anything with `__float__`
    /// or `__index__`).
    ///
    /// # Safety
    ///
    /// The GIL is held.
    pub(crate) unsafe fn f64(&self, name: &str) -> PyResult<f64> {
        let value = self.required(name);
        // SAFETY: the GIL is held and `value` is a live argument.
        unsafe { self.to_f64(name, value) }
    }

    /// A real-number argument, as [`f64`](Self::f64), or `default` if it
    /// was not passed.
    ///
    /// # Safety
    ///
    /// The GIL is held.
    pub(crate) unsafe fn f64_or(&self, name: &str, default: f64) -> PyResult<f64> {
        match self.get(name) {
            // SAFETY: the GIL is held and `value` is a live argument.
            Some(value) => unsafe { self.to_f64(name, value) },
            None => Ok(default),
        }
    }

    /// Converts `value`, the argument `name`, with `PyFloat_AsDouble`.
    ///
    /// # Safety
    ///
    /// The GIL is held and `value` is live.
    unsafe fn to_f64(&self, name: &str, value: *mut PyObject) -> PyResult<f64> {
        // SAFETY: the GIL is held and `value` is live.
        unsafe {
            let x = PyFloat_AsDouble(value);
            if x == -1.0 && !PyErr_Occurred().is_null() {
                if PyErr_ExceptionMatches(PyExc_TypeError) != 0 {
                    PyErr_Clear();
                    return Err(self.wrong_type(name, "a real number", value));
                }
                return Err(Raised);
            }
            Ok(x)
        }
    }

    /// A `str` argument, copied.
    ///
    /// # Safety
    ///
    /// The GIL is held.
    pub(crate) unsafe fn string(&self, name: &str) -> PyResult<String> {
        let value = self.required(name);
        // SAFETY: the GIL is held and `value` is live.
        unsafe {
            if PyUnicode_Check(value) == 0 {
                return Err(self.wrong_type(name, "str", value));
            }
            str_to_string(value)
        }
    }

    /// The contents of a `bytes` argument (a subclass is fine; `bytearray`,
    /// `memoryview` and other mutable buffers are refused, since they could
    /// change while the GIL is released).
    ///
    /// # Safety
    ///
    /// The GIL is held. The slice borrows the argument's buffer: it is valid
    /// for the call, and, `bytes` being immutable, it may be read without
    /// the GIL.
    pub(crate) unsafe fn bytes<'call>(&self, name: &str) -> PyResult<&'call [u8]> {
        let value = self.required(name);
        // SAFETY: the GIL is held and `value` is live; a `bytes` object's
        // buffer holds `PyBytes_Size` bytes and never changes.
        unsafe {
            if PyBytes_Check(value) == 0 {
                return Err(self.wrong_type(name, "bytes", value));
            }
            let data = PyBytes_AsString(value);
            let len = PyBytes_Size(value);
            if data.is_null() || len < 0 {
                return Err(Raised);
            }
            Ok(core::slice::from_raw_parts(data.cast::<u8>(), len as usize))
        }
    }

    /// An iterable of real numbers, converted to `f64` with
    /// `PyFloat_AsDouble`. A `TypeError` names the index of the bad item.
    ///
    /// # Safety
    ///
    /// The GIL is held.
    pub(crate) unsafe fn floats(&self, name: &str) -> PyResult<Vec<f64>> {
        let value = self.required(name);
        // SAFETY: the GIL is held and `value` is live. `PySequence_Tuple`
        // returns a tuple we own: a snapshot that other threads cannot change
        // while the items are read.
        unsafe {
            let Ok(items) = crate::py::Owned::new(PySequence_Tuple(value)) else {
                if PyErr_ExceptionMatches(PyExc_TypeError) != 0 {
                    PyErr_Clear();
                    return Err(self.wrong_type(name, "an iterable of real numbers", value));
                }
                return Err(Raised);
            };
            let len = PyTuple_Size(items.as_ptr());
            let mut out = Vec::with_capacity(len.max(0) as usize);
            for i in 0..len {
                // Borrowed from the tuple, which `items` keeps alive.
                let item = PyTuple_GetItem(items.as_ptr(), i);
                if item.is_null() {
                    return Err(Raised);
                }
                let x = PyFloat_AsDouble(item);
                if x == -1.0 && !PyErr_Occurred().is_null() {
                    if PyErr_ExceptionMatches(PyExc_TypeError) == 0 {
                        return Err(Raised);
                    }
                    PyErr_Clear();
                    let message = format!(
                        "{}() argument '{name}' item {i} must be a real number, not {}",
                        self.signature.name,
                        type_name(item)
                    );
                    return Err(raise(PyExc_TypeError, &message));
                }
                out.push(x);
            }
            Ok(out)
        }
    }
}
