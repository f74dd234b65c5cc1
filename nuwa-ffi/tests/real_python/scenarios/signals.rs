//! Inside a block: taking the GIL back (`with_gil!`, `Released::with_gil`)
//! and signal checks (`SignalCheck`), against a real interpreter.

use std::ffi::{c_int, c_void};
use std::sync::atomic::Ordering::SeqCst;
use std::thread;
use std::time::{Duration, Instant};

use nuwa_ffi::{Interrupted, SignalCheck};

use crate::harness::*;

type StateFn = unsafe extern "C" fn() -> *mut c_void;
type SwapFn = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
type EndFn = unsafe extern "C" fn(*mut c_void);
type OccurredFn = unsafe extern "C" fn() -> *mut c_void;
type MatchesFn = unsafe extern "C" fn(*mut c_void) -> c_int;
type ClearFn = unsafe extern "C" fn();

/// One step of work in the blocks below.
const STEP: Duration = Duration::from_micros(100);

/// The exception set on this thread, checked and cleared.
struct Exceptions {
    occurred: OccurredFn,
    matches: MatchesFn,
    clear: ClearFn,
    keyboard_interrupt: *mut c_void,
}

impl Exceptions {
    fn new() -> Result<Exceptions, String> {
        // SAFETY: the C signatures of these CPython 3.8+ functions;
        // `PyExc_KeyboardInterrupt` is a `PyObject *` variable, read once the
        // interpreter is initialised.
        unsafe {
            Ok(Exceptions {
                occurred: api::<OccurredFn>("PyErr_Occurred")?,
                matches: api::<MatchesFn>("PyErr_ExceptionMatches")?,
                clear: api::<ClearFn>("PyErr_Clear")?,
                keyboard_interrupt: *api::<*mut *mut c_void>("PyExc_KeyboardInterrupt")?,
            })
        }
    }

    /// Whether `KeyboardInterrupt` is set; clears whatever is set.
    fn take_keyboard_interrupt(&self) -> Result<bool, String> {
        // SAFETY: this thread holds the GIL (checked by the callers first).
        unsafe {
            if (self.occurred)().is_null() {
                return Ok(false);
            }
            let is_it = (self.matches)(self.keyboard_interrupt) != 0;
            (self.clear)();
            Ok(is_it)
        }
    }
}

/// Sends SIGINT to the process from a Rust thread (without a Python thread
/// state) once `FLAGS[IN_BLOCK]` is set; returns whether it sent it.
fn sigint_when_in_block() -> thread::JoinHandle<bool> {
    thread::spawn(|| {
        if !wait_flag(IN_BLOCK, 1, Instant::now() + WAIT) {
            return false;
        }
        // SAFETY: kill(2) on this process; Python's handler for SIGINT
        // (installed below) only records the signal.
        unsafe { libc::kill(libc::getpid(), libc::SIGINT) == 0 }
    })
}

/// Works in steps until a check returns `Interrupted` or `WAIT` passes;
/// counts the steps in `FLAGS[CALLS]`.
fn work(check: &mut dyn FnMut() -> Result<(), Interrupted>) -> Result<(), Interrupted> {
    let deadline = Instant::now() + WAIT;
    FLAGS[IN_BLOCK].store(1, SeqCst);
    while Instant::now() < deadline {
        thread::sleep(STEP);
        FLAGS[CALLS].fetch_add(1, SeqCst);
        check()?;
    }
    Ok(())
}

/// SIGINT during a long block on the main thread stops the block at its next
/// due check, in place and in the strict form: the check returns
/// `Interrupted` with `KeyboardInterrupt` set, long before the block's
/// bounded work ends. In a nested block a due check does nothing, and the
/// signal stays pending for the outer one.
pub(crate) fn signal_check_stops_a_block(target: &Target) -> Outcome {
    let py = start(target)?;
    // `Py_InitializeEx(0)` installs no signal handlers; install Python's.
    py.run("import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)")?;
    let exceptions = Exceptions::new()?;
    let mut notes = Vec::new();
    for form in ["in place", "strict"] {
        FLAGS[IN_BLOCK].store(0, SeqCst);
        FLAGS[CALLS].store(0, SeqCst);
        let sender = sigint_when_in_block();
        let started = Instant::now();
        let outcome = if form == "in place" {
            nuwa_ffi::nogil! {
                let mut signals = SignalCheck::every(Duration::from_millis(10));
                work(&mut || signals.check(&mut released!()))
            }
        } else {
            nuwa_ffi::nogil(|gil| {
                let mut signals = SignalCheck::every(Duration::from_millis(10));
                work(&mut || signals.check(gil))
            })
        };
        let took = started.elapsed();
        let sent = sender
            .join()
            .map_err(|_| "the signal thread panicked".to_string())?;
        ensure!(sent, "{form}: the block never started, or kill() failed");
        ensure!(
            py.gil_check() == 1,
            "{form}: the GIL is not held after the block"
        );
        let steps = FLAGS[CALLS].load(SeqCst);
        ensure!(
            outcome.is_err(),
            "{form}: no check returned Interrupted in {took:?} ({steps} steps of {STEP:?})"
        );
        ensure!(
            exceptions.take_keyboard_interrupt()?,
            "{form}: Interrupted, but KeyboardInterrupt is not the exception set"
        );
        notes.push(format!("{form}: stopped after {steps} steps"));
    }

    // Nested: the inner block cannot take the GIL back, so its due checks
    // do nothing and leave the signal pending; the outer block's check
    // runs the handler.
    let (raised, inner, outer) = nuwa_ffi::nogil! {
        // SAFETY: raise(3) signals this thread, whose (Python) handler has
        // run when it returns; the handler only records the signal.
        let raised = unsafe { libc::raise(libc::SIGINT) } == 0;
        let mut signals = SignalCheck::every(Duration::ZERO);
        let inner = nuwa_ffi::nogil! {
            (0..100).try_for_each(|_| signals.check(&mut released!()))
        };
        (raised, inner, signals.check(&mut released!()))
    };
    ensure!(raised, "raise(SIGINT) failed");
    ensure!(
        inner.is_ok(),
        "nested: the inner block's checks gave {inner:?}, with a signal pending"
    );
    ensure!(
        outer.is_err() && exceptions.take_keyboard_interrupt()?,
        "nested: the outer block's check gave {outer:?}, without KeyboardInterrupt"
    );
    py.run("nuwa_after = sum(range(10))")?;
    py.finalize()?;
    Ok(Pass::Ok(notes.join("; ")))
}

