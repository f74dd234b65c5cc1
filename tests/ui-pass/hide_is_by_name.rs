//! What `hide(...)` does NOT catch, pinned so that a change to it is noticed
//! (and the docs, which list these, kept true): it shadows the names listed,
//! and nothing reaches the handle any other way is checked. Each use below
//! touches `py` inside a released block, and compiles. The strict form
//! (`nogil(ops, |gil| ...)`, whose closure must be `Send`) rejects all of
//! them by type: see `ui/strict_captures_*.rs`.

use nuwa_core::mock::MockGil;
use nuwa_core::nogil;

/// Stands for a GIL token such as PyO3's `Python<'py>`.
#[derive(Clone, Copy)]
struct Python;

impl Python {
    fn eval(self) -> u32 {
        1
    }
}

struct Context {
    py: Python,
}

impl Context {
    fn py(&self) -> Python {
        self.py
    }
}

fn main() {
    let gil = MockGil::new();
    let py = Python;
    let ctx = Context { py };
    let call_python = || py.eval(); // a closure made before the block
    let by_ref = &py; // a reference taken before the block
    let total = nogil!(gil, hide(py) => {
        call_python() + by_ref.eval() + ctx.py.eval() + ctx.py().eval()
    });
    assert_eq!(total, 4);
    // A block nested in a `with_gil!` part does not hide again what its
    // enclosing block hid: the part gave `py` back (as a `&Python`), and
    // the nested block, where the GIL is released again, sees it by name.
    let nested = nogil!(gil, hide(py) => {
        with_gil! {
            nogil!(gil => { py.eval() })
        }
        .unwrap()
    });
    assert_eq!(nested, 1);
}
