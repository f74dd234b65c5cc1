//! `.await` inside a block would suspend the future with the GIL released
//! (and `mem::forget` of it would never take the GIL back): rejected, even
//! nested in a closure call's arguments.

use nuwa_core::mock::MockGil;
use nuwa_core::nogil;

async fn ready() -> u32 {
    1
}

async fn work(gil: &MockGil) -> u32 {
    nogil!(gil => {
        let x = 2;
        Some(x).map(|x| x + 1).unwrap_or(0) + [(ready().await)][0]
    })
}

fn main() {
    let _ = work;
}
