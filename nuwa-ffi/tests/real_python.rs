//! nuwa-ffi against a real CPython, embedded in this test's processes.
//!
//! A `harness = false` test: `main` is the runner. Every scenario runs in a
//! child process (this binary again, with `--scenario NAME`) under a hard
//! timeout, because what it looks for are deadlocks, aborts and crashes.
//!
//! - `NUWA_TEST_PYTHON` names the interpreter whose shared libpython is
//!   embedded (default `python3`); it is asked for the library's path. With no
//!   such interpreter or no shared libpython, the test prints
//!   `real_python: SKIPPED (...)` and passes, or fails if
//!   `NUWA_REQUIRE_PYTHON=1`.
//! - Arguments without a dash filter the scenarios by substring (`--exact`:
//!   by name), so `cargo test -p nuwa-ffi --test real_python -- shutdown`
//!   runs the shutdown ones. libtest's other flags are accepted and ignored;
//!   `--list` lists the scenarios the way `cargo nextest` expects.
//!
//! The scenarios (each one can fail; every wait in them is bounded):
//!
//! - `release_proven`, `assume_gil_held`: a block on the main thread lets a
//!   Python thread run `gc.collect()` and set the flag the block waits for;
//!   `nuwa_ffi::init()` reports the version and held check expected.
//! - `python_threads_call_in`: four Python threads call a Rust function whose
//!   block waits for all four (and for a fifth thread's `gc.collect()`).
//! - `ensured_rust_thread`: a Rust thread attached with `PyGILState_Ensure`
//!   releases; a nested block does not.
//! - `nested`: the outer block releases, the inner one does not.
//! - `foreign_thread`, `foreign_thread_while_released`: a thread without a
//!   Python thread state never releases, 1000 times, while the main thread
//!   holds the GIL, or has released it to nobody or to a busy Python thread.
//! - `panic_in_block`: the GIL is held again after a caught panic and after
//!   `nogil_catch`.
//! - `before_init`, `after_finalize`: without an interpreter, blocks run and
//!   release nothing.
//! - `shutdown_daemon_block_ends` (10 children), `shutdown_tight_loop` (3): a
//!   daemon thread's block ends while `Py_FinalizeEx` runs; CPython 3.13 and
//!   older end such a thread in its reacquire, and no Rust frame may unwind.
//! - `stop_the_world` (free-threaded builds only): `gc.collect()` gets through
//!   while four attached threads run blocks, and, as a control, does not while
//!   they spin without releasing.
//!
//! No pyo3 and no link to libpython: the child opens libpython with
//! `RTLD_NOW | RTLD_GLOBAL` before any block runs (so that nuwa-ffi's own
//! `dlsym` finds it), and the few C API functions used here are declared below
//! and looked up with libloading. Python calls back into Rust through
//! `ctypes.PYFUNCTYPE` (the GIL stays held during the call, as for an
//! extension function) at addresses passed in as integers.

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    real::main()
}

