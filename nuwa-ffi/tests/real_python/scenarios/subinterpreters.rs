//! Legacy subinterpreters (`Py_NewInterpreter`, sharing the main GIL), and
//! a thread state made by one thread for another (`PyThreadState_New`).

use std::ffi::c_void;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nuwa_ffi::{CPython, Guard};

use crate::harness::*;

type StateFn = unsafe extern "C" fn() -> *mut c_void;
type SwapFn = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
type EndFn = unsafe extern "C" fn(*mut c_void);
type NewStateFn = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
type InterpFn = unsafe extern "C" fn() -> *mut c_void;

const WAIT: Duration = Duration::from_secs(10);

/// A block on the thread that runs a legacy subinterpreter releases the
/// GIL: a main-interpreter Python thread runs `gc.collect()` meanwhile. A
/// thread without a Python state still releases nothing then.
pub(crate) fn legacy_subinterpreter(target: &Target) -> Outcome {
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
    let pipes = Pipes::new()?;
    // The helper belongs to the main interpreter.
    py.run(&pipes.helper_code("nuwa_main_helper"))?;
    // SAFETY: this thread holds the GIL.
    let main_state = unsafe { get() };
    // SAFETY: this thread holds the GIL of an initialised interpreter; the
    // new subinterpreter's state becomes current (sharing the main GIL).
    let sub = unsafe { new_interpreter() };
    ensure!(!sub.is_null(), "Py_NewInterpreter() failed");
    let held = nuwa_ffi::gil_is_held();
    py.run("nuwa_in_sub = sum(range(10))")?;
    // A thread with no Python state, while this one holds the GIL in the
    // subinterpreter: never a release.
    let foreign = thread::spawn(|| {
        // SAFETY: dropped at the end of the statement, on this thread.
        let released = unsafe { Guard::release(CPython) }.released();
        (released, nuwa_ffi::gil_is_held())
    })
    .join()
    .map_err(|_| "the foreign thread panicked".to_string())?;
    let (seen, released) = {
        // SAFETY: dropped at the end of this block, on this thread.
        let guard = unsafe { Guard::release(CPython) };
        (pipes.enter_and_wait(WAIT), guard.released())
    };
    let after = nuwa_ffi::gil_is_held();
    py.run("nuwa_in_sub += 1")?;
    // SAFETY: `sub` is current; afterwards no state is, and the main
    // thread's state is made current again.
    unsafe {
        end_interpreter(sub);
        swap(main_state);
    }
    ensure!(
        !foreign.0 && !foreign.1,
        "a thread without a Python state released ({}) or saw the GIL as its own ({}) \
         while the subinterpreter ran",
        foreign.0,
        foreign.1
    );
    ensure!(held, "gil_is_held() is false in the subinterpreter");
    ensure!(
        released && seen,
        "in a legacy subinterpreter the block released {released}, and the main \
         interpreter's Python thread {} within {WAIT:?}",
        if seen { "ran" } else { "never ran" }
    );
    ensure!(
        after,
        "gil_is_held() is false after the block in the subinterpreter"
    );
    py.run("nuwa_x = 1")?;
    py.finalize()?;
    passed()
}

/// Thread A (no state of its own) makes a state with `PyThreadState_New`
/// for thread B, which attaches it. What nuwa says on each thread, and what
/// B's block does, per version.
pub(crate) fn state_made_for_another_thread(target: &Target) -> Outcome {
    if target.debug && target.version >= (3, 12, 0) {
        // tstate_activate() asserts that a state bound to one thread's
        // GIL-state slot is not attached by another: CPython's debug builds
        // reject the edge itself.
        return Ok(Pass::Skipped(
            "CPython 3.12+ debug build: it asserts against attaching a state made for \
             another thread's GIL-state slot"
                .into(),
        ));
    }
    let py = start(target)?;
    // SAFETY: the C signatures of these CPython 3.8+ functions.
    let (interp_main, new_state, restore, save) = unsafe {
        (
            api::<InterpFn>("PyInterpreterState_Main")?,
            api::<NewStateFn>("PyThreadState_New")?,
            api::<EndFn>("PyEval_RestoreThread")?,
            api::<StateFn>("PyEval_SaveThread")?,
        )
    };
    // SAFETY: the interpreter is initialised.
    let interp = unsafe { interp_main() } as usize;
    let (to_b, from_a) = mpsc::channel::<usize>();
    let (b_holds_tx, b_holds_rx) = mpsc::channel::<()>();
    let (a_done_tx, a_done_rx) = mpsc::channel::<()>();
    // The main thread releases for the whole exchange.
    let outcome = nuwa_ffi::nogil! {
        let a = thread::spawn(move || {
            // SAFETY: a valid interpreter; PyThreadState_New needs no GIL.
            let state = unsafe { new_state(interp as *mut c_void) } as usize;
            let _ = to_b.send(state);
            let held_while_b_holds = b_holds_rx.recv_timeout(WAIT).map(|()| {
                (nuwa_ffi::gil_is_held(), PY.get().map_or(-1, |py| py.gil_check()))
            });
            let _ = a_done_tx.send(());
            (state, held_while_b_holds)
        });
        let b = thread::spawn(move || {
            let state = from_a.recv_timeout(WAIT).map_err(|e| format!("from A: {e}"))?;
            // SAFETY: a fresh state of this interpreter, attached here.
            unsafe { restore(state as *mut c_void) };
            let held = nuwa_ffi::gil_is_held();
            // SAFETY: dropped at the end of the statement, on this thread.
            let released = unsafe { Guard::release(CPython) }.released();
            let _ = b_holds_tx.send(());
            let _ = a_done_rx.recv_timeout(WAIT);
            // SAFETY: this thread holds the GIL through `state`.
            unsafe { save() };
            Ok::<_, String>((held, released))
        });
        let b = b.join().map_err(|_| "thread B panicked".to_string());
        let a = a.join().map_err(|_| "thread A panicked".to_string());
        (a, b)
    };
    let (state, a_view) = outcome.0?;
    let (b_held, b_released) = outcome.1??;
    let (a_held, a_check) = a_view.map_err(|e| format!("B never held the GIL: {e}"))?;
    // The state (detached: B saved it) is left to Py_FinalizeEx: deleting it
    // here would, on 3.12+, unbind this thread's own GIL-state slot.
    let _ = state;
    ensure!(
        i32::from(a_held) == a_check,
        "on A, nuwa's held check ({a_held}) disagrees with PyGILState_Check() ({a_check})"
    );
    let thread_local = target.version >= (3, 12, 0);
    if thread_local {
        ensure!(!a_held, "3.12+: A (no state attached) sees the GIL as held");
        ensure!(
            b_held && b_released,
            "3.12+: B holds {b_held}, released {b_released}"
        );
    } else {
        // The GIL-state slot of A holds B's state: A looks like the holder
        // to nuwa and to PyGILState_Check alike (a block on A would release
        // B's GIL; not run here). B releases nothing: safe, no parallelism.
        ensure!(
            a_held,
            "3.8-3.11: expected A to be fooled like PyGILState_Check"
        );
        ensure!(
            !b_held && !b_released,
            "3.8-3.11: B holds {b_held}, released {b_released}; expected neither"
        );
    }
    py.run("nuwa_x = 1")?;
    py.finalize()?;
    Ok(Pass::Ok(format!(
        "A (maker): gil_is_held {a_held}, PyGILState_Check {a_check}; B (user): gil_is_held \
         {b_held}, its block released {b_released}"
    )))
}
