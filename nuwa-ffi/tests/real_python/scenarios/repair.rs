//! Attacks on the take-back's repair (3.14+: `PyThreadState_Swap(saved)`
//! only when the thread-local check finds a state left attached; 3.13: the
//! swap on every block): states left attached that belong to another
//! interpreter (an own-GIL subinterpreter), left before a `with_gil!` part,
//! left in a block nested in a part.

use std::ffi::{c_char, c_int, c_void};
use std::panic::{self, AssertUnwindSafe};

use super::reattach::panic_message;
use crate::harness::*;

type StateFn = unsafe extern "C" fn() -> *mut c_void;
type StateOpFn = unsafe extern "C" fn(*mut c_void);
type SwapFn = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
type NewFn = unsafe extern "C" fn(*mut c_void) -> *mut c_void;

const MESSAGE: &str =
    "nuwa: a Python thread state was attached on this thread inside a nogil! block";

/// CPython's `PyStatus` (3.8+), returned by value.
#[repr(C)]
struct PyStatus {
    kind: c_int,
    func: *const c_char,
    err_msg: *const c_char,
    exitcode: c_int,
}

/// CPython's `PyInterpreterConfig` (3.12+).
#[repr(C)]
struct InterpreterConfig {
    use_main_obmalloc: c_int,
    allow_fork: c_int,
    allow_exec: c_int,
    allow_threads: c_int,
    allow_daemon_threads: c_int,
    check_multi_interp_extensions: c_int,
    gil: c_int,
}

/// `PyInterpreterConfig_OWN_GIL`.
const OWN_GIL: c_int = 2;

type NewFromConfigFn = unsafe extern "C" fn(*mut *mut c_void, *const InterpreterConfig) -> PyStatus;

/// The CPython functions that make a thread state for this thread, attach
/// it and dispose of it: the stray state these attacks leave in a block.
pub(crate) struct StrayStates {
    /// `PyThreadState_Get`.
    pub(crate) get: StateFn,
    /// `PyThreadState_Swap`.
    pub(crate) swap: SwapFn,
    interpreter: StateFn,
    new_state: NewFn,
    restore: StateOpFn,
    clear: StateOpFn,
    delete: StateOpFn,
}

impl StrayStates {
    pub(crate) fn load() -> Result<StrayStates, String> {
        // SAFETY: the C signatures of these CPython 3.8+ functions.
        unsafe {
            Ok(StrayStates {
                get: api("PyThreadState_Get")?,
                swap: api("PyThreadState_Swap")?,
                interpreter: api("PyInterpreterState_Get")?,
                new_state: api("PyThreadState_New")?,
                restore: api("PyEval_RestoreThread")?,
                clear: api("PyThreadState_Clear")?,
                delete: api("PyThreadState_Delete")?,
            })
        }
    }

    /// This thread's current state and its interpreter.
    ///
    /// # Safety
    ///
    /// This thread holds the GIL.
    pub(crate) unsafe fn own(&self) -> (*mut c_void, *mut c_void) {
        // SAFETY: the caller's contract.
        unsafe { ((self.get)(), (self.interpreter)()) }
    }

    /// A new state of `interp` for this thread, attached (taking the GIL).
    ///
    /// # Safety
    ///
    /// `interp` is alive, and no state is attached to this thread.
    pub(crate) unsafe fn attach_new(&self, interp: *mut c_void) -> *mut c_void {
        // SAFETY: the caller's contract.
        unsafe {
            let stray = (self.new_state)(interp);
            (self.restore)(stray);
            stray
        }
    }

    /// After a repair: the block's `own` state is the current one again;
    /// then `stray` is disposed of.
    ///
    /// # Safety
    ///
    /// A state is attached to this thread (so it holds the GIL), and
    /// `stray` is a state made by [`attach_new`](Self::attach_new).
    pub(crate) unsafe fn check_repaired(
        &self,
        own: *mut c_void,
        stray: *mut c_void,
        what: &str,
    ) -> Result<(), String> {
        // SAFETY: the caller's contract.
        let now = unsafe { (self.get)() };
        ensure!(
            now == own,
            "{what}: after the panic the current state is {}",
            which(now, own, stray)
        );
        // SAFETY: the stray state is not current; this thread holds the GIL.
        unsafe { self.dispose(stray) };
        Ok(())
    }

