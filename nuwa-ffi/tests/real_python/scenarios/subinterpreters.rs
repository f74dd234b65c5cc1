//! Legacy subinterpreters (`Py_NewInterpreter`, sharing the main GIL), and
//! a thread state made by one thread for another (`PyThreadState_New`).

use std::ffi::c_void;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nuwa_ffi::CPython;
use nuwa_ffi::nuwa_core::__private::{release, released};

use crate::harness::*;

type StateFn = unsafe extern "C" fn() -> *mut c_void;
type SwapFn = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
type EndFn = unsafe extern "C" fn(*mut c_void);
type NewStateFn = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
type InterpFn = unsafe extern "C" fn() -> *mut c_void;

const WAIT: Duration = Duration::from_secs(10);

/// What a block on the thread of a legacy subinterpreter did.
#[derive(Debug, PartialEq, Eq)]
struct SubBlock {
    held: bool,
    released: bool,
    /// The main interpreter's helper ran `gc.collect()` meanwhile.
    seen: bool,
    /// A block nested in it released (never right).
    nested_released: bool,
    held_after: bool,
}

/// A block on this thread; if it releases and `pipes` is given, it waits
/// (bounded) for the helper of `pipes` to run.
fn sub_block(pipes: Option<&Pipes>) -> SubBlock {
    let held = nuwa_ffi::gil_is_held();
    let (released, seen, nested_released) = {
        // SAFETY: dropped at the end of this block, on this thread.
        let guard = unsafe { release(CPython) };
        let released = released(&guard);
        let seen = released && pipes.is_some_and(|p| p.enter_and_wait(WAIT));
        // SAFETY: dropped at the end of the statement, on this thread.
        let nested_released =
            nuwa_ffi::nuwa_core::__private::released(&unsafe { release(CPython) });
        (released, seen, nested_released)
    };
    SubBlock {
        held,
        released,
        seen,
        nested_released,
        held_after: nuwa_ffi::gil_is_held(),
    }
}

/// A block on the thread that runs a legacy subinterpreter, called from
/// Python code in the subinterpreter (as an extension function is) and
/// straight from C after `Py_NewInterpreter`. On 3.12 and later the held
/// check is thread-local and can tell that this thread holds the GIL: the
/// block releases, and a main-interpreter Python thread runs `gc.collect()`
/// meanwhile. On 3.8-3.11 the subinterpreter's state is not this thread's
/// GIL-state state, nothing safe tells whose it is, and the block releases
/// nothing (its held check and the one after say "not held"). A thread
/// without a Python state never releases.
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
    let version = (target.version.0, target.version.1);
    let from_python_releases = version >= (3, 12);
    let from_c_releases = version >= (3, 12);
    let (from_python_pipes, from_c_pipes) = (Pipes::new()?, Pipes::new()?);
    // The helpers belong to the main interpreter.
    if from_python_releases {
        py.run(&from_python_pipes.helper_code("nuwa_main_helper"))?;
    }
    if from_c_releases {
        py.run(&from_c_pipes.helper_code("nuwa_main_helper_2"))?;
    }
    // SAFETY: this thread holds the GIL.
    let main_state = unsafe { get() };
    // SAFETY: this thread holds the GIL of an initialised interpreter; the
    // new subinterpreter's state becomes current (sharing the main GIL).
    let sub = unsafe { new_interpreter() };
    ensure!(!sub.is_null(), "Py_NewInterpreter() failed");
    py.run("nuwa_in_sub = sum(range(10))")?;
    let from_python = call_from_python(py, || {
        sub_block(from_python_releases.then_some(&from_python_pipes))
    });
    let from_c = sub_block(from_c_releases.then_some(&from_c_pipes));
    // A thread with no Python state, while this one holds the GIL in the
    // subinterpreter: never a release.
    let foreign = thread::spawn(|| {
        // SAFETY: dropped at the end of the statement, on this thread.
        let released = released(&unsafe { release(CPython) });
        (released, nuwa_ffi::gil_is_held())
    })
    .join()
    .map_err(|_| "the foreign thread panicked".to_string())?;
    py.run("nuwa_in_sub += 1")?;
    // SAFETY: `sub` is current; afterwards no state is, and the main
    // thread's state is made current again.
    unsafe {
        end_interpreter(sub);
        swap(main_state);
    }
    let from_python = from_python?;
    ensure!(
        !foreign.0 && !foreign.1,
        "a thread without a Python state released ({}) or saw the GIL as its own ({}) \
         while the subinterpreter ran",
        foreign.0,
        foreign.1
    );
    let expect = |releases: bool| SubBlock {
        held: releases,
        released: releases,
        seen: releases,
        nested_released: false,
        held_after: releases,
    };
    ensure!(
        from_python == expect(from_python_releases),
        "{}.{}: a block called from Python code in a legacy subinterpreter: {from_python:?} \
         (a release is proven by the main interpreter's Python thread running meanwhile, \
         within {WAIT:?})",
        version.0,
        version.1
    );
    ensure!(
        from_c == expect(from_c_releases),
        "{}.{}: a block called from C in a legacy subinterpreter: {from_c:?}",
        version.0,
        version.1
    );
    py.run("nuwa_x = 1")?;
    py.finalize()?;
    Ok(Pass::Ok(format!(
        "released from Python code {from_python_releases}, from C {from_c_releases}"
    )))
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
            let released = released(&unsafe { release(CPython) });
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

