//! A `move` closure that uses `with_gil!` (or `released!()`) captures only a
//! reference to the block's guard, so it cannot leave the block: the guard
//! cannot be carried out, forgotten, or kept alive across an `.await`.

use nuwa_core::mock::MockGil;
use nuwa_core::nogil;

fn escaping(gil: &MockGil) -> impl FnMut() + '_ {
    nogil!(gil => {
        move || {
            let _ = with_gil! { () };
        }
    })
}

fn main() {
    let gil = MockGil::new();
    let _ = escaping(&gil);
}
