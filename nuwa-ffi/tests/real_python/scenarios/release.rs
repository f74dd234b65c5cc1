//! Blocks release the GIL: on the main thread, from Python threads, on an
//! attached Rust thread, nested, and through the `GilHeld` token.

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

/// A block on the main thread releases the GIL: a Python thread runs
/// `gc.collect()` and sets a flag while the block waits for that flag.
pub(crate) fn release_proven(target: &Target) -> Outcome {
    let py = start(target)?;
    let found = check_resolution(target)?;
    ensure!(
        py.gil_check() == 1,
        "after Py_InitializeEx the main thread does not hold the GIL"
    );
    prove_release(py, &CPython, "nogil!")?;
    // SAFETY: dropped at the end of the statement, on this thread.
    let released = released(&unsafe { release(CPython) });
    ensure!(released, "released(release(CPython)) is false");
    ensure!(py.gil_check() == 1, "the GIL is not held after the guard");
    py.run("nuwa_x = sum(i * i for i in range(1000))")?;
    py.finalize()?;
    Ok(Pass::Ok(found))
}

// --- 2 ----------------------------------------------------------------

pub(crate) static BARRIER_DEADLINE: OnceLock<Instant> = OnceLock::new();

/// Called by four Python threads at once: meets the others inside the
/// block, which is possible only if all four released the GIL.
///
/// Returns 1 if so; 2 if the four never were in their blocks together;
/// 3 if `gc.collect()` on a fifth thread could not run meanwhile; 4 if
/// `PyGILState_Check()` was not 0 inside the block.
pub(crate) extern "C" fn rp_barrier_block() -> c_longlong {
    let Some(py) = PY.get() else {
        return -1;
    };
    // One deadline for all four: a failure costs WAIT, not 4 * WAIT.
    let deadline = *BARRIER_DEADLINE.get_or_init(|| Instant::now() + WAIT);
    nuwa_ffi::nogil! {
        let inside = py.gil_check();
        FLAGS[ARRIVED].fetch_add(1, SeqCst);
        if !wait_flag(ARRIVED, 4, deadline) {
            2
        } else if !wait_flag(COLLECTED, 1, deadline) {
            3
        } else if inside != 0 {
            4
        } else {
            1
        }
    }
}

pub(crate) fn python_threads_call_in(target: &Target) -> Outcome {
    let py = start(target)?;
    py.run(&format!(
        r#"
nuwa_f = nuwa_fn({addr}, ctypes.c_longlong)
nuwa_results = []
def nuwa_call():
    nuwa_results.append(nuwa_f())
def nuwa_collect():
    nuwa_wait({ARRIVED}, 4)
    gc.collect()
    _nuwa_set({COLLECTED}, 1)
nuwa_threads = [nuwa_thread(nuwa_call) for _ in range(4)] + [nuwa_thread(nuwa_collect)]
for nuwa_t in nuwa_threads:
    nuwa_join(nuwa_t)
if sorted(nuwa_results) != [1, 1, 1, 1]:
    raise AssertionError(
        "block results %r (1: all four met inside their blocks; 2: they never did, "
        "the GIL was not released by all four at once; 3: gc.collect() could not run "
        "meanwhile; 4: PyGILState_Check() != 0 inside a block)" % (nuwa_results,))
"#,
        addr = rp_barrier_block as *const () as usize,
    ))?;
    check_python_errors()?;
    ensure!(
        py.gil_check() == 1,
        "the main thread does not hold the GIL after the threads"
    );
    py.finalize()?;
    passed()
}

/// A Rust thread that attached itself with `PyGILState_Ensure` (the way
/// a Rust thread calls into Python) releases in a block, and a block
/// nested in that one releases nothing.
pub(crate) fn ensured_rust_thread(target: &Target) -> Outcome {
    let py = start(target)?;
    let (done, result) = std::sync::mpsc::channel();
    // The main thread releases, so that the Rust thread can take the GIL;
    // it waits for the thread's result, bounded.
    let received = nuwa_ffi::nogil! {
        thread::spawn(move || {
            let state = py.gilstate_ensure();
            let outcome = prove_release(py, &CPython, "on a thread attached with PyGILState_Ensure")
                .and_then(|()| {
                    let inner = nuwa_ffi::nogil! {
                        // SAFETY: dropped at the end of the statement, on this thread.
                        released(&unsafe { release(CPython) })
                    };
                    ensure!(!inner, "a block nested in a block released again");
                    ensure!(py.gil_check() == 1, "GIL not held after the nested blocks");
                    py.run("nuwa_x = 1")
                });
            py.gilstate_release(state);
            let _ = done.send(outcome);
        });
        result.recv_timeout(3 * WAIT)
    };
    received.map_err(|e| {
        format!(
            "no result from the attached Rust thread within {:?} ({e}): it could not take \
             the GIL with PyGILState_Ensure while the main thread was in a block, or it panicked",
            3 * WAIT
        )
    })??;
    ensure!(
        py.gil_check() == 1,
        "the main thread does not hold the GIL after its block"
    );
    py.run("nuwa_x = 2")?;
    py.finalize()?;
    passed()
}