/// What thread A saw while B held the GIL on the state A made for it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct MakerView {
    held: bool,
    released: bool,
    part_ran: bool,
    nested_released: bool,
}

/// On A, which does not hold the GIL while B does: the held check, a block,
/// a `with_gil!` part of a block that released nothing, and a block nested
/// in one. The wrong answer is "held"; then nothing else is tried (it would
/// release B's GIL, and B would crash).
fn maker_view() -> MakerView {
    let held = nuwa_ffi::gil_is_held();
    if held {
        return MakerView {
            held,
            ..MakerView::default()
        };
    }
    let released = {
        // SAFETY: dropped at the end of this block, on this thread.
        let guard = unsafe { release(CPython) };
        released(&guard)
    };
    let mut part_ran = false;
    let nested_released = nuwa_ffi::nogil! {
        let _ = with_gil! { part_ran = true; };
        // SAFETY: dropped at the end of the statement, on this thread.
        nuwa_ffi::nuwa_core::__private::released(&unsafe { release(CPython) })
    };
    MakerView {
        held,
        released,
        part_ran,
        nested_released,
    }
}

/// The C API functions the scenarios of states made for another thread use.
#[derive(Clone, Copy)]
struct StateApi {
    interp: usize,
    new_state: NewStateFn,
    restore: EndFn,
    save: StateFn,
}

impl StateApi {
    fn load() -> Result<StateApi, String> {
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
        Ok(StateApi {
            interp,
            new_state,
            restore,
            save,
        })
    }

    /// A new state of the main interpreter, made on this thread.
    fn make(&self) -> usize {
        // SAFETY: a valid interpreter; `PyThreadState_New` needs no GIL.
        unsafe { (self.new_state)(self.interp as *mut c_void) as usize }
    }
}

