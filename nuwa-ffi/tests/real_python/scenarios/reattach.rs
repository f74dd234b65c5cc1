//! A thread state attached inside a block and still attached at its end
//! (`PyGILState_Ensure` without `PyGILState_Release`): a clear error, never
//! a hang.

use std::ffi::c_void;
use std::panic::{self, AssertUnwindSafe};
use std::process::Command;
use std::time::Duration;

use crate::harness::*;

type StateFn = unsafe extern "C" fn() -> *mut c_void;
type RestoreFn = unsafe extern "C" fn(*mut c_void);

const MESSAGE: &str =
    "nuwa: a Python thread state was attached on this thread inside a nogil! block";

/// The message of a caught panic.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// `Panicked::catch` returned nuwa's panic as its error, and the GIL is held.
fn check_caught(py: &Py, second: Result<(), nuwa_ffi::Panicked>) -> Result<(), String> {
    let second = match second {
        Ok(()) => "Panicked::catch returned Ok".to_string(),
        Err(panicked) => panicked.message().unwrap_or_default().to_string(),
    };
    ensure!(second.starts_with(MESSAGE), "Panicked::catch: {second:?}");
    ensure!(
        py.gil_check() == 1,
        "the GIL is not held after Panicked::catch"
    );
    Ok(())
}

/// Undoes the two leaked `PyGILState_Ensure`s the way the block would have
/// (release, which detaches, then take the thread's state back), checks
/// that blocks release again, and ends the interpreter.
fn undo_leaked_ensures(py: &Py, ensured: Option<std::ffi::c_int>) -> Outcome {
    // SAFETY: the C signatures of these CPython 3.8+ functions.
    let (this_thread, restore) = unsafe {
        (
            api::<StateFn>("PyGILState_GetThisThreadState")?,
            api::<RestoreFn>("PyEval_RestoreThread")?,
        )
    };
    let state = ensured.ok_or("the block did not run")?;
    for _ in 0..2 {
        py.gilstate_release(state);
        if py.gil_check() == 0 {
            // SAFETY: this thread's own state, detached by the release.
            unsafe { restore(this_thread()) };
        }
    }
    ensure!(py.gil_check() == 1, "the GIL is not held after the cleanup");
    py.run("nuwa_x = [i for i in range(100)]")?;
    prove_release(py, &nuwa_ffi::CPython, "after the reattach errors")?;
    py.finalize()?;
    passed()
}

/// The block's guard panics with nuwa's message instead of restoring, the
/// thread holds the GIL afterwards, and the interpreter keeps working.
pub(crate) fn state_attached_in_block(target: &Target) -> Outcome {
    let py = start(target)?;
    // Balanced inside a block: no error, and the block took the GIL back.
    let balanced = nuwa_ffi::nogil! {
        let state = py.gilstate_ensure();
        let inside = py.gil_check();
        py.gilstate_release(state);
        (inside, py.gil_check())
    };
    ensure!(
        balanced == (1, 0) && py.gil_check() == 1,
        "a balanced PyGILState_Ensure/Release inside a block: PyGILState_Check() {balanced:?} \
         inside, {} after",
        py.gil_check()
    );
    let previous = panic::take_hook();
    panic::set_hook(Box::new(|info| eprintln!("(expected) {info}")));
    let mut ensured = None;
    let caught = panic::catch_unwind(AssertUnwindSafe(|| {
        nuwa_ffi::nogil! {
            ensured = Some(py.gilstate_ensure());
            // ... and an early exit skips PyGILState_Release.
        }
    }));
    // `Panicked::catch` catches this panic too (it is raised while taking the
    // GIL back, inside its catch) and returns it as a value.
    let second = nuwa_ffi::Panicked::catch(|| {
        nuwa_ffi::nogil(|_| {
            let _leaked = py.gilstate_ensure();
        })
    });
    panic::set_hook(previous);
    let message = match &caught {
        Ok(()) => return Err("the block ended normally with a state still attached".into()),
        Err(payload) => panic_message(payload.as_ref()),
    };
    ensure!(
        message.starts_with(MESSAGE) && message.contains("PyGILState_Ensure"),
        "the panic's message: {message:?}"
    );
    ensure!(py.gil_check() == 1, "the GIL is not held after the panic");
    check_caught(py, second)?;
    undo_leaked_ensures(py, ensured)
}

