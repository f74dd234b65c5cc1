//! Free-threaded builds: blocks detach, so stop-the-world collections proceed.

#![allow(unused_imports)]
use std::env;
use std::ffi::{CStr, CString, c_char, c_int, c_longlong, c_void};
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI64, Ordering::SeqCst};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
use nuwa_ffi::__private::{Details, HeldCheck};
use nuwa_ffi::nuwa_core::__private::released;
use nuwa_ffi::{CPython, GilHeld, GilOps};

use crate::harness::*;

// --- 9 ----------------------------------------------------------------

/// One spinning thread's account.
#[derive(Debug)]
pub(crate) struct Spin {
    pub(crate) released: bool,
    pub(crate) iterations: u64,
    pub(crate) checksum: u64,
    /// The gc loop finished while this thread still spun.
    pub(crate) saw_gc_done: bool,
    pub(crate) gc_count_at_end: i64,
}

/// Sum of `i * i` for `i` in `0..n`, modulo 2^64, the closed form.
pub(crate) fn expected_checksum(n: u64) -> u64 {
    let n = u128::from(n);
    if n == 0 {
        0
    } else {
        ((n - 1) * n * (2 * n - 1) / 6) as u64
    }
}

/// Computes a checksum in chunks until the gc loop is done or `deadline`.
pub(crate) fn spin_until_gc_done(released: bool, deadline: Instant) -> Spin {
    FLAGS[ENTERED].fetch_add(1, SeqCst);
    let (mut i, mut sum) = (0u64, 0u64);
    loop {
        for _ in 0..(1 << 16) {
            let x = black_box(i);
            sum = sum.wrapping_add(x.wrapping_mul(x));
            i += 1;
        }
        let saw_gc_done = FLAGS[GC_DONE].load(SeqCst) == 1;
        if saw_gc_done || Instant::now() >= deadline {
            return Spin {
                released,
                iterations: i,
                checksum: sum,
                saw_gc_done,
                gc_count_at_end: FLAGS[GC_COUNT].load(SeqCst),
            };
        }
    }
}

pub(crate) const GC_ROUNDS: i64 = 20;

/// Four Rust threads attach with `PyGILState_Ensure` and spin, inside a
/// block (`release`) or not, while a Python thread runs `gc.collect()`
/// `GC_ROUNDS` times.
pub(crate) fn stw_round(
    py: &'static Py,
    release: bool,
    bound: Duration,
) -> Result<Vec<Spin>, String> {
    for f in [ENTERED, GC_DONE, GC_COUNT] {
        FLAGS[f].store(0, SeqCst);
    }
    py.run(&format!(
        "nuwa_stw = nuwa_thread(nuwa_gc_loop, {GC_ROUNDS})"
    ))?;
    let spinners: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                let state = py.gilstate_ensure();
                let deadline = Instant::now() + bound;
                let spin = if release {
                    // SAFETY: dropped at the end of this block, on this
                    // thread, before PyGILState_Release.
                    let guard = unsafe { nuwa_ffi::nuwa_core::__private::release(CPython) };
                    spin_until_gc_done(released(&guard), deadline)
                } else {
                    spin_until_gc_done(false, deadline)
                };
                py.gilstate_release(state);
                spin
            })
        })
        .collect();
    // The main thread detaches too while it waits.
    let joined: Vec<_> = nuwa_ffi::nogil! {
        spinners.into_iter().map(|h| h.join()).collect()
    };
    py.run("nuwa_join(nuwa_stw)")?;
    check_python_errors()?;
    let gc_count = FLAGS[GC_COUNT].load(SeqCst);
    ensure!(
        gc_count == GC_ROUNDS,
        "the gc loop ran {gc_count} of {GC_ROUNDS} collections"
    );
    joined
        .into_iter()
        .map(|r| r.map_err(|_| "a spinning thread panicked".to_string()))
        .collect()
}

pub(crate) fn stop_the_world(target: &Target) -> Outcome {
    if !target.free_threaded {
        return Ok(Pass::Skipped(
            "not applicable: a GIL build (no stop-the-world)".into(),
        ));
    }
    let py = start(target)?;
    py.run(&format!(
        r#"
def nuwa_gc_loop(n):
    nuwa_wait({ENTERED}, 4)
    for i in range(n):
        gc.collect()
        _nuwa_set({GC_COUNT}, i + 1)
    _nuwa_set({GC_DONE}, 1)
"#
    ))?;
    let started = Instant::now();
    let real = stw_round(py, true, Duration::from_secs(5))?;
    let real_time = started.elapsed();
    for s in &real {
        ensure!(
            s.checksum == expected_checksum(s.iterations),
            "checksum over {} iterations is {}, expected {}",
            s.iterations,
            s.checksum,
            expected_checksum(s.iterations)
        );
        ensure!(
            s.saw_gc_done,
            "the gc loop did not complete its {GC_ROUNDS} collections within 5 s while \
             the blocks ran (it reached {}): a block did not detach",
            s.gc_count_at_end
        );
        ensure!(s.released, "a block on an attached thread released nothing");
    }
    // The control: the same threads spin without releasing; the gc loop
    // must not get through while they spin.
    let control = stw_round(py, false, Duration::from_secs(1))?;
    let through: Vec<_> = control.iter().filter(|s| s.saw_gc_done).collect();
    ensure!(
        through.is_empty(),
        "control: the gc loop completed while attached threads spun without releasing \
         ({through:?}), so the real run proves nothing"
    );
    for s in &control {
        ensure!(
            s.checksum == expected_checksum(s.iterations),
            "control checksum wrong: {s:?}"
        );
    }
    let at_end = control.iter().map(|s| s.gc_count_at_end).max().unwrap_or(0);
    py.finalize()?;
    Ok(Pass::Ok(format!(
        "{GC_ROUNDS} collections during 4 blocks in {:.2} s; control: gc blocked \
         ({at_end} collections) for 1 s by 4 attached spinners",
        real_time.as_secs_f64()
    )))
}
