//! `cycles LIBPYTHON MODE N`: embeds the CPython of LIBPYTHON, then runs N
//! empty release/reacquire cycles on the main thread and exits. For
//! counting instructions per cycle with callgrind, whose totals are
//! deterministic: run N = 100000 and N = 200000 and divide the difference
//! of the two totals by 100000 (start-up and shutdown cancel out).
//!
//! MODE: `raw` (`PyEval_SaveThread` / `PyEval_RestoreThread` through
//! function pointers, what an extension's calls into libpython cost) or
//! `nogil` (`nuwa_ffi::nogil! {}`) or `token` (`nogil!(&mut gil => {})` on a
//! `GilHeld` token). PYTHONHOME must name the interpreter's
//! prefix. See `nuwa-ffi/README.md` (Measuring).
//!
//! `cycles - absent N`: no Python at all: N blocks that find none (what a
//! block costs a program that never loads libpython).
//!
//! `first`: as `nogil`, without calling `nuwa_ffi::init()` first, so the
//! first block looks CPython up; N = 0 looks nothing up. The first use
//! costs I(first, 1) - I(first, 0) less one block (`nogil`'s count).

use std::ffi::{c_int, c_void};
use std::hint::black_box;
use std::process::ExitCode;

type InitFn = unsafe extern "C" fn(c_int);
type SaveFn = unsafe extern "C" fn() -> *mut c_void;
type RestoreFn = unsafe extern "C" fn(*mut c_void);

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
    let [lib, mode, n] = args.as_slice() else {
        eprintln!("usage: cycles LIBPYTHON raw|nogil|token|first N, or cycles - absent N");
        return ExitCode::from(2);
    };
    let Ok(n) = n.parse::<u64>() else {
        eprintln!("N is not a number: {n}");
        return ExitCode::from(2);
    };
    if lib == "-" && mode == "absent" {
        assert!(!nuwa_ffi::init().python_found(), "{}", nuwa_ffi::init());
        for i in 0..n {
            nuwa_ffi::nogil! { black_box(i); }
        }
        return ExitCode::SUCCESS;
    }
    // SAFETY: libpython's initialisers only set up its own static data; the
    // library stays loaded (leaked) and the signatures are CPython's.
    let (init, save, restore) = unsafe {
        let lib = open_libpython(lib);
        (
            *lib.get::<InitFn>(b"Py_InitializeEx")
                .expect("Py_InitializeEx"),
            *lib.get::<SaveFn>(b"PyEval_SaveThread")
                .expect("PyEval_SaveThread"),
            *lib.get::<RestoreFn>(b"PyEval_RestoreThread")
                .expect("PyEval_RestoreThread"),
        )
    };
    // SAFETY: once, on the main thread, before any other call.
    unsafe { init(0) };
    if mode == "first" {
        for i in 0..n {
            nuwa_ffi::nogil! { black_box(i); }
        }
        return ExitCode::SUCCESS;
    }
    assert!(nuwa_ffi::init().can_release(), "{}", nuwa_ffi::init());
    match mode.as_str() {
        "raw" => {
            for i in 0..n {
                // SAFETY: this thread holds the GIL, and takes it back with
                // the state it saved.
                unsafe {
                    let state = save();
                    black_box(i);
                    restore(state);
                }
            }
        }
        "nogil" => {
            for i in 0..n {
                nuwa_ffi::nogil! { black_box(i); }
            }
        }
        "token" => {
            // SAFETY: this thread holds the GIL (initialised above), and the
            // blocks below are not nested in another block.
            let mut gil = unsafe { nuwa_ffi::GilHeld::new() };
            for i in 0..n {
                nuwa_ffi::nogil!(&mut gil => { black_box(i); });
            }
        }
        other => {
            eprintln!("unknown mode {other}");
            return ExitCode::from(2);
        }
    }
    assert!(nuwa_ffi::gil_is_held());
    ExitCode::SUCCESS
}