/// In a block on the thread that runs a `Py_NewInterpreter` subinterpreter,
/// `PyGILState_Ensure` attaches the thread's *main-interpreter* state (its
/// GIL-state state) and the block ends with it still attached. The guard
/// panics with nuwa's message, never hangs, and the thread is back in the
/// subinterpreter, on the block's own state, with the GIL held.
pub(crate) fn state_attached_in_subinterpreter_block(target: &Target) -> Outcome {
    if (target.version.0, target.version.1) < (3, 12) {
        // The block releases nothing there (the held check cannot tell that
        // this thread holds the GIL; `legacy_subinterpreter` pins that), and
        // `PyGILState_Ensure` on a thread that holds the GIL through another
        // interpreter's state waits for it for good, with or without nuwa.
        return Ok(Pass::Skipped(
            "CPython 3.8-3.11: blocks in legacy subinterpreters release nothing".into(),
        ));
    }
    let py = start(target)?;
    type EndFn = unsafe extern "C" fn(*mut c_void);
    type SwapFn = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
    // SAFETY: the C signatures of these CPython 3.8+ functions.
    let (get, new_interpreter, end_interpreter, swap) = unsafe {
        (
            api::<StateFn>("PyThreadState_Get")?,
            api::<StateFn>("Py_NewInterpreter")?,
            api::<EndFn>("Py_EndInterpreter")?,
            api::<SwapFn>("PyThreadState_Swap")?,
        )
    };
    // SAFETY: this thread holds the GIL.
    let main_state = unsafe { get() };
    // SAFETY: this thread holds the GIL of an initialised interpreter; the
    // new subinterpreter's state becomes current (sharing the main GIL).
    let sub = unsafe { new_interpreter() };
    ensure!(!sub.is_null(), "Py_NewInterpreter() failed");
    let previous = panic::take_hook();
    panic::set_hook(Box::new(|info| eprintln!("(expected) {info}")));
    // Called from Python code in the subinterpreter, as an extension
    // function is.
    let caught = panic::catch_unwind(AssertUnwindSafe(|| {
        call_from_python(py, || {
            nuwa_ffi::nogil! {
                // Attaches `main_state`, which is not the block's own (`sub`).
                let _leaked = py.gilstate_ensure();
            }
        })
    }));
    panic::set_hook(previous);
    let message = match &caught {
        Ok(Err(e)) => return Err(e.clone()),
        Ok(Ok(())) => {
            return Err("the block ended normally with a state still attached".into());
        }
        Err(payload) => panic_message(payload.as_ref()),
    };
    ensure!(
        message.starts_with(MESSAGE),
        "the panic's message: {message:?}"
    );
    // SAFETY: PyThreadState_Get needs the GIL, which a state attached to
    // this thread holds either way (checked by the thread-local getter on
    // 3.12+; on 3.11 and older the GIL is shared by both states).
    let now = unsafe { get() };
    ensure!(
        now == sub,
        "after the panic the current state is {}, not the block's own (the \
         subinterpreter's)",
        if now == main_state {
            "the main interpreter's"
        } else {
            "another"
        }
    );
    py.run("nuwa_in_sub = sum(range(10))")?;
    // SAFETY: `sub` is current; afterwards no state is, and the main
    // thread's state is made current again. The leaked Ensure's count stays
    // on the main state (above 1, so nothing acts on it).
    unsafe {
        end_interpreter(sub);
        swap(main_state);
    }
    py.run("nuwa_x = 1")?;
    py.finalize()?;
    passed()
}