    /// Clears and deletes `stray`.
    ///
    /// # Safety
    ///
    /// `stray` is not the current state, and this thread holds the GIL.
    pub(crate) unsafe fn dispose(&self, stray: *mut c_void) {
        // SAFETY: the caller's contract.
        unsafe {
            (self.clear)(stray);
            (self.delete)(stray);
        }
    }
}

/// Runs `f` with the panic hook quiet, and returns the panic's message
/// (an error if `f` did not panic).
fn expect_panic(f: impl FnOnce()) -> Result<String, String> {
    let previous = panic::take_hook();
    panic::set_hook(Box::new(|info| eprintln!("(expected) {info}")));
    let caught = panic::catch_unwind(AssertUnwindSafe(f));
    panic::set_hook(previous);
    match caught {
        Ok(()) => Err("the block ended normally with a state still attached".into()),
        Err(payload) => {
            let message = panic_message(payload.as_ref());
            ensure!(
                message.starts_with(MESSAGE),
                "the panic's message: {message:?}"
            );
            Ok(message)
        }
    }
}

/// `prove_release`, with the thread-local getter instead of
/// `PyGILState_Check`, which answers 1 whatever is attached once a
/// subinterpreter has been made (CPython turns its check off then).
fn prove_release_after_subinterpreters(py: &Py, what: &str) -> Result<(), String> {
    use std::sync::atomic::Ordering::SeqCst;
    use std::time::Instant;
    // SAFETY: the C signature of this CPython 3.13+ function.
    let unchecked = unsafe { api::<StateFn>("PyThreadState_GetUnchecked")? };
    FLAGS[ENTERED].store(0, SeqCst);
    FLAGS[GO].store(0, SeqCst);
    py.run(&format!(
        "nuwa_proof = nuwa_thread(lambda: (nuwa_wait({ENTERED}), gc.collect(), _nuwa_set({GO}, 1)))"
    ))?;
    let deadline = Instant::now() + WAIT;
    let (went, inside) = nuwa_ffi::nogil! {
        FLAGS[ENTERED].store(1, SeqCst);
        // SAFETY: the thread-local getter, any time.
        let inside = unsafe { unchecked() };
        (wait_flag(GO, 1, deadline), inside)
    };
    ensure!(went, "{what}: the block did not release the GIL");
    ensure!(
        inside.is_null(),
        "{what}: a state was attached inside the block"
    );
    // SAFETY: as above.
    let after = unsafe { unchecked() };
    ensure!(!after.is_null(), "{what}: nothing attached after the block");
    py.run("nuwa_join(nuwa_proof)")?;
    check_python_errors()
}

/// Names a state for the error messages.
fn which(now: *mut c_void, own: *mut c_void, stray: *mut c_void) -> &'static str {
    if now == own {
        "the block's own"
    } else if now == stray {
        "the stray one"
    } else if now.is_null() {
        "none"
    } else {
        "another"
    }
}

/// Inside a block on the main interpreter, `Py_NewInterpreterFromConfig`
/// makes an own-GIL subinterpreter, whose state it leaves attached (holding
/// the subinterpreter's GIL, not the main one). The block panics; on 3.13+
/// the block's own state is current again (the repair detached the
/// subinterpreter's state, dropping its GIL, and took the main GIL). The
/// subinterpreter can then be ended normally.
pub(crate) fn own_gil_subinterpreter_left_in_block(target: &Target) -> Outcome {
    let version = (target.version.0, target.version.1);
    if version < (3, 13) {
        // (3.12: no repair, and no `PyThreadState_GetUnchecked` for the proof.)
        return Ok(Pass::Skipped("the repair is 3.13+".into()));
    }
    let py = start(target)?;
    // SAFETY: the C signatures of these CPython 3.12+ functions.
    let (unchecked, new_from_config, end_interpreter, swap) = unsafe {
        (
            api::<StateFn>("PyThreadState_GetUnchecked")?,
            api::<NewFromConfigFn>("Py_NewInterpreterFromConfig")?,
            api::<StateOpFn>("Py_EndInterpreter")?,
            api::<SwapFn>("PyThreadState_Swap")?,
        )
    };
    // SAFETY: this thread holds the GIL.
    let own = unsafe { unchecked() };
    let config = InterpreterConfig {
        use_main_obmalloc: 0,
        allow_fork: 0,
        allow_exec: 0,
        allow_threads: 1,
        allow_daemon_threads: 0,
        check_multi_interp_extensions: 1,
        gil: OWN_GIL,
    };
    let mut sub: *mut c_void = std::ptr::null_mut();
    let mut status_kind = -1;
    let message = expect_panic(|| {
        nuwa_ffi::nogil! {
            // SAFETY: no state is attached on this thread (the block
            // released it); the new interpreter's state is attached on
            // return, holding its own GIL.
            status_kind = unsafe { new_from_config(&mut sub, &config) }.kind;
        }
    })?;
    ensure!(
        status_kind == 0 && !sub.is_null(),
        "Py_NewInterpreterFromConfig failed"
    );
    // SAFETY: the thread-local getter, any time.
    let now = unsafe { unchecked() };
    ensure!(
        now == own,
        "after the panic the current state is {} ({message})",
        which(now, own, sub)
    );
    py.run("nuwa_x = [i for i in range(100)]")?;
    // SAFETY: end the subinterpreter from its own state (attached by the
    // swap, which detaches the current one), then take the main one back.
    unsafe {
        swap(sub);
        end_interpreter(sub);
        swap(own);
    }
    prove_release_after_subinterpreters(py, "after the own-GIL subinterpreter's panic")?;
    py.finalize()?;
    passed()
}

