//! `with_gil!` exists only inside a `nogil!` block; elsewhere (or called by
//! path) it is a clear error.

fn main() {
    let _ = nuwa_ffi::with_gil! { 1 };
}
