//! A strict block cannot capture a token (it is not `Send`), so it cannot run
//! a token block where the GIL is already released.

fn main() {
    // SAFETY: (for the test) stands for a function Python called.
    let mut gil = unsafe { nuwa_ffi::GilHeld::new() };
    nuwa_ffi::nogil(|_| nuwa_ffi::nogil!(&mut gil => { 1 }));
}