/// Whether the GIL is held, and `code` run if it is (in a subinterpreter
/// `PyGILState_Check` says 1 whatever the state, so `Py::run` cannot tell).
fn run_if_held(py: &Py, code: &str) -> (bool, Result<(), String>) {
    let held = nuwa_ffi::gil_is_held();
    let ran = if held {
        py.run(code)
    } else {
        Err("not run".to_string())
    };
    (held, ran)
}

/// Taking the GIL back inside a block restores the state the block saved:
/// Python code run in the part sees the interpreter the block was in (a
/// subinterpreter made with `Py_NewInterpreter`, where `PyGILState_Ensure`
/// would attach the main interpreter), with the GIL held, and the block
/// releases it again after the part, in both forms.
pub(crate) fn with_gil_restores_the_saved_state(target: &Target) -> Outcome {
    let py = start(target)?;
    // SAFETY: the C signatures of these CPython 3.8+ functions.
    let (get, new_interpreter, end_interpreter, swap) = unsafe {
        (
            api::<StateFn>("PyThreadState_Get")?,
            api::<StateFn>("Py_NewInterpreter")?,
            api::<EndFn>("Py_EndInterpreter")?,
            api::<SwapFn>("PyThreadState_Swap")?,
        )
    };
    py.run("nuwa_where = 'main'")?;
    // SAFETY: this thread holds the GIL.
    let main_state = unsafe { get() };
    // SAFETY: this thread holds the GIL of an initialised interpreter; the
    // new subinterpreter's state becomes current.
    let sub = unsafe { new_interpreter() };
    ensure!(!sub.is_null(), "Py_NewInterpreter() failed");
    py.run("nuwa_where = 'sub'\nnuwa_parts = 0")?;
    let code = "assert nuwa_where == 'sub', nuwa_where\nnuwa_parts += 1";
    // Called from Python code in the subinterpreter, as an extension
    // function is: on 3.8-3.11 the held check cannot tell that this thread
    // holds the GIL there, so the blocks release nothing and the parts are
    // refused (a part runs only where its block released).
    let releases = (target.version.0, target.version.1) >= (3, 12);
    let (in_place, strict) = call_from_python(py, || {
        let in_place = nuwa_ffi::nogil! {
            let released = !nuwa_ffi::gil_is_held();
            let part = with_gil! { run_if_held(py, code) };
            (released, part, !nuwa_ffi::gil_is_held())
        };
        let strict = nuwa_ffi::nogil(|gil| {
            let released = !nuwa_ffi::gil_is_held();
            let part = gil.with_gil(|| run_if_held(py, code));
            (released, part, !nuwa_ffi::gil_is_held())
        });
        (in_place, strict)
    })?;
    for (form, (released, part, released_again)) in [("in place", in_place), ("strict", strict)] {
        if !releases {
            // (`released` is only "not held" here, true either way.)
            ensure!(part.is_err(), "{form}: 3.8-3.11: the part ran");
            continue;
        }
        ensure!(released, "{form}: the block did not release the GIL");
        let (held, ran) = part.map_err(|e| format!("{form}: with_gil: {e}"))?;
        ensure!(held, "{form}: the part ran without the GIL");
        ran.map_err(|e| format!("{form}: in the part: {e}"))?;
        ensure!(released_again, "{form}: not released again after the part");
    }
    if !releases {
        py.run("nuwa_parts = 2")?;
    }
    py.run("assert nuwa_parts == 2, nuwa_parts")?;
    // SAFETY: the subinterpreter's state is current and holds the GIL; then
    // the main interpreter's state is made current again.
    unsafe {
        end_interpreter(sub);
        swap(main_state);
    }
    py.run("assert nuwa_where == 'main', nuwa_where")?;
    py.finalize()?;
    passed()
}
