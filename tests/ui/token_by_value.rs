//! A token is used as `&mut gil`; the error says so.

fn main() {
    // SAFETY: (for the test) stands for a function Python called.
    let gil = unsafe { nuwa_ffi::GilHeld::new() };
    let _ = nuwa_ffi::nogil!(gil => { 1 });
}
