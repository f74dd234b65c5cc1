//! A `GilHeld` token cannot be copied or cloned into a second one.

fn main() {
    // SAFETY: (for the test) stands for a function Python called.
    let gil = unsafe { nuwa_ffi::GilHeld::new() };
    let mut first = gil;
    let mut second = gil.clone();
    let _ = nuwa_ffi::nogil!(&mut first => { 1 });
    let _ = nuwa_ffi::nogil!(&mut second => { 2 });
}
