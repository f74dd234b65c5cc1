//! A name given back inside `with_gil!` is a reference that lives no longer
//! than the part: it cannot be carried out of it into the released block.

use nuwa_core::mock::MockGil;
use nuwa_core::nogil;

struct Python;

impl Python {
    fn eval(&self) -> u32 {
        1
    }
}

fn main() {
    let gil = MockGil::new();
    let py = Python;
    let _ = nogil!(gil, hide(py) => {
        let outside = with_gil! { py }.unwrap();
        outside.eval()
    });
}
