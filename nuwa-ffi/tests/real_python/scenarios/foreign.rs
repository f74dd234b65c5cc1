//! Threads that do not hold the GIL release nothing, and neither do blocks
//! before `Py_InitializeEx` or after `Py_FinalizeEx`.

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
use nuwa_ffi::nuwa_core::__private::{release, released};
use nuwa_ffi::{CPython, GilHeld, GilOps};

use crate::harness::*;

// --- 4 ----------------------------------------------------------------

/// What a thread that Python does not know sees: never a release.
pub(crate) fn foreign_blocks(py: &Py, i: u32) -> Result<(), String> {
    ensure!(
        py.gil_check() == 0,
        "PyGILState_Check() is not 0 on a thread without a Python thread state"
    );
    ensure!(
        !nuwa_ffi::gil_is_held(),
        "gil_is_held() is true on a thread without a Python thread state"
    );
    // SAFETY: dropped at the end of the statement, on this thread.
    let released = released(&unsafe { release(CPython) });
    ensure!(
        !released,
        "a thread without a Python thread state released the GIL (another thread's)"
    );
    let value = nuwa_ffi::nogil! { i.wrapping_mul(3) };
    ensure!(value == i.wrapping_mul(3), "nogil! evaluated to {value}");
    let caught = nuwa_ffi::Panicked::catch(|| nuwa_ffi::nogil(|_| i + 1));
    ensure!(
        matches!(caught, Ok(v) if v == i + 1),
        "Panicked::catch returned {caught:?}"
    );
    Ok(())
}

pub(crate) fn foreign_rounds(py: &'static Py, rounds: u32) -> Result<(), String> {
    for i in 0..rounds {
        let result = thread::spawn(move || foreign_blocks(py, i))
            .join()
            .map_err(|_| format!("foreign thread {i} panicked"))?;
        result.map_err(|e| format!("foreign thread {i}: {e}"))?;
    }
    Ok(())
}

pub(crate) fn foreign_thread(target: &Target) -> Outcome {
    let py = start(target)?;
    py.run("nuwa_count = 0")?;
    for i in 0..1000 {
        let result = thread::spawn(move || foreign_blocks(py, i))
            .join()
            .map_err(|_| format!("foreign thread {i} panicked"))?;
        result.map_err(|e| format!("foreign thread {i} (GIL held by the main thread): {e}"))?;
        ensure!(
            py.gil_check() == 1,
            "after foreign thread {i}, the main thread no longer holds the GIL"
        );
        py.run("nuwa_count += 1")?;
    }
    py.run("assert nuwa_count == 1000, nuwa_count")?;
    prove_release(py, &CPython, "after the foreign threads")?;
    py.finalize()?;
    passed()
}

pub(crate) fn foreign_thread_while_released(target: &Target) -> Outcome {
    let py = start(target)?;
    // The main thread has released; no other Python thread holds the GIL.
    let quiet = nuwa_ffi::nogil! { foreign_rounds(py, 300) };
    quiet.map_err(|e| format!("GIL released by the main thread, held by nobody: {e}"))?;
    ensure!(py.gil_check() == 1, "GIL not held after the first block");

    // The main thread has released; a Python thread holds the GIL and
    // runs bytecode (on 3.11 and older, the current thread state is its).
    py.run(&format!(
        r#"
def nuwa_busy():
    n = 0
    while _nuwa_get({STOP}) == 0:
        n += 1
        if n % 64 == 0:
            _nuwa_set({PROGRESS}, n)
nuwa_busy_thread = nuwa_thread(nuwa_busy)
"#
    ))?;
    let deadline = Instant::now() + WAIT;
    let busy = nuwa_ffi::nogil! {
        if wait_flag(PROGRESS, 1, deadline) {
            let before = FLAGS[PROGRESS].load(SeqCst);
            // Halfway, wait (bounded) until the busy thread has counted on:
            // it runs during the rounds however the OS schedules it.
            let result = foreign_rounds(py, 500).and_then(|()| {
                ensure!(
                    wait_flag(PROGRESS, before + 1, Instant::now() + WAIT),
                    "the busy Python thread made no progress within {WAIT:?} while the \
                     foreign threads ran"
                );
                foreign_rounds(py, 500)
            });
            result.map(|()| FLAGS[PROGRESS].load(SeqCst) - before)
        } else {
            Err("the busy Python thread did not run while the main thread was in a block".into())
        }
    };
    FLAGS[STOP].store(1, SeqCst);
    let progress = busy.map_err(|e| format!("GIL held by a busy Python thread: {e}"))?;
    ensure!(
        progress > 0,
        "the busy Python thread made no progress while the foreign threads ran"
    );
    py.run("nuwa_join(nuwa_busy_thread)")?;
    check_python_errors()?;
    prove_release(py, &CPython, "after the foreign threads")?;
    py.finalize()?;
    Ok(Pass::Ok(format!(
        "the busy Python thread ran {progress} iterations during 1000 foreign blocks"
    )))
}

// --- 6 ----------------------------------------------------------------

