//! A block on a `GilHeld` token borrows it mutably: a second block on it
//! inside the first (where the GIL is released) does not compile.

fn main() {
    // SAFETY: (for the test) stands for a function Python called.
    let mut gil = unsafe { nuwa_ffi::GilHeld::new() };
    let _ = nuwa_ffi::nogil!(&mut gil => {
        nuwa_ffi::nogil!(&mut gil => { 1 })
    });
}
