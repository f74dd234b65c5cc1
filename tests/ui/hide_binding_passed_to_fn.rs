//! A binding named in `hide(...)` cannot be passed where its own type is
//! expected inside the block.

use nuwa_core::mock::MockGil;
use nuwa_core::nogil;

struct Python;

fn needs_gil(_: &Python) {}

fn main() {
    let gil = MockGil::new();
    let py = Python;
    nogil!(gil, hide(py) => {
        needs_gil(&py);
    });
    needs_gil(&py);
}
