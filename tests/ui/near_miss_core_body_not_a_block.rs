//! The core macro says the same.

use nuwa_core::mock::MockGil;
use nuwa_core::nogil;

fn main() {
    let gil = MockGil::new();
    let _ = nogil!(gil => 1);
}
