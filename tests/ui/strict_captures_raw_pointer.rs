//! The strict form's closure must be `Send`: a raw Python pointer cannot be
//! captured, whatever its name.

fn main() {
    let object: *mut std::ffi::c_void = std::ptr::null_mut(); // a *mut PyObject
    let context = (object, 1); // not named `object` any more
    let _ = nuwa_ffi::nogil(|_| context.0.is_null());
}
