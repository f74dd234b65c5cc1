//! Inside a `with_gil!` part the guard is borrowed, so a second `with_gil!`
//! there does not compile (the GIL is held there anyway).

use nuwa_core::mock::MockGil;
use nuwa_core::nogil;

fn main() {
    let gil = MockGil::new();
    let _ = nogil!(gil => {
        with_gil! { with_gil! { 1 } }
    });
}