/// Thread B: attaches `state` (from `from_maker`) and holds the GIL on it,
/// first in C, then while it runs Python code (a `ctypes` call that waits);
/// each time it says so on `holds` and waits (bounded) for `answered`.
fn hold_on_a_state_made_for_it(
    py: &'static Py,
    api: StateApi,
    from_maker: mpsc::Receiver<usize>,
    holds: mpsc::Sender<&'static str>,
    answered: mpsc::Receiver<()>,
) -> Result<(), String> {
    let state = from_maker
        .recv_timeout(WAIT)
        .map_err(|e| format!("B got no state: {e}"))?;
    // SAFETY: a state of this interpreter that no thread has attached.
    unsafe { (api.restore)(state as *mut c_void) };
    let _ = holds.send("in C");
    let in_c = answered.recv_timeout(WAIT);
    let python = in_c.is_ok().then(|| {
        // SAFETY: B holds the GIL through `state`.
        unsafe {
            call_from_python_unchecked(py, || {
                let _ = holds.send("running Python");
                answered.recv_timeout(WAIT)
            })
        }
    });
    // SAFETY: B holds the GIL through `state`.
    unsafe { (api.save)() };
    in_c.map_err(|e| format!("nobody answered B: {e}"))?;
    if let Some(python) = python {
        python?.map_err(|e| format!("nobody answered B: {e}"))?;
    }
    Ok(())
}

/// Thread A, without the GIL: while B holds it (twice), what A sees.
fn watch_the_holder(
    holds: &mpsc::Receiver<&'static str>,
    answered: &mpsc::Sender<()>,
) -> Result<Vec<(&'static str, MakerView)>, String> {
    let mut views = Vec::new();
    for _ in 0..2 {
        let how = holds
            .recv_timeout(WAIT)
            .map_err(|e| format!("B never held the GIL: {e}"))?;
        views.push((how, maker_view()));
        let _ = answered.send(());
    }
    Ok(views)
}

