//! A binding named in `hide(...)` cannot even be formatted inside the block:
//! the stand-in has no trait impls at all.

use nuwa_core::mock::MockGil;
use nuwa_core::nogil;

#[derive(Debug)]
struct Python;

fn main() {
    let gil = MockGil::new();
    let py = Python;
    let text = nogil!(gil, hide(py) => { format!("{py:?}") });
    assert_eq!(text, format!("{py:?}"));
}
