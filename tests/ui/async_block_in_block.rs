//! An `async` block inside a block is rejected too (the scan cannot tell its
//! `.await` from the block's own): make the future outside.

use nuwa_core::mock::MockGil;
use nuwa_core::nogil;

async fn ready() -> u32 {
    1
}

fn main() {
    let gil = MockGil::new();
    let _future = nogil!(gil => { async { ready().await } });
}