// --- 3 ----------------------------------------------------------------

pub(crate) fn nested(target: &Target) -> Outcome {
    let py = start(target)?;
    {
        ensure!(
            nuwa_ffi::gil_is_held(),
            "gil_is_held() is false on the main thread"
        );
        // SAFETY: dropped at the end of this scope (or on an early
        // return), on this thread.
        let outer = unsafe { release(CPython) };
        ensure!(
            !nuwa_ffi::gil_is_held(),
            "gil_is_held() is true inside a block"
        );
        ensure!(
            released(&outer),
            "the outer block released nothing although the main thread held the GIL"
        );
        ensure!(py.gil_check() == 0, "GIL still held inside the outer block");
        // SAFETY: as above.
        let inner = unsafe { release(CPython) };
        ensure!(
            !released(&inner),
            "the inner block released again, with the GIL already released by the outer one"
        );
        let value = nuwa_ffi::nogil! {
            let inner = nuwa_ffi::nogil! { 40 };
            inner + 2
        };
        ensure!(value == 42, "nested nogil! evaluated to {value}");
        drop(inner);
        ensure!(
            py.gil_check() == 0,
            "ending the inner block took the GIL back while the outer one runs"
        );
    }
    ensure!(
        py.gil_check() == 1,
        "the GIL is not held after the outer block"
    );
    py.run("nuwa_x = [i for i in range(100)]")?;

    let (outer, inner, value) = nuwa_ffi::nogil! {
        let outer = py.gil_check();
        let (inner, value) = nuwa_ffi::nogil! { (py.gil_check(), 7) };
        (outer, inner, value)
    };
    ensure!(
        (outer, inner, value) == (0, 0, 7),
        "PyGILState_Check() in the outer/inner macro blocks: {outer}/{inner}, value {value}"
    );
    ensure!(
        py.gil_check() == 1,
        "the GIL is not held after the nested macros"
    );
    prove_release(py, &CPython, "after nesting")?;
    py.run("nuwa_x = sum(nuwa_x)")?;
    py.finalize()?;
    passed()
}

// --- 8 ----------------------------------------------------------------

pub(crate) fn gil_held_token(target: &Target) -> Outcome {
    let py = start(target)?;
    ensure!(py.gil_check() == 1, "the main thread does not hold the GIL");
    // SAFETY: every block on it below starts on the main thread, which
    // holds the GIL (checked just above, and again by prove_release
    // before it returns), and none is nested in another block except on
    // the token itself (which the token sees) or in the debug-build check
    // below (which panics before anything is released).
    let mut gil = unsafe { GilHeld::new() };
    prove_release(py, &&mut gil, "nogil!(&mut GilHeld => ...)")?;
    // SAFETY: dropped at the end of the statement, on this thread.
    let released = released(&unsafe { release(&mut gil) });
    ensure!(released, "released(release(&mut GilHeld)) is false");
    ensure!(py.gil_check() == 1, "the GIL is not held after the guard");

    // Two nested blocks on one `&mut GilHeld`, shared: the borrow checker
    // cannot see the nesting; the token does, and the inner block releases
    // nothing (a second PyEval_SaveThread without the GIL would abort).
    let token = &mut gil;
    let shared = &token;
    let (outer, inner) = nuwa_ffi::nogil!(shared => {
        let outer = py.gil_check();
        let inner = nuwa_ffi::nogil!(shared => { py.gil_check() });
        (outer, inner)
    });
    ensure!(
        (outer, inner) == (0, 0),
        "PyGILState_Check() in the outer/inner token blocks: {outer}/{inner}, expected 0/0"
    );
    ensure!(
        py.gil_check() == 1,
        "the GIL is not held after the nested token blocks"
    );
    prove_release(py, &&mut gil, "a token block after the nested ones")?;

    // A token block inside a checked block breaks the token's contract; in
    // debug builds the token says so with a panic, before it releases
    // anything, and the checked block still takes the GIL back.
    if cfg!(debug_assertions) {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(|info| eprintln!("(expected) {info}")));
        let caught = panic::catch_unwind(AssertUnwindSafe(|| {
            nuwa_ffi::nogil! {
                nuwa_ffi::nogil!(&mut gil => { 1 })
            }
        }));
        panic::set_hook(previous);
        let message = match caught {
            Ok(_) => {
                return Err("a token block inside a checked block did not panic \
                                 in a debug build"
                    .into());
            }
            Err(payload) => nuwa_ffi::Panicked::from(payload)
                .message()
                .unwrap_or_default()
                .to_owned(),
        };
        ensure!(
            message.contains("GilHeld") && message.contains("does not hold the GIL"),
            "unexpected panic message: {message}"
        );
        ensure!(
            py.gil_check() == 1,
            "the GIL is not held after the checked block that panicked"
        );
    }
    py.run("nuwa_x = 1")?;
    py.finalize()?;
    passed()
}