/// A state that is *not* the block's own, made for this thread inside the
/// block (`PyThreadState_New`) and attached (`PyEval_RestoreThread`), is
/// still attached at the end of the block (3.12+; on 3.8-3.11 the end check
/// only knows the block's own state). The block panics with nuwa's message,
/// never hangs, and then, on 3.13 and later, the block's own state is the
/// current one again (the take-back's `PyThreadState_Swap` detached the
/// stray state: on every block on 3.13, only in this repair on 3.14+); on
/// 3.12 nothing is swapped and the thread holds the GIL through the stray
/// state, as documented on `CPython`.
pub(crate) fn foreign_state_attached_in_block(target: &Target) -> Outcome {
    let version = (target.version.0, target.version.1);
    if version < (3, 12) {
        return Ok(Pass::Skipped(
            "CPython 3.8-3.11: the end check only recognises the block's own state".into(),
        ));
    }
    let py = start(target)?;
    let states = super::repair::StrayStates::load()?;
    // SAFETY: this thread holds the GIL.
    let (own, interp) = unsafe { states.own() };
    let previous = panic::take_hook();
    panic::set_hook(Box::new(|info| eprintln!("(expected) {info}")));
    let mut stray: *mut c_void = std::ptr::null_mut();
    let caught = panic::catch_unwind(AssertUnwindSafe(|| {
        nuwa_ffi::nogil! {
            // SAFETY: `interp` is alive; this thread has no state attached
            // inside the block.
            stray = unsafe { states.attach_new(interp) };
        }
    }));
    panic::set_hook(previous);
    let message = match &caught {
        Ok(()) => return Err("the block ended normally with a state still attached".into()),
        Err(payload) => panic_message(payload.as_ref()),
    };
    ensure!(
        message.starts_with(MESSAGE),
        "the panic's message: {message:?}"
    );
    ensure!(!stray.is_null(), "PyThreadState_New failed");
    // SAFETY: a state is attached to this thread either way (nuwa's message
    // says which), so this thread holds the GIL.
    let now = unsafe { (states.get)() };
    let repaired = version >= (3, 13);
    let expected = if repaired { own } else { stray };
    ensure!(
        now == expected,
        "after the panic the current state is {}, expected {}",
        if now == own {
            "the block's own"
        } else if now == stray {
            "the stray one"
        } else {
            "another"
        },
        if repaired {
            "the block's own (repaired by the swap)"
        } else {
            "the stray one (3.12 swaps nothing)"
        }
    );
    ensure!(
        message.contains(if repaired {
            "nuwa detached it"
        } else {
            "through the state attached"
        }),
        "the panic's message does not say what nuwa did: {message:?}"
    );
    // SAFETY: this thread holds the GIL; the stray state is made current no
    // more (swapped out on 3.12), cleared and deleted, and the block's own
    // is current again.
    unsafe {
        if !repaired {
            (states.swap)(own);
        }
        states.dispose(stray);
    }
    ensure!(py.gil_check() == 1, "the GIL is not held after the cleanup");
    py.run("nuwa_x = [i for i in range(100)]")?;
    prove_release(py, &nuwa_ffi::CPython, "after the stray state's panic")?;
    py.finalize()?;
    passed()
}

/// Run in a grandchild: the state is attached, then the block panics, so
/// the check runs while unwinding.
pub(crate) fn attached_while_panicking_child(target: &Target) -> Outcome {
    let py = start(target)?;
    panic::set_hook(Box::new(|_| {}));
    nuwa_ffi::nogil! {
        let _leaked = py.gilstate_ensure();
        panic!("a panic in the block");
    }
}

/// While the thread is already panicking, nuwa prints its message and
/// aborts (a second panic would abort without saying why).
pub(crate) fn state_attached_while_panicking(_target: &Target) -> Outcome {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let (status, _, stderr) = run_bounded(
        Command::new(exe).args(["--scenario", "attached_while_panicking_child"]),
        Duration::from_secs(30),
    )
    .map_err(|e| format!("the process did not abort: {e}"))?;
    use std::os::unix::process::ExitStatusExt;
    ensure!(
        status.signal() == Some(6),
        "expected SIGABRT, got {status}; stderr: {}",
        stderr.replace('\n', " | ")
    );
    ensure!(
        stderr.contains(MESSAGE) && stderr.contains("(already panicking: aborting)"),
        "stderr: {}",
        stderr.replace('\n', " | ")
    );
    Ok(Pass::Ok("aborted with nuwa's message".into()))
}

/// A state left attached in the released stretch before a `with_gil!` part
/// (the part's reacquire sees it, not the block's end): the same panic, the
/// part does not run, the block takes nothing back twice, and the thread
/// holds the GIL afterwards.
pub(crate) fn state_attached_before_a_part(target: &Target) -> Outcome {
    let py = start(target)?;
    let previous = panic::take_hook();
    panic::set_hook(Box::new(|info| eprintln!("(expected) {info}")));
    let mut ensured = None;
    let mut part_ran = false;
    let caught = panic::catch_unwind(AssertUnwindSafe(|| {
        nuwa_ffi::nogil! {
            ensured = Some(py.gilstate_ensure());
            let _ = with_gil! { part_ran = true; };
        }
    }));
    let mut strict_part_ran = false;
    let second = nuwa_ffi::Panicked::catch(|| {
        nuwa_ffi::nogil(|released| {
            let _leaked = py.gilstate_ensure();
            let _ = released.with_gil(|| strict_part_ran = true);
        })
    });
    panic::set_hook(previous);
    let message = match &caught {
        Ok(()) => return Err("the block ended normally with a state still attached".into()),
        Err(payload) => panic_message(payload.as_ref()),
    };
    ensure!(
        message.starts_with(MESSAGE),
        "the panic's message: {message:?}"
    );
    ensure!(!part_ran && !strict_part_ran, "a part ran");
    ensure!(py.gil_check() == 1, "the GIL is not held after the panic");
    check_caught(py, second)?;
    undo_leaked_ensures(py, ensured)
}
