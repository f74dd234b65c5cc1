//! A panic in a block: the GIL is held again after it.

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
use nuwa_ffi::{CPython, GilHeld, GilOps};

use crate::harness::*;

// --- 5 ----------------------------------------------------------------

pub(crate) fn panic_in_block(target: &Target) -> Outcome {
    let py = start(target)?;
    let previous = panic::take_hook();
    panic::set_hook(Box::new(|info| eprintln!("(expected) {info}")));

    FLAGS[GIL_CHECK_IN_BLOCK].store(-1, SeqCst);
    let caught = panic::catch_unwind(AssertUnwindSafe(|| {
        nuwa_ffi::nogil! {
            FLAGS[GIL_CHECK_IN_BLOCK].store(i64::from(py.gil_check()), SeqCst);
            panic!("boom inside the block")
        }
    }));
    ensure!(caught.is_err(), "the panic was not caught");
    let inside = FLAGS[GIL_CHECK_IN_BLOCK].load(SeqCst);
    ensure!(
        inside == 0,
        "PyGILState_Check() was {inside} inside the block"
    );
    ensure!(
        py.gil_check() == 1,
        "the GIL is not held after a panic left the block"
    );
    py.run("nuwa_x = [i * i for i in range(100)]")?;

    FLAGS[GIL_CHECK_IN_BLOCK].store(-1, SeqCst);
    let result = nuwa_ffi::Panicked::catch(|| {
        nuwa_ffi::nogil(|_| -> u32 {
            FLAGS[GIL_CHECK_IN_BLOCK].store(i64::from(py.gil_check()), SeqCst);
            panic!("caught {} with the GIL released", 42)
        })
    });
    panic::set_hook(previous);
    match result {
        Ok(v) => return Err(format!("Panicked::catch returned Ok({v}) after a panic")),
        Err(panicked) => ensure!(
            panicked.message() == Some("caught 42 with the GIL released"),
            "Panicked::catch's message: {:?}",
            panicked.message()
        ),
    }
    let inside = FLAGS[GIL_CHECK_IN_BLOCK].load(SeqCst);
    ensure!(
        inside == 0,
        "PyGILState_Check() was {inside} inside Panicked::catch"
    );
    ensure!(
        py.gil_check() == 1,
        "the GIL is not held after Panicked::catch returned Err"
    );
    py.run("nuwa_x = sum(nuwa_x)")?;
    let ok = nuwa_ffi::Panicked::catch(|| nuwa_ffi::nogil(|_| 6 * 7));
    ensure!(
        matches!(ok, Ok(42)),
        "Panicked::catch(|| nogil(|_| 6 * 7)) = {ok:?}"
    );
    prove_release(py, &CPython, "after the panics")?;
    py.finalize()?;
    passed()
}
