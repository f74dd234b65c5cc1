//! Any `async` inside a block is rejected, even without an `.await`: a future
//! made there could be polled inside the block.

use nuwa_core::mock::MockGil;
use nuwa_core::nogil;

fn main() {
    let gil = MockGil::new();
    let _ = nogil!(gil => { async move { 1 } });
}
