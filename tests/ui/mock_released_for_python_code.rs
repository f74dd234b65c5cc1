//! A `Released` is typed by the GIL it takes back: code that calls Python in
//! its `with_gil` takes `Released<'_, CPython>`, and a mock block's cannot be
//! passed to it (its "GIL held" says nothing about the interpreter's).

use nuwa_ffi::mock::MockGil;
use nuwa_ffi::{CPython, Nogil, Released};

/// Stands for library code that calls the C API inside `with_gil`.
fn report_to_python(gil: &mut Released<'_, CPython>) {
    let _ = gil.with_gil(|| ());
}

fn main() {
    nuwa_ffi::nogil(|_| {
        let mock = MockGil::new();
        mock.nogil(|released| report_to_python(released));
    });
}
