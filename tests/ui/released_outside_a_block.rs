//! `released!()` exists only inside a `nogil!` block; elsewhere it is a clear
//! error.

fn main() {
    let _ = nuwa_ffi::released!();
}