/// A state of this thread's, not the block's own, attached before a
/// `with_gil!` part (in place and strict): the part's reacquire panics
/// (the repair on 3.13+), the part does not run, and the block's own state
/// is current afterwards on 3.13+ (nothing is taken back twice).
pub(crate) fn foreign_state_left_before_a_part(target: &Target) -> Outcome {
    let version = (target.version.0, target.version.1);
    if version < (3, 13) {
        return Ok(Pass::Skipped("the repair is 3.13+".into()));
    }
    let py = start(target)?;
    let states = StrayStates::load()?;
    // SAFETY: this thread holds the GIL.
    let (own, interp) = unsafe { states.own() };
    for strict in [false, true] {
        // (An address: the strict form's closure is `Send`.)
        let mut stray_addr = 0usize;
        let interp_addr = interp as usize;
        let mut part_ran = false;
        let mut after_part = false;
        let message = expect_panic(|| {
            if strict {
                let states = &states;
                nuwa_ffi::nogil(|released| {
                    // SAFETY: `interp` is alive; nothing is attached here.
                    let stray = unsafe { states.attach_new(interp_addr as *mut c_void) };
                    stray_addr = stray as usize;
                    let _ = released.with_gil(|| part_ran = true);
                    after_part = true;
                })
            } else {
                nuwa_ffi::nogil! {
                    // SAFETY: as above.
                    let stray = unsafe { states.attach_new(interp) };
                    stray_addr = stray as usize;
                    let _ = with_gil! { part_ran = true; };
                    after_part = true;
                }
            }
        })?;
        ensure!(
            !part_ran && !after_part,
            "the part or the rest of the block ran"
        );
        let what = format!("strict={strict} ({message})");
        // SAFETY: a state is attached (nuwa's message says so); the stray
        // one was made by `attach_new`.
        unsafe { states.check_repaired(own, stray_addr as *mut c_void, &what)? };
        py.run("nuwa_x = [i for i in range(100)]")?;
    }
    prove_release(py, &nuwa_ffi::CPython, "after the part's panic")?;
    py.finalize()?;
    passed()
}

/// A block nested in a `with_gil!` part of another block leaves a stray
/// state attached: the nested block's end panics, the panic leaves the part
/// (which releases again) and the outer block (which takes the GIL back).
/// On 3.13+ the block's own state is current afterwards and PyGILState
/// agrees; nothing deadlocks or aborts.
pub(crate) fn foreign_state_left_in_block_nested_in_part(target: &Target) -> Outcome {
    let version = (target.version.0, target.version.1);
    if version < (3, 13) {
        return Ok(Pass::Skipped("the repair is 3.13+".into()));
    }
    let py = start(target)?;
    let states = StrayStates::load()?;
    // SAFETY: this thread holds the GIL.
    let (own, interp) = unsafe { states.own() };
    let mut stray: *mut c_void = std::ptr::null_mut();
    let message = expect_panic(|| {
        nuwa_ffi::nogil! {
            let _ = with_gil! {
                nuwa_ffi::nogil! {
                    // SAFETY: `interp` is alive; nothing is attached here.
                    stray = unsafe { states.attach_new(interp) };
                }
            };
        }
    })?;
    // SAFETY: a state is attached (nuwa's message says so); the stray one
    // was made by `attach_new`.
    unsafe { states.check_repaired(own, stray, &message)? };
    ensure!(py.gil_check() == 1, "PyGILState_Check() after the cleanup");
    py.run("nuwa_x = [i for i in range(100)]")?;
    prove_release(py, &nuwa_ffi::CPython, "after the nested block's panic")?;
    py.finalize()?;
    passed()
}

