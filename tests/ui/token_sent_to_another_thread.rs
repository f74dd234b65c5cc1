//! A `GilHeld` token cannot go to another thread, which does not hold the GIL.

fn main() {
    // SAFETY: (for the test) stands for a function Python called.
    let mut gil = unsafe { nuwa_ffi::GilHeld::new() };
    std::thread::scope(|s| {
        s.spawn(move || nuwa_ffi::nogil!(&mut gil => { 1 }));
    });
}
