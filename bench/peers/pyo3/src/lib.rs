//! The PyO3 peer: `cycles(n)` runs `n` empty blocks, each in `py.detach`.
//! Without the `release` feature, the same loop without it.

use pyo3::prelude::*;

/// `n` empty blocks with the GIL released by PyO3.
#[pyfunction]
fn cycles(py: Python<'_>, n: u64) {
    for i in 0..n {
        #[cfg(feature = "release")]
        py.detach(|| sink(i));
        #[cfg(not(feature = "release"))]
        {
            let _ = py;
            sink(i);
        }
    }
}

/// Keeps `i` (the block's "work") from being optimised away at no cost, as
/// the C peers' `SINK` (see the nuwa peer).
#[inline(always)]
fn sink(i: u64) {
    // SAFETY: an empty assembly block that takes `i` in a register and does
    // nothing.
    unsafe { std::arch::asm!("/* {0} */", in(reg) i, options(nostack, preserves_flags)) }
}

/// The module.
#[pymodule]
fn bench_m(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(cycles, m)?)
}
