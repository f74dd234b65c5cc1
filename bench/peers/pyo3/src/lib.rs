//! The PyO3 peer: `cycles(n)` runs `n` empty blocks, each in `py.detach`.
//! Without the `release` feature, the same loop without it.

use pyo3::prelude::*;

/// `n` empty blocks with the GIL released by PyO3.
#[pyfunction]
fn cycles(py: Python<'_>, n: u64) {
    for i in 0..n {
        #[cfg(feature = "release")]
        py.detach(|| std::hint::black_box(i));
        #[cfg(not(feature = "release"))]
        {
            let _ = py;
            std::hint::black_box(i);
        }
    }
}

/// The module.
#[pymodule]
fn bench_m(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(cycles, m)?)
}
