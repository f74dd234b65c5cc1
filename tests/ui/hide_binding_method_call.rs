//! A method of the original type cannot be called on a binding named in
//! `hide(...)` inside the block.

use nuwa_core::mock::MockGil;
use nuwa_core::nogil;

struct Python;

impl Python {
    fn version(&self) -> u32 {
        314
    }
}

fn main() {
    let gil = MockGil::new();
    let (py, other) = (Python, Python);
    let v = nogil!(gil, hide(other, py) => { py.version() });
    assert_eq!(v, other.version());
}