/// Fails with every wrong view.
fn judge(views: &[(&'static str, MakerView)]) -> Result<(), String> {
    let wrong: Vec<String> = views
        .iter()
        .filter(|(_, view)| *view != MakerView::default())
        .map(|(how, view)| {
            format!(
                "while B held the GIL {how}, A saw: gil_is_held {}, its block released {}, \
                 a part ran {}, a nested block released {}",
                view.held, view.released, view.part_ran, view.nested_released
            )
        })
        .collect();
    ensure!(
        wrong.is_empty(),
        "{} (expected all false)",
        wrong.join("; ")
    );
    ensure!(views.len() == 2, "only {} of 2 rounds", views.len());
    Ok(())
}

fn skip_on_debug_3_12(target: &Target) -> Option<Outcome> {
    (target.debug && target.version >= (3, 12, 0)).then(|| {
        Ok(Pass::Skipped(
            "CPython 3.12+ debug build: it asserts against attaching a state made on another \
             thread"
                .into(),
        ))
    })
}

/// Python thread A, which has a thread state of its own (its GIL-state
/// state), makes a state for thread B with `PyThreadState_New`; B attaches
/// it and holds the GIL, first in C, then while it runs Python code. Each
/// time, on A: the held check says "not held", a block releases nothing, a
/// `with_gil!` part is refused, and a nested block releases nothing. On
/// 3.8-3.11 the state B runs on carries A's `thread_id` (which nuwa no longer
/// reads: a check that trusted it said "held" here).
pub(crate) fn state_made_by_a_python_thread(target: &Target) -> Outcome {
    if let Some(skip) = skip_on_debug_3_12(target) {
        return skip;
    }
    let py = start(target)?;
    let api = StateApi::load()?;
    let (to_b, from_a) = mpsc::channel::<usize>();
    let (holds_tx, holds_rx) = mpsc::channel();
    let (answered_tx, answered_rx) = mpsc::channel();
    let outcome = nuwa_ffi::nogil! {
        let a = thread::spawn(move || {
            let gil = py.gilstate_ensure();
            let own_held = nuwa_ffi::gil_is_held();
            let state = api.make();
            // SAFETY: A holds the GIL through its own state.
            let own = unsafe { (api.save)() };
            let _ = to_b.send(state);
            let views = watch_the_holder(&holds_rx, &answered_tx);
            // SAFETY: A's own state, which A saved above.
            unsafe { (api.restore)(own) };
            py.gilstate_release(gil);
            (own_held, views)
        });
        let b = thread::spawn(move || {
            hold_on_a_state_made_for_it(py, api, from_a, holds_tx, answered_rx)
        });
        let b = b.join().map_err(|_| "thread B panicked".to_string());
        let a = a.join().map_err(|_| "thread A panicked".to_string());
        (a, b)
    };
    let (own_held, views) = outcome.0?;
    outcome.1??;
    let views = views?;
    judge(&views)?;
    ensure!(own_held, "A does not see the GIL as held on its own state");
    py.run("nuwa_x = 1")?;
    py.finalize()?;
    Ok(Pass::Ok(
        "A saw nothing held while B held the GIL in C and in Python".into(),
    ))
}

type IdentFn = unsafe extern "C" fn() -> std::ffi::c_ulong;

/// Thread C makes a state for thread B and ends; Python thread A, started
/// next, gets C's thread id back (glibc reuses a joined thread's stack, and
/// the id is its address). While B holds the GIL on C's state (which carries
/// A's id now), in C and then running Python code: on A the held check says
/// "not held", and its blocks release nothing (the `thread_id` of a state
/// names no thread safely). Skipped if the C library gave A another id.
pub(crate) fn state_made_by_a_thread_that_ended(target: &Target) -> Outcome {
    if let Some(skip) = skip_on_debug_3_12(target) {
        return skip;
    }
    let py = start(target)?;
    // SAFETY: the C signature of this CPython 3.8+ function.
    let ident = unsafe { api::<IdentFn>("PyThread_get_thread_ident")? };
    let api = StateApi::load()?;
    let (a_id_tx, a_id_rx) = mpsc::channel();
    let (to_b, from_c) = mpsc::channel::<usize>();
    let (holds_tx, holds_rx) = mpsc::channel();
    let (answered_tx, answered_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<bool>();
    let outcome = nuwa_ffi::nogil! {
        let c = thread::spawn(move || {
            let gil = py.gilstate_ensure();
            let state = api.make();
            py.gilstate_release(gil);
            // SAFETY: may be called on any thread.
            (state, unsafe { ident() })
        })
        .join()
        .map_err(|_| "thread C panicked".to_string());
        let a = thread::spawn(move || {
            let gil = py.gilstate_ensure();
            // SAFETY: may be called on any thread.
            let _ = a_id_tx.send(unsafe { ident() });
            // SAFETY: A holds the GIL through its own state.
            let own = unsafe { (api.save)() };
            let views = match go_rx.recv_timeout(WAIT) {
                Ok(true) => Some(watch_the_holder(&holds_rx, &answered_tx)),
                _ => None,
            };
            // SAFETY: A's own state, which A saved above.
            unsafe { (api.restore)(own) };
            py.gilstate_release(gil);
            views
        });
        let a_id = a_id_rx.recv_timeout(WAIT);
        let reused = matches!((&c, &a_id), (Ok((_, c_id)), Ok(a_id)) if c_id == a_id);
        let b = reused.then(|| {
            let _ = go_tx.send(true);
            let b = thread::spawn(move || {
                hold_on_a_state_made_for_it(py, api, from_c, holds_tx, answered_rx)
            });
            if let Ok((state, _)) = &c {
                let _ = to_b.send(*state);
            }
            b.join().map_err(|_| "thread B panicked".to_string())
        });
        let _ = go_tx.send(false);
        let a = a.join().map_err(|_| "thread A panicked".to_string());
        (c, a, b)
    };
    let (c, a, b) = outcome;
    let (_, c_id) = c?;
    let views = a?;
    let (Some(b), Some(views)) = (b, views) else {
        py.finalize()?;
        return Ok(Pass::Skipped(format!(
            "A did not get C's thread id back (C {c_id:#x}): nothing to check"
        )));
    };
    b??;
    let views = views?;
    judge(&views)?;
    py.run("nuwa_x = 1")?;
    py.finalize()?;
    Ok(Pass::Ok(format!(
        "A reused C's id {c_id:#x} and saw nothing held while B held the GIL on C's state"
    )))
}
