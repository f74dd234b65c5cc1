//! The same near-miss with a block of one expression.

fn work() -> u32 {
    7
}

fn main() {
    let gil = nuwa_ffi::mock::MockGil::new();
    let _ = nuwa_ffi::nogil!(gil { work() });
}
