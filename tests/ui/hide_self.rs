//! `hide(self)` cannot shadow `self`; the error says what to write instead.

use nuwa_core::mock::MockGil;
use nuwa_core::nogil;

struct Extension {
    py: u32,
}

impl Extension {
    fn compute(&self, gil: &MockGil) -> u32 {
        nogil!(gil, hide(self) => { 1 })
    }
}

fn main() {
    let _ = Extension { py: 0 }.compute(&MockGil::new());
}
