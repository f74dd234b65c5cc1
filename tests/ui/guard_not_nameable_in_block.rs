//! The block cannot name the macro's guard, so it cannot forget or move it
//! (the safety argument of `Guard::release` in `nogil!`).

use nuwa_core::mock::MockGil;
use nuwa_core::nogil;

fn main() {
    let gil = MockGil::new();
    nogil!(gil => {
        std::mem::forget(__nuwa_guard);
    });
}
