//! A backend and a block with the `=>` missing: a near-miss says so instead
//! of being read as a struct literal named after the backend.

fn main() {
    let gil = nuwa_ffi::mock::MockGil::new();
    let _ = nuwa_ffi::nogil!(gil {
        let x = 1;
        x + 1
    });
}
