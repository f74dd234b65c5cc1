//! The macro's own `unsafe` (for the guard) does not leak into the block: an
//! unsafe call inside it still needs the caller's `unsafe`.

use nuwa_core::mock::MockGil;
use nuwa_core::nogil;

/// # Safety
///
/// None; `unsafe` only to be called.
unsafe fn raw() -> u32 {
    1
}

fn main() {
    let gil = MockGil::new();
    let _ = nogil!(gil => { raw() });
}
