//! `hide(...)` must be followed by `=>` and the block.

fn main() {
    let py = 0;
    let _ = nuwa_ffi::nogil!(hide(py) { 1 });
}
