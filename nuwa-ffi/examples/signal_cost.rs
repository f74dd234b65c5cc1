//! `signal_cost MODE N [LIBPYTHON]`: runs N calls of `SignalCheck::check`
//! inside one block, for measuring what a check costs.
//!
//! MODE:
//! - `empty`: the same loop without the check (the baseline);
//! - `not_due`: `SignalCheck::new()` (100 ms), in a loop that does nothing
//!   else, so almost no call is due;
//! - `due`: `SignalCheck::every(Duration::ZERO)`: every call is due (two
//!   clock reads, the GIL taken back and released, `PyErr_CheckSignals`).
//!
//! With LIBPYTHON (a shared libpython; PYTHONHOME must name its prefix) the
//! interpreter is embedded first and the block releases its GIL; without it
//! nothing is released and a due check does nothing. Prints the time per call.
//!
//! For instruction counts, run it under callgrind with two values of N and
//! divide the difference of the totals by the difference of the N (start-up
//! and shutdown cancel out); see the README, "Callbacks and Ctrl-C inside a
//! block".

use std::ffi::c_int;
use std::hint::black_box;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nuwa_ffi::SignalCheck;

type InitFn = unsafe extern "C" fn(c_int);

/// Loads libpython for good: on Unix with `RTLD_GLOBAL`, so that nuwa finds
/// it in the global scope, as it finds the interpreter that loaded an
/// extension; elsewhere (Windows) as a loaded module, which nuwa finds by
/// name.
///
/// # Safety
///
/// As for `libloading::Library::new`: the library's initialisers run.
unsafe fn open_libpython(path: &str) -> &'static libloading::Library {
    #[cfg(unix)]
    // SAFETY: the caller's contract.
    let lib = unsafe {
        use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
        Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL).map(libloading::Library::from)
    };
    #[cfg(not(unix))]
    // SAFETY: the caller's contract.
    let lib = unsafe { libloading::Library::new(path) };
    Box::leak(Box::new(lib.expect("load libpython")))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, n, lib) = match args.as_slice() {
        [mode, n] => (mode, n, None),
        [mode, n, lib] => (mode, n, Some(lib)),
        _ => {
            eprintln!("usage: signal_cost empty|not_due|due N [LIBPYTHON]");
            return ExitCode::from(2);
        }
    };
    let Ok(n) = n.parse::<u64>() else {
        eprintln!("N is not a number: {n}");
        return ExitCode::from(2);
    };
    if let Some(lib) = lib {
        // SAFETY: libpython's initialisers only set up its own static data;
        // the library stays loaded (leaked) and the signature is CPython's.
        let init = unsafe {
            let lib = open_libpython(lib);
            *lib.get::<InitFn>(b"Py_InitializeEx")
                .expect("Py_InitializeEx")
        };
        // SAFETY: once, on the main thread, before any other call.
        unsafe { init(0) };
        assert!(nuwa_ffi::init().can_release(), "{}", nuwa_ffi::init());
    }
    let mut signals = match mode.as_str() {
        "empty" | "not_due" => SignalCheck::new(),
        "due" => SignalCheck::every(Duration::ZERO),
        other => {
            eprintln!("unknown mode {other}");
            return ExitCode::from(2);
        }
    };
    let check = mode != "empty";
    let start = Instant::now();
    let (released, interrupted) = nuwa_ffi::nogil! {
        let released = lib.is_some() && !nuwa_ffi::gil_is_held();
        let mut interrupted = 0u64;
        for i in 0..n {
            black_box(i);
            if check && signals.check(&mut released!()).is_err() {
                interrupted += 1;
            }
        }
        (released, interrupted)
    };
    let took = start.elapsed();
    println!(
        "{mode}: {n} calls in {took:?}, {:.2} ns per call; block released the GIL: {released}; \
         interrupted: {interrupted}",
        took.as_nanos() as f64 / n.max(1) as f64
    );
    ExitCode::SUCCESS
}
