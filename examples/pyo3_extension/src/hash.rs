//! The worked example of the README's PyO3 section: a hash that Ctrl-C can
//! stop (leaving it as it was), released only for data large enough, and
//! counted by the release statistics.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nuwa_ffi::{Detach, SignalCheck};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// Data shorter than this is hashed with the GIL held: a release costs more
/// than such work gives (`nogil_stats()` shows it: short blocks).
pub(crate) const RELEASE_FROM: usize = 64 * 1024;

/// FNV-1a (64 bits), fed in pieces: `h = Fnv1a(); h.update(data); h.digest()`.
#[pyclass(name = "Fnv1a", module = "pyo3_extension")]
#[derive(Debug, Default)]
pub(crate) struct Hasher {
    inner: pyo3_extension_core::Fnv1a,
}

#[pymethods]
impl Hasher {
    #[new]
    fn new() -> Self {
        Hasher::default()
    }

    /// Feeds `data` (bytes), with the GIL released if it is at least
    /// 64 KiB. Ctrl-C is checked about every `check_every` seconds and
    /// raises `KeyboardInterrupt` (or what your SIGINT handler raises);
    /// `progress(bytes_done)`, if given, is called after every MiB. Either
    /// way out leaves the hash as it was before the call.
    #[pyo3(signature = (data, *, progress = None, check_every = 0.1))]
    fn update(
        &mut self,
        py: Python<'_>,
        data: &[u8],
        progress: Option<Py<PyAny>>,
        check_every: f64,
    ) -> PyResult<()> {
        let interval = Duration::try_from_secs_f64(check_every).map_err(|_| {
            PyValueError::new_err(format!(
                "check_every must be a finite number >= 0, got {check_every}"
            ))
        })?;
        let gil = Detach::release_if(py, data.len() >= RELEASE_FROM);
        let mut signals = SignalCheck::every(interval);
        // `?` inside turns an `Interrupted` into the `PyErr` that carries
        // the exception the signal handler raised.
        self.inner
            .update(gil, data, &mut signals, |done| match &progress {
                Some(p) => Python::attach(|py| p.call1(py, (done,)).map(drop)),
                None => Ok(()),
            })
    }

    /// The hash of everything fed so far.
    fn digest(&self) -> u64 {
        self.inner.digest()
    }
}

/// The release statistics of every call site that ran a block:
/// `(file, line, blocks, not_released, short)` tuples (nuwa-ffi's `stats`).
#[pyfunction]
pub(crate) fn nogil_stats() -> Vec<(String, u32, u64, u64, u64)> {
    nuwa_ffi::stats::sites()
        .into_iter()
        .map(|s| {
            let st = s.stats;
            (
                s.file.to_owned(),
                s.line,
                st.blocks,
                st.not_released,
                st.short,
            )
        })
        .collect()
}

/// Sets every release statistic back to zero.
#[pyfunction]
pub(crate) fn reset_nogil_stats() {
    nuwa_ffi::stats::reset();
}

/// Test hook, not public API: a progress callback, written in Rust so that
/// no Python code runs when it is called, that asks for a SIGINT at its
/// `at`-th call (`_thread.interrupt_main()`, the handler left to run later).
/// A Python function would have its handler run at once, in the callback;
/// this way only the next signal check can see it, which is what the tests
/// need to see.
#[pyclass(name = "_TestInterruptMain", module = "pyo3_extension", frozen)]
#[derive(Debug)]
pub(crate) struct InterruptMain {
    at: usize,
    calls: AtomicUsize,
}

#[pymethods]
impl InterruptMain {
    #[new]
    fn new(at: usize) -> Self {
        InterruptMain {
            at,
            calls: AtomicUsize::new(0),
        }
    }

    fn __call__(&self, py: Python<'_>, _done: usize) -> PyResult<()> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        if call == self.at {
            py.import("_thread")?.call_method0("interrupt_main")?;
        }
        Ok(())
    }

    /// How many times it was called.
    #[getter]
    fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}
