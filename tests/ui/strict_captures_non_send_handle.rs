//! A GIL token that is not `Send` (as PyO3's `Python<'py>` and `Bound<'py, T>`
//! are not) cannot be captured by the strict form, through any backend.

use std::marker::PhantomData;

/// Stands for PyO3's `Python<'py>`: not `Send`.
#[derive(Clone, Copy)]
struct Python<'py>(PhantomData<(&'py (), *mut ())>);

impl Python<'_> {
    fn eval(self) -> u32 {
        1
    }
}

struct Context<'py> {
    py: Python<'py>,
}

use nuwa_core::Nogil;

fn main() {
    let ctx = Context { py: Python(PhantomData) };
    let gil = nuwa_ffi::ThreadCheckedMock::new();
    let _ = gil.nogil(|_| ctx.py.eval());
    let _ = nuwa_ffi::nogil(|_| ctx.py.eval());
}
