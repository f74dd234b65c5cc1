//! `=>` must be followed by a block in braces: a near-miss says so instead of
//! being read as statements (which suggested `>=`).

fn main() {
    let gil = nuwa_ffi::mock::MockGil::new();
    let x = 1;
    let _ = nuwa_ffi::nogil!(gil => x + 1);
}