/// Blocks in a process without an initialised interpreter: nothing is
/// released, and the body runs.
pub(crate) fn check_nothing_released(py: &'static Py, when: &str) -> Result<(), String> {
    ensure!(!py.is_initialized(), "{when}: Py_IsInitialized() is true");
    // SAFETY: dropped at the end of the statement, on this thread.
    let released = released(&unsafe { release(CPython) });
    ensure!(!released, "{when}: a block released the GIL");
    let value = nuwa_ffi::nogil! { 2 + 2 };
    ensure!(value == 4, "{when}: nogil! evaluated to {value}");
    let caught = nuwa_ffi::Panicked::catch(|| nuwa_ffi::nogil(|_| 5));
    ensure!(
        matches!(caught, Ok(5)),
        "{when}: Panicked::catch: {caught:?}"
    );
    let other = thread::spawn(|| {
        // SAFETY: dropped at the end of the statement, on this thread.
        nuwa_ffi::nuwa_core::__private::released(&unsafe { release(CPython) })
    })
    .join()
    .map_err(|_| format!("{when}: a block on another thread panicked"))?;
    ensure!(!other, "{when}: a block on another thread released the GIL");
    Ok(())
}

pub(crate) fn before_init(target: &Target) -> Outcome {
    let py = load(target)?;
    // nuwa-ffi resolves now, before Py_InitializeEx.
    let found = nuwa_ffi::init();
    ensure!(
        found.can_release(),
        "nuwa_ffi::init() before Py_InitializeEx: {found}"
    );
    check_nothing_released(py, "before Py_InitializeEx")?;
    py.initialize()?;
    check_resolution(target)?;
    prove_release(py, &CPython, "after Py_InitializeEx")?;
    py.finalize()?;
    check_nothing_released(py, "after Py_FinalizeEx")?;
    passed()
}

pub(crate) fn after_finalize(target: &Target) -> Outcome {
    let py = start(target)?;
    prove_release(py, &CPython, "before Py_FinalizeEx")?;
    py.finalize()?;
    check_nothing_released(py, "after Py_FinalizeEx")?;
    passed()
}

/// Threads that have a Python state but are in a block (so hold nothing)
/// run nested blocks while Python threads start and end all the time: on
/// 3.8-3.11 each nested check compares the current state (a churning
/// thread's) by `thread_id`; none may release.
pub(crate) fn nested_blocks_while_threads_churn(target: &Target) -> Outcome {
    const CHURNED: usize = 18;
    /// Python threads that must start and end while the nested blocks run.
    const CHURN: i64 = 50;
    /// The bound on that: a progress requirement, not a release proof, so
    /// far from what it needs (under a second unloaded; a loaded 2-core
    /// machine started 66 in 10 s on 3.13t), and under the runner's
    /// CHILD_TIMEOUT so that its expiry is this scenario's failure message.
    const CHURN_WAIT: Duration = Duration::from_secs(40);
    let py = start(target)?;
    FLAGS[STOP].store(0, SeqCst);
    py.run(&format!(
        r#"
def nuwa_churn():
    while _nuwa_get({STOP}) == 0:
        t = threading.Thread(target=lambda: sum(range(50)))
        t.start()
        t.join()
        _nuwa_add({CHURNED}, 1)
nuwa_churner = nuwa_thread(nuwa_churn)
"#
    ))?;
    let deadline = Instant::now() + CHURN_WAIT;
    let outcome: Result<Vec<(u32, u32, u32)>, String> = nuwa_ffi::nogil! {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                thread::spawn(move || {
                    let state = py.gilstate_ensure();
                    let counts = {
                        // SAFETY: dropped at the end of this block, on this
                        // thread, before PyGILState_Release.
                        let outer = unsafe { release(CPython) };
                        let mut counts = (0, 0, 0);
                        while FLAGS[CHURNED].load(SeqCst) < CHURN && Instant::now() < deadline {
                            // SAFETY: as above.
                            let inner = unsafe { release(CPython) };
                            counts.0 += u32::from(released(&inner));
                            drop(inner);
                            counts.1 += u32::from(nuwa_ffi::gil_is_held());
                            counts.2 += 1;
                        }
                        if !released(&outer) {
                            counts.0 += 1_000_000;
                        }
                        counts
                    };
                    py.gilstate_release(state);
                    counts
                })
            })
            .collect();
        let results = workers
            .into_iter()
            .map(|w| w.join().map_err(|_| "a worker panicked".to_string()))
            .collect();
        FLAGS[STOP].store(1, SeqCst);
        results
    };
    py.run("nuwa_join(nuwa_churner)")?;
    check_python_errors()?;
    let counts = outcome?;
    let churned = FLAGS[CHURNED].load(SeqCst);
    for (released, held, rounds) in &counts {
        ensure!(
            *released == 0 && *held == 0,
            "nested blocks on attached threads: {released} released (1,000,000: the outer \
             block released nothing), gil_is_held() true {held} times, of {rounds}"
        );
    }
    ensure!(
        churned >= CHURN,
        "only {churned} of {CHURN} Python threads started and ended within {CHURN_WAIT:?}"
    );
    py.finalize()?;
    let rounds: Vec<u32> = counts.iter().map(|c| c.2).collect();
    Ok(Pass::Ok(format!(
        "{rounds:?} nested blocks released nothing while {churned} Python threads came and went"
    )))
}