/// On a thread of its own, an own-GIL subinterpreter runs a block (which
/// releases the subinterpreter's GIL); inside, a state of the *main*
/// interpreter is made and attached (taking the main GIL) and left. The
/// repair must drop the main GIL and take the subinterpreter's back: the
/// main thread, waiting for the main GIL meanwhile, is not stuck, and the
/// subinterpreter's state is current after the panic.
pub(crate) fn main_state_left_in_own_gil_subinterpreter_block(target: &Target) -> Outcome {
    let version = (target.version.0, target.version.1);
    if version < (3, 13) {
        return Ok(Pass::Skipped("the repair is 3.13+".into()));
    }
    let py = start(target)?;
    // SAFETY: the C signatures of these CPython 3.12+ functions.
    let (unchecked, interpreter, new_from_config, end_interpreter, new_state, restore, swap) = unsafe {
        (
            api::<StateFn>("PyThreadState_GetUnchecked")?,
            api::<StateFn>("PyInterpreterState_Get")?,
            api::<NewFromConfigFn>("Py_NewInterpreterFromConfig")?,
            api::<StateOpFn>("Py_EndInterpreter")?,
            api::<NewFn>("PyThreadState_New")?,
            api::<StateOpFn>("PyEval_RestoreThread")?,
            api::<SwapFn>("PyThreadState_Swap")?,
        )
    };
    // SAFETY: the C signatures.
    let (clear, delete_current) = unsafe {
        (
            api::<StateOpFn>("PyThreadState_Clear")?,
            api::<unsafe extern "C" fn()>("PyThreadState_DeleteCurrent")?,
        )
    };
    // SAFETY: this thread holds the GIL.
    let main_interp = unsafe { interpreter() } as usize;
    let result = nuwa_ffi::nogil! {
        // The main thread waits here without the main GIL.
        std::thread::spawn(move || -> Result<String, String> {
            let config = InterpreterConfig {
                use_main_obmalloc: 0,
                allow_fork: 0,
                allow_exec: 0,
                allow_threads: 1,
                allow_daemon_threads: 0,
                check_multi_interp_extensions: 1,
                gil: OWN_GIL,
            };
            let mut sub: *mut c_void = std::ptr::null_mut();
            // SAFETY: no state on this new thread; the subinterpreter's
            // state is attached on return.
            let status = unsafe { new_from_config(&mut sub, &config) };
            ensure!(status.kind == 0 && !sub.is_null(), "Py_NewInterpreterFromConfig failed");
            let mut stray: *mut c_void = std::ptr::null_mut();
            let message = expect_panic(|| {
                nuwa_ffi::nogil! {
                    // SAFETY: the main interpreter is alive; nothing is
                    // attached here (the block released `sub`).
                    unsafe {
                        stray = new_state(main_interp as *mut c_void);
                        restore(stray);
                    }
                }
            })?;
            // SAFETY: the thread-local getter.
            let now = unsafe { unchecked() };
            let name = which(now, sub, stray);
            // SAFETY: make the stray state current (which detaches `sub`),
            // clear and delete it, then end the subinterpreter from its own
            // state.
            unsafe {
                swap(stray);
                clear(stray);
                delete_current();
                restore(sub);
                end_interpreter(sub);
            }
            ensure!(now == sub, "after the panic the current state is {name} ({message})");
            Ok(message)
        })
        .join()
    };
    let message = result.map_err(|_| "the thread panicked".to_string())??;
    ensure!(message.contains("nuwa detached it"), "{message}");
    py.run("nuwa_x = [i for i in range(100)]")?;
    prove_release_after_subinterpreters(py, "after the subinterpreter thread")?;
    py.finalize()?;
    passed()
}
