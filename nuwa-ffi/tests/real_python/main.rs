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
//! - `release_proven`, `gil_held_token`: a block on the main thread lets a
//!   Python thread run `gc.collect()` and set the flag the block waits for;
//!   `nuwa_ffi::init()` reports the version and held check expected;
//!   `gil_held_token` also nests two blocks on one shared `&mut GilHeld`
//!   (the inner releases nothing) and, in debug builds, sees a token block
//!   inside a checked block panic before it releases anything.
//! - `python_threads_call_in`: four Python threads call a Rust function whose
//!   block waits for all four (and for a fifth thread's `gc.collect()`).
//! - `ensured_rust_thread`: a Rust thread attached with `PyGILState_Ensure`
//!   releases; a nested block does not.
//! - `nested`: the outer block releases, the inner one does not.
//! - `foreign_thread`, `foreign_thread_while_released`: a thread without a
//!   Python thread state never releases, 1000 times, while the main thread
//!   holds the GIL, or has released it to nobody or to a busy Python thread.
//! - `panic_in_block`: the GIL is held again after a caught panic and after
//!   `Panicked::catch`.
//! - `before_init`, `after_finalize`: without an interpreter, blocks run and
//!   release nothing.
//! - `shutdown_daemon_block_ends` (10 children), `shutdown_tight_loop` (3): a
//!   daemon thread's block ends while `Py_FinalizeEx` runs; CPython 3.13 and
//!   older end such a thread in its reacquire, and no Rust frame may unwind.
//! - `shutdown_in_with_gil_part`, `shutdown_in_released_part`,
//!   `shutdown_in_strict_part` (3 children each): a daemon thread runs
//!   Python code in a `with_gil` part when the interpreter finalizes; it must
//!   end up parked in `pause()` (by nuwa, or by CPython 3.14+), not unwound.
//!   Whether a thread entered `pause()` is told by this binary's own
//!   `pause()` (`paused.rs`), which notes the calling thread; `pause_probe`
//!   checks that probe itself (it sees a thread in `pause()` and in Python's
//!   `signal.pause()`, not one blocked elsewhere).
//! - `stop_the_world` (free-threaded builds only): `gc.collect()` gets through
//!   while four attached threads run blocks, and, as a control, does not while
//!   they spin without releasing.
//! - `signal_check_stops_a_block`: SIGINT sent while a block on the main
//!   thread works stops it at its next `SignalCheck`, in place and strict,
//!   with `KeyboardInterrupt` set; in a nested block a check does nothing and
//!   the signal stays pending for the outer one.
//! - `legacy_subinterpreter`: a block in a `Py_NewInterpreter`
//!   subinterpreter releases on 3.12+ (called from Python code or from C),
//!   proven by a main-interpreter thread, and releases nothing on 3.8-3.11.
//! - `breaker_*` (issue 22 item 2): on 3.8-3.11, a state run by one thread
//!   and handed to another, or a thread whose stack lies inside another's
//!   frames, never makes the held check say "held" on a thread that holds
//!   nothing; a `GilHeld` token in a legacy subinterpreter releases without
//!   its debug check panicking. Those that measure or need a debugger run
//!   only with `NUWA_BREAKER=1`.
//! - `state_made_by_a_python_thread`: while thread B holds the GIL (in C,
//!   then running Python code) on a state that Python thread A made for it,
//!   A's held check says "not held", its block releases nothing, a
//!   `with_gil!` part is refused, and a nested block releases nothing.
//!   `state_made_by_a_thread_that_ended`: the same with a state made by a
//!   thread C that ended, whose id A got back (skipped if it did not).
//! - `state_attached_in_subinterpreter_block`: `PyGILState_Ensure` left
//!   attached in a block in a `Py_NewInterpreter` subinterpreter (3.12+;
//!   blocks there release nothing on 3.8-3.11): a panic, not a hang, and the
//!   thread is back on the subinterpreter's state.
//! - `foreign_state_attached_in_block`: a state made for this thread inside
//!   a block and left attached (3.12+): a panic, not a hang; on 3.13+ the
//!   block's own state is current again (the swap's repair), on 3.12 the
//!   stray one.
//! - `own_gil_subinterpreter_left_in_block`,
//!   `main_state_left_in_own_gil_subinterpreter_block`,
//!   `foreign_state_left_before_a_part`,
//!   `foreign_state_left_in_block_nested_in_part` (3.13+): the repair across
//!   two GILs (an own-GIL subinterpreter's state left in a main-interpreter
//!   block, and the reverse on a thread of its own), before a `with_gil!`
//!   part (in place and strict), and in a block nested in a part: a panic,
//!   then the block's own state is current, and blocks release again.
//! - `state_attached_before_a_part`: the same, left attached before a
//!   `with_gil!` part (in place and strict): the part's reacquire panics,
//!   the part does not run, and the thread holds the GIL afterwards.
//! - `stats_count_blocks_nuwa_panics_in`, `stats_fork_while_a_thread_is_in_the_registry`
//!   (built with the `stats` feature; skipped without it): a block that ends
//!   in nuwa's panic at a take-back counts once; a child forked by
//!   `os.fork()` while a thread is stopped inside the registry of call
//!   sites (its test hook) runs a strict-form block there, exits, and
//!   counts it.
//! - `with_gil_restores_the_saved_state`: `with_gil!` and `Released::with_gil`
//!   in a block in a `Py_NewInterpreter` subinterpreter run Python code in
//!   that subinterpreter, with the GIL held, and release it again after
//!   (3.12+; on 3.8-3.11 the block releases nothing and the parts are
//!   refused).
//!
//! No pyo3 and no link to libpython: the child opens libpython with
//! `RTLD_NOW | RTLD_GLOBAL` before any block runs (so that nuwa-ffi's own
//! `dlsym` finds it), and the few C API functions used here are declared below
//! and looked up with libloading. Python calls back into Rust through
//! `ctypes.PYFUNCTYPE` (the GIL stays held during the call, as for an
//! extension function) at addresses passed in as integers.

#[cfg(unix)]
#[macro_use]
mod harness;
#[cfg(unix)]
mod hosts;
#[cfg(unix)]
mod paused;
#[cfg(unix)]
mod runner;
#[cfg(unix)]
mod scenarios;

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    runner::main()
}

#[cfg(not(unix))]
fn main() -> std::process::ExitCode {
    let line = "real_python: SKIPPED (embedding CPython is tested on Unix only)";
    println!("{line}");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("real_python.skipped");
    let _ = std::fs::write(path, format!("{line}\n"));
    if std::env::var("NUWA_REQUIRE_PYTHON").is_ok_and(|v| v == "1") {
        println!("real_python: FAILED: NUWA_REQUIRE_PYTHON=1");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}
