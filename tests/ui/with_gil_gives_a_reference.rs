//! Inside `with_gil!` a hidden name is usable again, as a shared reference:
//! passing it where the value is needed is a type error that shows `&T`.

use nuwa_core::mock::MockGil;
use nuwa_core::nogil;

#[derive(Clone, Copy)]
struct Python;

fn call(_: Python) -> u32 {
    1
}

fn main() {
    let gil = MockGil::new();
    let py = Python;
    let _ = nogil!(gil, hide(py) => {
        with_gil! { call(py) }
    });
}