#[cfg(not(unix))]
fn main() -> std::process::ExitCode {
    println!("real_python: SKIPPED (embedding CPython is tested on Unix only)");
    if std::env::var("NUWA_REQUIRE_PYTHON").is_ok_and(|v| v == "1") {
        println!("real_python: FAILED: NUWA_REQUIRE_PYTHON=1");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(unix)]
mod real {
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
    use nuwa_ffi::{CPython, GilHeld, GilOps, Guard, HeldCheck};

    // -----------------------------------------------------------------------
    // The scenarios
    // -----------------------------------------------------------------------

    struct Scenario {
        name: &'static str,
        /// How many children run it (each must pass).
        runs: u32,
        run: fn(&Target) -> Outcome,
    }

    const SCENARIOS: &[Scenario] = &[
        Scenario {
            name: "release_proven",
            runs: 1,
            run: release_proven,
        },
        Scenario {
            name: "python_threads_call_in",
            runs: 1,
            run: python_threads_call_in,
        },
        Scenario {
            name: "ensured_rust_thread",
            runs: 1,
            run: ensured_rust_thread,
        },
        Scenario {
            name: "nested",
            runs: 1,
            run: nested,
        },
        Scenario {
            name: "foreign_thread",
            runs: 1,
            run: foreign_thread,
        },
        Scenario {
            name: "foreign_thread_while_released",
            runs: 1,
            run: foreign_thread_while_released,
        },
        Scenario {
            name: "panic_in_block",
            runs: 1,
            run: panic_in_block,
        },
        Scenario {
            name: "before_init",
            runs: 1,
            run: before_init,
        },
        Scenario {
            name: "after_finalize",
            runs: 1,
            run: after_finalize,
        },
        Scenario {
            name: "shutdown_daemon_block_ends",
            runs: 10,
            run: shutdown_daemon_block_ends,
        },
        Scenario {
            name: "shutdown_tight_loop",
            runs: 3,
            run: shutdown_tight_loop,
        },
        Scenario {
            name: "assume_gil_held",
            runs: 1,
            run: assume_gil_held,
        },
        Scenario {
            name: "stop_the_world",
            runs: 1,
            run: stop_the_world,
        },
    ];

    /// A scenario's verdict, from inside the child.
    enum Pass {
        /// Passed, with an optional note for the report.
        Ok(String),
        Skipped(String),
    }

    type Outcome = Result<Pass, String>;

    fn passed() -> Outcome {
        Ok(Pass::Ok(String::new()))
    }

    macro_rules! ensure {
        ($cond:expr, $($msg:tt)+) => {
            if !$cond {
                return Err(format!($($msg)+).into());
            }
        };
    }

    /// How long a scenario waits for something that proves a release.
    const WAIT: Duration = Duration::from_secs(10);
    /// How long the runner lets a child live.
    const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

    // --- 1 ----------------------------------------------------------------

    /// A block on the main thread releases the GIL: a Python thread runs
    /// `gc.collect()` and sets a flag while the block waits for that flag.
    fn release_proven(target: &Target) -> Outcome {
        let py = start(target)?;
        let found = check_resolution(target)?;
        ensure!(
            py.gil_check() == 1,
            "after Py_InitializeEx the main thread does not hold the GIL"
        );
        prove_release(py, &CPython, "nogil!")?;
        // SAFETY: dropped at the end of the statement, on this thread.
        let released = unsafe { Guard::release(CPython) }.released();
        ensure!(released, "Guard::release(CPython).released() is false");
        ensure!(py.gil_check() == 1, "the GIL is not held after the guard");
        py.run("nuwa_x = sum(i * i for i in range(1000))")?;
        py.finalize()?;
        Ok(Pass::Ok(found))
    }

    /// What `nuwa_ffi::init` must report for this interpreter.
    fn check_resolution(target: &Target) -> Result<String, String> {
        let found = nuwa_ffi::init();
        ensure!(
            found.python_found() && found.can_release(),
            "nuwa_ffi::init(): {found}"
        );
        ensure!(found.missing().is_empty(), "nuwa_ffi::init(): {found:?}");
        let (major, minor, _) = target.version;
        ensure!(
            found.version() == Some((major, minor)),
            "nuwa_ffi::init() reports version {:?}, the interpreter is {major}.{minor}",
            found.version()
        );
        let expected = if (major, minor) >= (3, 13) {
            HeldCheck::ThreadLocal {
                symbol: "PyThreadState_GetUnchecked",
            }
        } else if (major, minor) == (3, 12) {
            HeldCheck::ThreadLocal {
                symbol: "_PyThreadState_UncheckedGet",
            }
        } else {
            HeldCheck::CompareWithThisThread {
                symbol: "_PyThreadState_UncheckedGet",
            }
        };
        ensure!(
            found.held_check() == expected,
            "nuwa_ffi::init() held check {:?}, expected {expected:?}",
            found.held_check()
        );
        Ok(found.to_string())
    }

    /// Proves that a block through `ops` on this thread (which holds the GIL)
    /// releases it: a Python thread waits until the block has started, runs
    /// `gc.collect()` (which needs the GIL, or on a free-threaded build every
    /// thread detached) and sets a flag, which the block waits for, bounded.
    fn prove_release<G: GilOps>(py: &Py, ops: &G, what: &str) -> Result<(), String> {
        FLAGS[ENTERED].store(0, SeqCst);
        FLAGS[GO].store(0, SeqCst);
        py.run(&format!(
            "nuwa_proof = nuwa_thread(lambda: (nuwa_wait({ENTERED}), gc.collect(), _nuwa_set({GO}, 1)))"
        ))?;
        let deadline = Instant::now() + WAIT;
        let (went, inside) = nuwa_ffi::nogil!(ops => {
            FLAGS[ENTERED].store(1, SeqCst);
            let inside = py.gil_check();
            (wait_flag(GO, 1, deadline), inside)
        });
        ensure!(
            went,
            "{what}: a Python thread could not run gc.collect() and set a flag within {WAIT:?} \
             while the block waited for it: the block did not release the GIL"
        );
        ensure!(
            inside == 0,
            "{what}: PyGILState_Check() was {inside} inside the block, expected 0"
        );
        ensure!(
            py.gil_check() == 1,
            "{what}: PyGILState_Check() is not 1 after the block: the GIL was not taken back"
        );
        py.run("nuwa_join(nuwa_proof)")?;
        check_python_errors()
    }

    // --- 2 ----------------------------------------------------------------

    static BARRIER_DEADLINE: OnceLock<Instant> = OnceLock::new();

    /// Called by four Python threads at once: meets the others inside the
    /// block, which is possible only if all four released the GIL.
    ///
    /// Returns 1 if so; 2 if the four never were in their blocks together;
    /// 3 if `gc.collect()` on a fifth thread could not run meanwhile; 4 if
    /// `PyGILState_Check()` was not 0 inside the block.
    extern "C" fn rp_barrier_block() -> c_longlong {
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

    fn python_threads_call_in(target: &Target) -> Outcome {
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
    fn ensured_rust_thread(target: &Target) -> Outcome {
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
                            unsafe { Guard::release(CPython) }.released()
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

    fn nested(target: &Target) -> Outcome {
        let py = start(target)?;
        {
            ensure!(
                nuwa_ffi::gil_is_held(),
                "gil_is_held() is false on the main thread"
            );
            // SAFETY: dropped at the end of this scope (or on an early
            // return), on this thread.
            let outer = unsafe { Guard::release(CPython) };
            ensure!(
                !nuwa_ffi::gil_is_held(),
                "gil_is_held() is true inside a block"
            );
            ensure!(
                outer.released(),
                "the outer block released nothing although the main thread held the GIL"
            );
            ensure!(py.gil_check() == 0, "GIL still held inside the outer block");
            // SAFETY: as above.
            let inner = unsafe { Guard::release(CPython) };
            ensure!(
                !inner.released(),
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

    // --- 4 ----------------------------------------------------------------

    /// What a thread that Python does not know sees: never a release.
    fn foreign_blocks(py: &Py, i: u32) -> Result<(), String> {
        ensure!(
            py.gil_check() == 0,
            "PyGILState_Check() is not 0 on a thread without a Python thread state"
        );
        ensure!(
            !nuwa_ffi::gil_is_held(),
            "gil_is_held() is true on a thread without a Python thread state"
        );
        // SAFETY: dropped at the end of the statement, on this thread.
        let released = unsafe { Guard::release(CPython) }.released();
        ensure!(
            !released,
            "a thread without a Python thread state released the GIL (another thread's)"
        );
        let value = nuwa_ffi::nogil! { i.wrapping_mul(3) };
        ensure!(value == i.wrapping_mul(3), "nogil! evaluated to {value}");
        let caught = nuwa_ffi::nogil_catch(|_| i + 1);
        ensure!(
            matches!(caught, Ok(v) if v == i + 1),
            "nogil_catch returned {caught:?}"
        );
        Ok(())
    }

    fn foreign_rounds(py: &'static Py, rounds: u32) -> Result<(), String> {
        for i in 0..rounds {
            let result = thread::spawn(move || foreign_blocks(py, i))
                .join()
                .map_err(|_| format!("foreign thread {i} panicked"))?;
            result.map_err(|e| format!("foreign thread {i}: {e}"))?;
        }
        Ok(())
    }

    fn foreign_thread(target: &Target) -> Outcome {
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

    fn foreign_thread_while_released(target: &Target) -> Outcome {
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
                let result = foreign_rounds(py, 1000);
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

    // --- 5 ----------------------------------------------------------------

    fn panic_in_block(target: &Target) -> Outcome {
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
        let result = nuwa_ffi::nogil_catch(|_| -> u32 {
            FLAGS[GIL_CHECK_IN_BLOCK].store(i64::from(py.gil_check()), SeqCst);
            panic!("caught {} with the GIL released", 42)
        });
        panic::set_hook(previous);
        match result {
            Ok(v) => return Err(format!("nogil_catch returned Ok({v}) after a panic")),
            Err(panicked) => ensure!(
                panicked.message() == Some("caught 42 with the GIL released"),
                "nogil_catch's message: {:?}",
                panicked.message()
            ),
        }
        let inside = FLAGS[GIL_CHECK_IN_BLOCK].load(SeqCst);
        ensure!(
            inside == 0,
            "PyGILState_Check() was {inside} inside nogil_catch"
        );
        ensure!(
            py.gil_check() == 1,
            "the GIL is not held after nogil_catch returned Err"
        );
        py.run("nuwa_x = sum(nuwa_x)")?;
        let ok = nuwa_ffi::nogil_catch(|_| 6 * 7);
        ensure!(matches!(ok, Ok(42)), "nogil_catch(|| 6 * 7) = {ok:?}");
        prove_release(py, &CPython, "after the panics")?;
        py.finalize()?;
        passed()
    }

    // --- 6 ----------------------------------------------------------------

    /// Blocks in a process without an initialised interpreter: nothing is
    /// released, and the body runs.
    fn check_nothing_released(py: &'static Py, when: &str) -> Result<(), String> {
        ensure!(!py.is_initialized(), "{when}: Py_IsInitialized() is true");
        // SAFETY: dropped at the end of the statement, on this thread.
        let released = unsafe { Guard::release(CPython) }.released();
        ensure!(!released, "{when}: a block released the GIL");
        let value = nuwa_ffi::nogil! { 2 + 2 };
        ensure!(value == 4, "{when}: nogil! evaluated to {value}");
        let caught = nuwa_ffi::nogil_catch(|_| 5);
        ensure!(matches!(caught, Ok(5)), "{when}: nogil_catch: {caught:?}");
        let other = thread::spawn(|| {
            // SAFETY: dropped at the end of the statement, on this thread.
            unsafe { Guard::release(CPython) }.released()
        })
        .join()
        .map_err(|_| format!("{when}: a block on another thread panicked"))?;
        ensure!(!other, "{when}: a block on another thread released the GIL");
        Ok(())
    }

    fn before_init(target: &Target) -> Outcome {
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

    fn after_finalize(target: &Target) -> Outcome {
        let py = start(target)?;
        prove_release(py, &CPython, "before Py_FinalizeEx")?;
        py.finalize()?;
        check_nothing_released(py, "after Py_FinalizeEx")?;
        passed()
    }

    // --- 7 ----------------------------------------------------------------

    const UNWOUND_MARKER: &str = "real_python: a Rust frame was unwound (the Drop of a local ran, its function never completed)";

    /// A local whose `Drop` records whether its function was left without
    /// completing, that is, unwound.
    struct UnwindWitness {
        completed: bool,
    }

    impl Drop for UnwindWitness {
        fn drop(&mut self) {
            if !self.completed {
                FLAGS[UNWOUND].fetch_add(1, SeqCst);
                eprintln!("{UNWOUND_MARKER}");
            }
        }
    }

    fn gil_check_here() -> i64 {
        PY.get().map_or(-1, |py| i64::from(py.gil_check()))
    }

    /// Run by a Python daemon thread: a block that ends only when `__del__`
    /// runs during `Py_FinalizeEx`, so that the reacquire happens while the
    /// interpreter finalizes.
    extern "C" fn rp_daemon_block() {
        let mut witness = UnwindWitness { completed: false };
        nuwa_ffi::nogil! {
            FLAGS[GIL_CHECK_IN_BLOCK].store(gil_check_here(), SeqCst);
            FLAGS[IN_BLOCK].store(1, SeqCst);
            let done = wait_flag(DEL_RAN, 1, Instant::now() + Duration::from_secs(30));
            FLAGS[WAIT_RESULT].store(if done { 1 } else { 2 }, SeqCst);
        }
        witness.completed = true;
        FLAGS[RETURNED].fetch_add(1, SeqCst);
    }

    /// A garbage cycle whose `__del__` sets `DEL_RAN` (and records
    /// `sys.is_finalizing()`) and then sleeps with the GIL released. With the
    /// collector disabled, only the collection in `Py_FinalizeEx` runs it.
    fn garbage_cycle() -> String {
        format!(
            r#"
gc.disable()
class NuwaCycle:
    def __del__(self, _set=_nuwa_set, _sleep=time.sleep, _finalizing=sys.is_finalizing):
        _set({DEL_FINALIZING}, 1 if _finalizing() else 2)
        _set({DEL_RAN}, 1)
        _sleep(0.3)
nuwa_cycle = NuwaCycle()
nuwa_cycle.itself = nuwa_cycle
del nuwa_cycle
"#
        )
    }

    /// The checks on `__del__` after `Py_FinalizeEx`.
    fn check_del_ran_finalizing() -> Result<(), String> {
        ensure!(
            FLAGS[DEL_RAN].load(SeqCst) == 1,
            "the cycle's __del__ did not run during Py_FinalizeEx"
        );
        ensure!(
            FLAGS[DEL_FINALIZING].load(SeqCst) == 1,
            "the cycle's __del__ ran with sys.is_finalizing() false"
        );
        Ok(())
    }

    fn shutdown_daemon_block_ends(target: &Target) -> Outcome {
        let py = start(target)?;
        py.run(&format!(
            r#"
nuwa_daemon = threading.Thread(target=nuwa_fn({addr}), daemon=True)
nuwa_daemon.start()
nuwa_wait({IN_BLOCK})
"#,
            addr = rp_daemon_block as *const () as usize,
        ))?;
        py.run(&garbage_cycle())?;
        py.finalize()?;
        // Let the daemon, if it is still going, reach its reacquire.
        thread::sleep(Duration::from_millis(200));
        check_del_ran_finalizing()?;
        ensure!(
            FLAGS[GIL_CHECK_IN_BLOCK].load(SeqCst) == 0,
            "PyGILState_Check() was {} in the daemon's block",
            FLAGS[GIL_CHECK_IN_BLOCK].load(SeqCst)
        );
        ensure!(
            FLAGS[WAIT_RESULT].load(SeqCst) == 1,
            "the daemon's block did not see __del__'s flag"
        );
        let unwound = FLAGS[UNWOUND].load(SeqCst);
        ensure!(
            unwound == 0,
            "a Rust frame was unwound: the Drop of a local in the daemon's function ran \
             without the function completing"
        );
        let returned = FLAGS[RETURNED].load(SeqCst);
        ensure!(
            returned == 0,
            "the daemon thread took the GIL back and returned: the scenario did not \
             exercise a reacquire during finalization"
        );
        passed()
    }

    /// Run in a loop by eight Python daemon threads while the interpreter
    /// finalizes.
    extern "C" fn rp_short_block() -> c_longlong {
        let mut witness = UnwindWitness { completed: false };
        let seed = FLAGS[CALLS].load(SeqCst);
        let value = nuwa_ffi::nogil! {
            let mut acc = seed;
            for i in 0..256 {
                acc = black_box(acc.wrapping_mul(31).wrapping_add(i));
            }
            FLAGS[BLOCK_ENDS].fetch_add(1, SeqCst);
            acc
        };
        witness.completed = true;
        FLAGS[CALLS].fetch_add(1, SeqCst);
        value
    }

    fn shutdown_tight_loop(target: &Target) -> Outcome {
        if target.debug && target.version < (3, 14, 0) {
            // Blocks end at any moment here, so a thread may re-enter
            // take_gil() just as finalization starts; CPython <= 3.13 then
            // frees its thread state while take_gil() still reads it (a
            // CPython race, with or without nuwa), and a debug build, which
            // poisons freed memory, crashes on it now and then.
            return Ok(Pass::Skipped(
                "CPython <= 3.13 debug build: its own take_gil() race at the start of \
                 finalization (scripts/cpython-shutdown-race.py reproduces it without nuwa)"
                    .into(),
            ));
        }
        let py = start(target)?;
        py.run(&format!(
            r#"
nuwa_f = nuwa_fn({addr}, ctypes.c_longlong)
def nuwa_loop():
    while True:
        nuwa_f()
for _ in range(8):
    threading.Thread(target=nuwa_loop, daemon=True).start()
nuwa_wait({CALLS}, 8000)
"#,
            addr = rp_short_block as *const () as usize,
        ))?;
        py.run(&garbage_cycle())?;
        py.finalize()?;
        thread::sleep(Duration::from_millis(300));
        check_del_ran_finalizing()?;
        let unwound = FLAGS[UNWOUND].load(SeqCst);
        ensure!(
            unwound == 0,
            "{unwound} Rust frames were unwound: the Drop of a local ran without its \
             function completing"
        );
        // Blocks that ended but whose function never returned: threads that
        // CPython stopped in the reacquire.
        let calls = FLAGS[CALLS].load(SeqCst);
        let stopped = FLAGS[BLOCK_ENDS].load(SeqCst) - calls;
        ensure!(
            stopped >= 1,
            "no thread was stopped in a reacquire at shutdown ({calls} calls): the \
             scenario did not exercise a reacquire during finalization"
        );
        Ok(Pass::Ok(format!(
            "{calls} calls; {stopped} threads stopped in a reacquire at shutdown"
        )))
    }

    // --- 8 ----------------------------------------------------------------

    fn assume_gil_held(target: &Target) -> Outcome {
        let py = start(target)?;
        ensure!(py.gil_check() == 1, "the main thread does not hold the GIL");
        // SAFETY: every block on it below starts on the main thread, which
        // holds the GIL (checked just above, and again by prove_release
        // before it returns), and none is nested in another block.
        let mut gil = unsafe { GilHeld::new() };
        prove_release(py, &&mut gil, "nogil!(&mut GilHeld => ...)")?;
        // SAFETY: dropped at the end of the statement, on this thread.
        let released = unsafe { Guard::release(&mut gil) }.released();
        ensure!(released, "Guard::release(&mut GilHeld).released() is false");
        ensure!(py.gil_check() == 1, "the GIL is not held after the guard");
        py.run("nuwa_x = 1")?;
        py.finalize()?;
        passed()
    }

    // --- 9 ----------------------------------------------------------------

    /// One spinning thread's account.
    #[derive(Debug)]
    struct Spin {
        released: bool,
        iterations: u64,
        checksum: u64,
        /// The gc loop finished while this thread still spun.
        saw_gc_done: bool,
        gc_count_at_end: i64,
    }

    /// Sum of `i * i` for `i` in `0..n`, modulo 2^64, the closed form.
    fn expected_checksum(n: u64) -> u64 {
        let n = u128::from(n);
        if n == 0 {
            0
        } else {
            ((n - 1) * n * (2 * n - 1) / 6) as u64
        }
    }

    /// Computes a checksum in chunks until the gc loop is done or `deadline`.
    fn spin_until_gc_done(released: bool, deadline: Instant) -> Spin {
        FLAGS[ENTERED].fetch_add(1, SeqCst);
        let (mut i, mut sum) = (0u64, 0u64);
        loop {
            for _ in 0..(1 << 16) {
                let x = black_box(i);
                sum = sum.wrapping_add(x.wrapping_mul(x));
                i += 1;
            }
            let saw_gc_done = FLAGS[GC_DONE].load(SeqCst) == 1;
            if saw_gc_done || Instant::now() >= deadline {
                return Spin {
                    released,
                    iterations: i,
                    checksum: sum,
                    saw_gc_done,
                    gc_count_at_end: FLAGS[GC_COUNT].load(SeqCst),
                };
            }
        }
    }

    const GC_ROUNDS: i64 = 20;

    /// Four Rust threads attach with `PyGILState_Ensure` and spin, inside a
    /// block (`release`) or not, while a Python thread runs `gc.collect()`
    /// `GC_ROUNDS` times.
    fn stw_round(py: &'static Py, release: bool, bound: Duration) -> Result<Vec<Spin>, String> {
        for f in [ENTERED, GC_DONE, GC_COUNT] {
            FLAGS[f].store(0, SeqCst);
        }
        py.run(&format!(
            "nuwa_stw = nuwa_thread(nuwa_gc_loop, {GC_ROUNDS})"
        ))?;
        let spinners: Vec<_> = (0..4)
            .map(|_| {
                thread::spawn(move || {
                    let state = py.gilstate_ensure();
                    let deadline = Instant::now() + bound;
                    let spin = if release {
                        // SAFETY: dropped at the end of this block, on this
                        // thread, before PyGILState_Release.
                        let guard = unsafe { Guard::release(CPython) };
                        spin_until_gc_done(guard.released(), deadline)
                    } else {
                        spin_until_gc_done(false, deadline)
                    };
                    py.gilstate_release(state);
                    spin
                })
            })
            .collect();
        // The main thread detaches too while it waits.
        let joined: Vec<_> = nuwa_ffi::nogil! {
            spinners.into_iter().map(|h| h.join()).collect()
        };
        py.run("nuwa_join(nuwa_stw)")?;
        check_python_errors()?;
        let gc_count = FLAGS[GC_COUNT].load(SeqCst);
        ensure!(
            gc_count == GC_ROUNDS,
            "the gc loop ran {gc_count} of {GC_ROUNDS} collections"
        );
        joined
            .into_iter()
            .map(|r| r.map_err(|_| "a spinning thread panicked".to_string()))
            .collect()
    }

    fn stop_the_world(target: &Target) -> Outcome {
        if !target.free_threaded {
            return Ok(Pass::Skipped(
                "not applicable: a GIL build (no stop-the-world)".into(),
            ));
        }
        let py = start(target)?;
        py.run(&format!(
            r#"
def nuwa_gc_loop(n):
    nuwa_wait({ENTERED}, 4)
    for i in range(n):
        gc.collect()
        _nuwa_set({GC_COUNT}, i + 1)
    _nuwa_set({GC_DONE}, 1)
"#
        ))?;
        let started = Instant::now();
        let real = stw_round(py, true, Duration::from_secs(5))?;
        let real_time = started.elapsed();
        for s in &real {
            ensure!(
                s.checksum == expected_checksum(s.iterations),
                "checksum over {} iterations is {}, expected {}",
                s.iterations,
                s.checksum,
                expected_checksum(s.iterations)
            );
            ensure!(
                s.saw_gc_done,
                "the gc loop did not complete its {GC_ROUNDS} collections within 5 s while \
                 the blocks ran (it reached {}): a block did not detach",
                s.gc_count_at_end
            );
            ensure!(s.released, "a block on an attached thread released nothing");
        }
        // The control: the same threads spin without releasing; the gc loop
        // must not get through while they spin.
        let control = stw_round(py, false, Duration::from_secs(1))?;
        let through: Vec<_> = control.iter().filter(|s| s.saw_gc_done).collect();
        ensure!(
            through.is_empty(),
            "control: the gc loop completed while attached threads spun without releasing \
             ({through:?}), so the real run proves nothing"
        );
        for s in &control {
            ensure!(
                s.checksum == expected_checksum(s.iterations),
                "control checksum wrong: {s:?}"
            );
        }
        let at_end = control.iter().map(|s| s.gc_count_at_end).max().unwrap_or(0);
        py.finalize()?;
        Ok(Pass::Ok(format!(
            "{GC_ROUNDS} collections during 4 blocks in {:.2} s; control: gc blocked \
             ({at_end} collections) for 1 s by 4 attached spinners",
            real_time.as_secs_f64()
        )))
    }

    // -----------------------------------------------------------------------
    // Shared state: flags that Python and Rust both read and write
    // -----------------------------------------------------------------------

    const PY_ERRORS: usize = 0;
    const ENTERED: usize = 1;
    const GO: usize = 2;
    const ARRIVED: usize = 3;
    const COLLECTED: usize = 4;
    const DEL_RAN: usize = 5;
    const DEL_FINALIZING: usize = 6;
    const IN_BLOCK: usize = 7;
    const GIL_CHECK_IN_BLOCK: usize = 8;
    const WAIT_RESULT: usize = 9;
    const RETURNED: usize = 10;
    const UNWOUND: usize = 11;
    const CALLS: usize = 12;
    const BLOCK_ENDS: usize = 13;
    const STOP: usize = 14;
    const PROGRESS: usize = 15;
    const GC_DONE: usize = 16;
    const GC_COUNT: usize = 17;

    static FLAGS: [AtomicI64; 32] = [const { AtomicI64::new(0) }; 32];

    fn flag_at(i: c_int) -> Option<&'static AtomicI64> {
        usize::try_from(i).ok().and_then(|i| FLAGS.get(i))
    }

    extern "C" fn rp_set(i: c_int, value: c_longlong) {
        if let Some(f) = flag_at(i) {
            f.store(value, SeqCst);
        }
    }

    extern "C" fn rp_get(i: c_int) -> c_longlong {
        flag_at(i).map_or(-1, |f| f.load(SeqCst))
    }

    extern "C" fn rp_add(i: c_int, value: c_longlong) -> c_longlong {
        flag_at(i).map_or(-1, |f| f.fetch_add(value, SeqCst) + value)
    }

    /// Messages from Python: exceptions (through `sys.excepthook` and the
    /// threads' wrapper) and notes.
    static NOTES: Mutex<Vec<String>> = Mutex::new(Vec::new());

    extern "C" fn rp_note(text: *const c_char) {
        if text.is_null() {
            return;
        }
        // SAFETY: ctypes passes the NUL-terminated buffer of a `bytes` object
        // that lives for the duration of the call.
        let text = unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned();
        NOTES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(text);
    }

    fn notes() -> String {
        NOTES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("; ")
    }

    fn check_python_errors() -> Result<(), String> {
        let errors = FLAGS[PY_ERRORS].load(SeqCst);
        ensure!(
            errors == 0,
            "{errors} Python threads raised: {} (tracebacks on stderr)",
            notes()
        );
        Ok(())
    }

    /// Waits, bounded, for `FLAGS[i] >= value`.
    fn wait_flag(i: usize, value: i64, deadline: Instant) -> bool {
        loop {
            if FLAGS[i].load(SeqCst) >= value {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_micros(100));
        }
    }

    /// Helpers every scenario's Python code can use.
    fn prelude() -> String {
        format!(
            r#"
import ctypes, gc, sys, threading, time, traceback
_nuwa_set = ctypes.PYFUNCTYPE(None, ctypes.c_int, ctypes.c_longlong)({set})
_nuwa_get = ctypes.PYFUNCTYPE(ctypes.c_longlong, ctypes.c_int)({get})
_nuwa_add = ctypes.PYFUNCTYPE(ctypes.c_longlong, ctypes.c_int, ctypes.c_longlong)({add})
_nuwa_note = ctypes.PYFUNCTYPE(None, ctypes.c_char_p)({note})

def nuwa_note(text):
    _nuwa_note(str(text).encode("utf-8", "replace"))

def _nuwa_excepthook(kind, value, tb):
    nuwa_note("".join(traceback.format_exception_only(kind, value)).strip())
    sys.__excepthook__(kind, value, tb)
sys.excepthook = _nuwa_excepthook

def nuwa_fn(address, restype=None):
    return ctypes.PYFUNCTYPE(restype)(address)

def nuwa_wait(flag, value=1, timeout={wait}):
    deadline = time.monotonic() + timeout
    while _nuwa_get(flag) < value:
        if time.monotonic() > deadline:
            raise TimeoutError("flag %d stayed below %d for %s s" % (flag, value, timeout))
        time.sleep(0.001)

def nuwa_thread(target, *args):
    def run():
        try:
            target(*args)
        except BaseException:
            kind, value = sys.exc_info()[:2]
            nuwa_note("%s: %s" % (threading.current_thread().name,
                "".join(traceback.format_exception_only(kind, value)).strip()))
            traceback.print_exc()
            _nuwa_add({errors}, 1)
    t = threading.Thread(target=run)
    t.start()
    return t

def nuwa_join(t, timeout={join}):
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError("thread %s still running after %s s" % (t.name, timeout))
"#,
            set = rp_set as *const () as usize,
            get = rp_get as *const () as usize,
            add = rp_add as *const () as usize,
            note = rp_note as *const () as usize,
            errors = PY_ERRORS,
            wait = WAIT.as_secs(),
            join = 3 * WAIT.as_secs(),
        )
    }

    // -----------------------------------------------------------------------
    // The embedded interpreter
    // -----------------------------------------------------------------------

    /// The interpreter the runner chose, as the child learns it.
    struct Target {
        lib: String,
        version: (u8, u8, u8),
        free_threaded: bool,
        debug: bool,
    }

    impl Target {
        fn from_env() -> Result<Target, String> {
            let var = |name: &str| env::var(name).map_err(|_| format!("{name} is not set"));
            let lib = var("NUWA_RP_LIBPYTHON")?;
            let version = var("NUWA_RP_VERSION")?;
            let mut parts = version.split('.').map(|p| p.parse::<u8>());
            let (Some(Ok(major)), Some(Ok(minor)), Some(Ok(micro))) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("NUWA_RP_VERSION={version} is not X.Y.Z"));
            };
            Ok(Target {
                lib,
                version: (major, minor, micro),
                free_threaded: var("NUWA_RP_FREE_THREADED")? == "1",
                debug: var("NUWA_RP_DEBUG")? == "1",
            })
        }
    }

    type InitializeExFn = unsafe extern "C" fn(c_int);
    type IntFn = unsafe extern "C" fn() -> c_int;
    type RunStringFlagsFn = unsafe extern "C" fn(*const c_char, *mut c_void) -> c_int;
    type GilStateReleaseFn = unsafe extern "C" fn(c_int);

    /// The C API functions this test calls itself.
    struct Py {
        initialize_ex: InitializeExFn,
        finalize_ex: IntFn,
        is_initialized: IntFn,
        run_simple_string_flags: RunStringFlagsFn,
        gilstate_check: IntFn,
        /// Returns a `PyGILState_STATE`, a C enum.
        gilstate_ensure: IntFn,
        gilstate_release: GilStateReleaseFn,
    }

    static PY: OnceLock<Py> = OnceLock::new();

    /// Copies the symbol `name` out of `lib`.
    ///
    /// # Safety
    ///
    /// `T` is the type of the symbol `name`.
    unsafe fn symbol<T: Copy>(lib: &'static Library, name: &str) -> Result<T, String> {
        // SAFETY: the caller's contract; `lib` is never unloaded.
        unsafe { lib.get::<T>(name) }
            .map(|s| *s)
            .map_err(|e| format!("{name}: {e}"))
    }

    /// Loads libpython with `RTLD_NOW | RTLD_GLOBAL`, so that nuwa-ffi's
    /// `dlsym` and the interpreter's extension modules see its symbols.
    fn load(target: &Target) -> Result<&'static Py, String> {
        // SAFETY: libpython's initialisers only set up its own static data,
        // and the handle is leaked below, so it is never unloaded.
        let lib = unsafe { Library::open(Some(&target.lib), RTLD_NOW | RTLD_GLOBAL) }
            .map_err(|e| format!("dlopen({}): {e}", target.lib))?;
        let lib: &'static Library = Box::leak(Box::new(lib));
        // SAFETY: each field's type is the C signature of the function of
        // that name in CPython 3.8 and later (PyGILState_STATE is an int).
        let py = unsafe {
            Py {
                initialize_ex: symbol(lib, "Py_InitializeEx")?,
                finalize_ex: symbol(lib, "Py_FinalizeEx")?,
                is_initialized: symbol(lib, "Py_IsInitialized")?,
                run_simple_string_flags: symbol(lib, "PyRun_SimpleStringFlags")?,
                gilstate_check: symbol(lib, "PyGILState_Check")?,
                gilstate_ensure: symbol(lib, "PyGILState_Ensure")?,
                gilstate_release: symbol(lib, "PyGILState_Release")?,
            }
        };
        ensure!(PY.set(py).is_ok(), "libpython loaded twice");
        PY.get().ok_or_else(|| "unreachable".to_string())
    }

    /// Loads and initialises the interpreter, and runs the prelude.
    fn start(target: &Target) -> Result<&'static Py, String> {
        let py = load(target)?;
        py.initialize()?;
        Ok(py)
    }

    impl Py {
        fn is_initialized(&self) -> bool {
            // SAFETY: Py_IsInitialized may be called at any time.
            unsafe { (self.is_initialized)() != 0 }
        }

        /// `PyGILState_Check()`: 1 if this thread holds the GIL.
        fn gil_check(&self) -> c_int {
            // SAFETY: PyGILState_Check may be called at any time, on any
            // thread, with or without the GIL.
            unsafe { (self.gilstate_check)() }
        }

        /// `Py_InitializeEx(0)` on this (the main) thread, then the prelude.
        fn initialize(&self) -> Result<(), String> {
            ensure!(!self.is_initialized(), "already initialised");
            // SAFETY: called once, before the interpreter exists; PYTHONHOME
            // was set by the runner.
            unsafe { (self.initialize_ex)(0) };
            ensure!(self.is_initialized(), "Py_InitializeEx(0) failed");
            self.run(&prelude())
        }

        /// Runs Python code in `__main__` with `PyRun_SimpleString`.
        fn run(&self, code: &str) -> Result<(), String> {
            ensure!(
                self.is_initialized() && self.gil_check() == 1,
                "cannot run Python code: the interpreter is not initialised or this \
                 thread does not hold the GIL"
            );
            let code = CString::new(code).map_err(|e| e.to_string())?;
            // SAFETY: the interpreter is initialised and this thread holds its
            // GIL (both checked above); `code` is NUL-terminated; a null
            // `PyCompilerFlags*` is allowed.
            let rc = unsafe { (self.run_simple_string_flags)(code.as_ptr(), std::ptr::null_mut()) };
            ensure!(
                rc == 0,
                "Python raised: {} (traceback on stderr)",
                NOTES
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .last()
                    .map_or("?", String::as_str)
            );
            Ok(())
        }

        /// `Py_FinalizeEx()` on the main thread, which holds the GIL.
        fn finalize(&self) -> Result<(), String> {
            ensure!(
                self.is_initialized() && self.gil_check() == 1,
                "cannot finalize: the interpreter is not initialised or the main thread \
                 does not hold the GIL"
            );
            // SAFETY: called on the thread that initialised the interpreter,
            // which holds the GIL (checked above).
            let rc = unsafe { (self.finalize_ex)() };
            ensure!(rc == 0, "Py_FinalizeEx() returned {rc}");
            Ok(())
        }

        /// `PyGILState_Ensure()`, on a thread of an initialised interpreter.
        fn gilstate_ensure(&self) -> c_int {
            // SAFETY: the scenarios call this only while the interpreter is
            // initialised, on threads that do not hold the GIL.
            unsafe { (self.gilstate_ensure)() }
        }

        /// `PyGILState_Release(state)`, with the state `gilstate_ensure`
        /// returned on this thread.
        fn gilstate_release(&self, state: c_int) {
            // SAFETY: the scenarios pass the state returned by
            // PyGILState_Ensure on this thread, once, with the thread attached.
            unsafe { (self.gilstate_release)(state) }
        }
    }

    // -----------------------------------------------------------------------
    // The child: runs one scenario
    // -----------------------------------------------------------------------

    const RESULT_MARK: &str = "real_python-result:";

    fn child(name: &str) -> ExitCode {
        let outcome = match SCENARIOS.iter().find(|s| s.name == name) {
            Some(scenario) => Target::from_env().and_then(|target| (scenario.run)(&target)),
            None => Err(format!("unknown scenario {name:?}")),
        };
        let (line, code) = match outcome {
            Ok(Pass::Ok(note)) => (format!("ok {note}"), ExitCode::SUCCESS),
            Ok(Pass::Skipped(why)) => (format!("skip {why}"), ExitCode::SUCCESS),
            Err(why) => (
                format!("fail {}", why.replace('\n', " | ")),
                ExitCode::FAILURE,
            ),
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{RESULT_MARK} {line}");
        let _ = out.flush();
        code
    }

    // -----------------------------------------------------------------------
    // The runner
    // -----------------------------------------------------------------------

    /// libtest's command line, as far as it matters here.
    #[derive(Default)]
    struct Options {
        filters: Vec<String>,
        skips: Vec<String>,
        exact: bool,
        list: bool,
        terse: bool,
        ignored_only: bool,
    }

    impl Options {
        fn parse(args: &[String]) -> Options {
            let mut opts = Options::default();
            let mut args = args.iter();
            while let Some(arg) = args.next() {
                let (flag, inline) = match arg.split_once('=') {
                    Some((flag, value)) if arg.starts_with("--") => (flag, Some(value.to_string())),
                    _ => (arg.as_str(), None),
                };
                let mut value = || inline.clone().or_else(|| args.next().cloned());
                match flag {
                    "--list" => opts.list = true,
                    "--exact" => opts.exact = true,
                    "--ignored" => opts.ignored_only = true,
                    "--format" => opts.terse = value().as_deref() == Some("terse"),
                    "--skip" => opts.skips.extend(value()),
                    // Flags with a value, ignored.
                    "--test-threads" | "--color" | "--logfile" | "--shuffle-seed" | "-Z" => {
                        let _ = value();
                    }
                    // Any other flag (`--nocapture`, `-q`, `--include-ignored`, ...).
                    _ if flag.starts_with('-') => {}
                    _ => opts.filters.push(arg.clone()),
                }
            }
            opts
        }

        fn selects(&self, name: &str) -> bool {
            let matches = |f: &String| {
                if self.exact {
                    name == f
                } else {
                    name.contains(f.as_str())
                }
            };
            (self.filters.is_empty() || self.filters.iter().any(matches))
                && !self.skips.iter().any(matches)
        }
    }

    /// What the runner learned about the interpreter.
    struct PythonInfo {
        version: String,
        full_version: String,
        build: String,
        free_threaded: bool,
        debug: bool,
        lib: PathBuf,
        home: String,
    }

    const QUERY: &str = r#"
import sys, sysconfig
def v(name):
    x = sysconfig.get_config_var(name)
    return "" if x is None else str(x)
print("version=%d.%d.%d" % sys.version_info[:3])
print("full_version=" + sys.version.replace("\n", " "))
print("abiflags=" + getattr(sys, "abiflags", ""))
print("prefix=" + sys.prefix)
print("exec_prefix=" + sys.exec_prefix)
for name in ("LIBDIR", "LDLIBRARY", "INSTSONAME", "Py_ENABLE_SHARED", "Py_GIL_DISABLED", "Py_DEBUG"):
    print(name + "=" + v(name))
"#;

    /// Asks `python` for its shared library.
    fn discover(python: &str) -> Result<PythonInfo, String> {
        let out = Command::new(python)
            .args(["-I", "-c", QUERY])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run it: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "it failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or("")
                .to_string()
        };
        let version = get("version");
        let mut numbers = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
        if (major, minor) < (3, 8) {
            return Err(format!(
                "it is Python {version}; nuwa-ffi is tested with 3.8 and later"
            ));
        }
        let libdir = get("LIBDIR");
        let candidates: Vec<PathBuf> = [get("LDLIBRARY"), get("INSTSONAME")]
            .into_iter()
            .filter(|name| !name.is_empty() && !name.ends_with(".a"))
            .map(|name| Path::new(&libdir).join(name))
            .collect();
        let Some(lib) = candidates.iter().find(|p| p.is_file()).cloned() else {
            return Err(format!(
                "Python {version}, Py_ENABLE_SHARED={}, LDLIBRARY={}, INSTSONAME={}: \
                 none of {candidates:?} exists",
                get("Py_ENABLE_SHARED"),
                get("LDLIBRARY"),
                get("INSTSONAME")
            ));
        };
        let free_threaded = get("Py_GIL_DISABLED") == "1";
        let debug = get("Py_DEBUG") == "1" || get("abiflags").contains('d');
        let build = match (free_threaded, debug) {
            (true, true) => "free-threaded+debug",
            (true, false) => "free-threaded",
            (false, true) => "debug",
            (false, false) => "gil",
        };
        let (prefix, exec_prefix) = (get("prefix"), get("exec_prefix"));
        let home = if prefix == exec_prefix {
            prefix
        } else {
            format!("{prefix}:{exec_prefix}")
        };
        Ok(PythonInfo {
            version,
            full_version: get("full_version"),
            build: build.to_string(),
            free_threaded,
            debug,
            lib,
            home,
        })
    }

    enum Verdict {
        Ok(String),
        Skipped(String),
        Failed(String),
    }

    /// What the runner keeps of a child.
    struct Run {
        verdict: Verdict,
        stdout: String,
        stderr: String,
    }

    /// Output that means a crash even if the exit code says otherwise.
    const CRASH_MARKERS: &[&str] = &[
        UNWOUND_MARKER,
        "panic in a function that cannot unwind",
        "Fatal Python error",
        "panicked while processing panic",
        "thread caused non-unwinding panic",
    ];

    fn signal_name(signal: i32) -> &'static str {
        match signal {
            4 => " (SIGILL)",
            5 => " (SIGTRAP)",
            6 => " (SIGABRT)",
            7 => " (SIGBUS)",
            9 => " (SIGKILL)",
            11 => " (SIGSEGV)",
            _ => "",
        }
    }

    fn judge(status: Option<ExitStatus>, stdout: &str, stderr: &str) -> Verdict {
        let Some(status) = status else {
            return Verdict::Failed(format!(
                "timeout: killed after {} s",
                CHILD_TIMEOUT.as_secs()
            ));
        };
        let result = stdout
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(RESULT_MARK))
            .map(str::trim);
        if let Some(why) = result.and_then(|r| r.strip_prefix("fail")) {
            return Verdict::Failed(why.trim().to_string());
        }
        // What stderr says about a crash, to go with the exit status.
        let said: Vec<&str> = CRASH_MARKERS
            .iter()
            .copied()
            .filter(|m| stderr.contains(*m))
            .collect();
        let said = if said.is_empty() {
            String::new()
        } else {
            format!("; stderr says {}", said.join(" / "))
        };
        if let Some(signal) = status.signal() {
            return Verdict::Failed(format!(
                "killed by signal {signal}{}{said}",
                signal_name(signal)
            ));
        }
        if !status.success() {
            return Verdict::Failed(format!("{status} without a result"));
        }
        if !said.is_empty() {
            return Verdict::Failed(format!("exit code 0{said}"));
        }
        match result {
            Some(r) if r.starts_with("ok") => Verdict::Ok(r["ok".len()..].trim().to_string()),
            Some(r) if r.starts_with("skip") => {
                Verdict::Skipped(r["skip".len()..].trim().to_string())
            }
            _ => Verdict::Failed("exit code 0 without a result".to_string()),
        }
    }

    fn read_all(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    }

    /// Runs one scenario in a child, under `CHILD_TIMEOUT`.
    fn run_child(exe: &Path, name: &str, info: &PythonInfo) -> Run {
        let spawned = Command::new(exe)
            .args(["--scenario", name])
            .env("NUWA_RP_LIBPYTHON", &info.lib)
            .env("NUWA_RP_VERSION", &info.version)
            .env(
                "NUWA_RP_FREE_THREADED",
                if info.free_threaded { "1" } else { "0" },
            )
            .env("NUWA_RP_DEBUG", if info.debug { "1" } else { "0" })
            .env("PYTHONHOME", &info.home)
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("PYTHONPATH")
            .env_remove("PYTHONSTARTUP")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                return Run {
                    verdict: Verdict::Failed(format!("cannot start {}: {e}", exe.display())),
                    stdout: String::new(),
                    stderr: String::new(),
                };
            }
        };
        let stdout = read_all(child.stdout.take());
        let stderr = read_all(child.stderr.take());
        let deadline = Instant::now() + CHILD_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        let stdout = stdout.join().unwrap_or_default();
        let stderr = stderr.join().unwrap_or_default();
        Run {
            verdict: judge(status, &stdout, &stderr),
            stdout,
            stderr,
        }
    }

    fn print_output(label: &str, text: &str, keep: usize) {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with(RESULT_MARK))
            .collect();
        if lines.is_empty() {
            return;
        }
        let skipped = lines.len().saturating_sub(keep);
        if skipped > 0 {
            println!("    | {label} ({skipped} earlier lines left out):");
        } else {
            println!("    | {label}:");
        }
        for line in &lines[skipped..] {
            println!("    |   {line}");
        }
    }

    pub(crate) fn main() -> ExitCode {
        let args: Vec<String> = env::args().skip(1).collect();
        if let Some(i) = args.iter().position(|a| a == "--scenario") {
            return child(args.get(i + 1).map_or("", String::as_str));
        }
        let opts = Options::parse(&args);
        let selected: Vec<&Scenario> = SCENARIOS.iter().filter(|s| opts.selects(s.name)).collect();

        if opts.list {
            if !opts.ignored_only {
                for scenario in &selected {
                    println!("{}: test", scenario.name);
                }
            }
            if !opts.terse {
                let n = if opts.ignored_only { 0 } else { selected.len() };
                println!("\n{n} tests, 0 benchmarks");
            }
            return ExitCode::SUCCESS;
        }
        if opts.ignored_only {
            println!("real_python: no ignored scenarios");
            return ExitCode::SUCCESS;
        }

        let python = env::var("NUWA_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string());
        let require = env::var("NUWA_REQUIRE_PYTHON").is_ok_and(|v| v == "1");
        let info = match discover(&python) {
            Ok(info) => info,
            Err(why) => {
                println!("real_python: SKIPPED (no shared libpython for {python}: {why})");
                if require {
                    println!(
                        "real_python: FAILED: NUWA_REQUIRE_PYTHON=1 and no usable Python \
                         (set NUWA_TEST_PYTHON to an interpreter with a shared libpython)"
                    );
                    return ExitCode::FAILURE;
                }
                return ExitCode::SUCCESS;
            }
        };
        println!(
            "real_python: {python}: Python {} [{}], build: {}, {}",
            info.version,
            info.full_version,
            info.build,
            info.lib.display()
        );
        let exe = match env::current_exe() {
            Ok(exe) => exe,
            Err(e) => {
                println!("real_python: FAILED: cannot find this test's executable: {e}");
                return ExitCode::FAILURE;
            }
        };
        if selected.is_empty() {
            println!("real_python: no scenario matches {:?}", opts.filters);
        }

        let (mut ok, mut failed, mut skipped) = (0, 0, 0);
        for scenario in selected {
            let started = Instant::now();
            let mut last = None;
            for run in 1..=scenario.runs {
                let result = run_child(&exe, scenario.name, &info);
                let stop = !matches!(result.verdict, Verdict::Ok(_));
                last = Some((run, result));
                if stop {
                    break;
                }
            }
            let Some((run, result)) = last else { continue };
            let took = started.elapsed().as_secs_f64();
            let runs = if scenario.runs > 1 {
                format!("{} runs, ", scenario.runs)
            } else {
                String::new()
            };
            match result.verdict {
                Verdict::Ok(note) => {
                    ok += 1;
                    let note = if note.is_empty() {
                        String::new()
                    } else {
                        format!("; {note}")
                    };
                    println!(
                        "real_python: {} ... ok ({runs}{took:.2} s{note})",
                        scenario.name
                    );
                }
                Verdict::Skipped(why) => {
                    skipped += 1;
                    println!("real_python: {} ... SKIPPED: {why}", scenario.name);
                }
                Verdict::Failed(why) => {
                    failed += 1;
                    let which = if scenario.runs > 1 {
                        format!("run {run} of {}: ", scenario.runs)
                    } else {
                        String::new()
                    };
                    println!("real_python: {} ... FAILED: {which}{why}", scenario.name);
                    print_output("stdout", &result.stdout, 20);
                    print_output("stderr", &result.stderr, 40);
                }
            }
        }
        println!(
            "real_python (Python {}, build: {}): {ok} passed, {failed} failed, {skipped} skipped",
            info.version, info.build
        );
        if failed > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }
}
