//! Blocks that end while the interpreter finalizes.

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
use nuwa_ffi::{CPython, GilHeld, GilOps, Guard, HeldCheck};

use crate::harness::*;

// --- 7 ----------------------------------------------------------------

pub(crate) const UNWOUND_MARKER: &str =
    "real_python: a Rust frame was unwound (the Drop of a local ran, its function never completed)";

/// A local whose `Drop` records whether its function was left without
/// completing, that is, unwound.
pub(crate) struct UnwindWitness {
    pub(crate) completed: bool,
}

impl Drop for UnwindWitness {
    fn drop(&mut self) {
        if !self.completed {
            FLAGS[UNWOUND].fetch_add(1, SeqCst);
            eprintln!("{UNWOUND_MARKER}");
        }
    }
}

pub(crate) fn gil_check_here() -> i64 {
    PY.get().map_or(-1, |py| i64::from(py.gil_check()))
}

/// The kernel's id of the thread in [`rp_daemon_block`] (Linux), 0 before.
static DAEMON_TID: AtomicI64 = AtomicI64::new(0);

/// Run by a Python daemon thread: a block that ends only when `__del__`
/// runs during `Py_FinalizeEx`, so that the reacquire happens while the
/// interpreter finalizes.
pub(crate) extern "C" fn rp_daemon_block() {
    let mut witness = UnwindWitness { completed: false };
    #[cfg(target_os = "linux")]
    // SAFETY: gettid(2) has no preconditions.
    DAEMON_TID.store(i64::from(unsafe { libc::gettid() }), SeqCst);
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
pub(crate) fn garbage_cycle() -> String {
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
pub(crate) fn check_del_ran_finalizing() -> Result<(), String> {
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

pub(crate) fn shutdown_daemon_block_ends(target: &Target) -> Outcome {
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
    // The daemon's block records what its wait saw, as its last step: wait
    // for that (bounded), however late the daemon gets to run; then for the
    // daemon to be past its reacquire, so that the checks below see what it
    // did there.
    wait_flag(WAIT_RESULT, 1, Instant::now() + WAIT);
    ensure!(
        daemon_past_its_reacquire(Instant::now() + WAIT),
        "the daemon thread was still running {WAIT:?} after its block's wait ended"
    );
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

/// Whether the daemon thread of [`shutdown_daemon_block_ends`], once its
/// block's wait has ended, got past its reacquire (waits, bounded): it
/// returned, unwound, ended, or is asleep for good. Asleep: its block's
/// last step was its last sleep, so the next place where it can sleep is
/// the reacquire's park (nuwa, CPython 3.13 and older) or hang (CPython
/// 3.14+). Without Linux's /proc, a pause of 200 ms stands in.
fn daemon_past_its_reacquire(deadline: Instant) -> bool {
    let tid = DAEMON_TID.load(SeqCst);
    if !cfg!(target_os = "linux") || tid == 0 {
        thread::sleep(Duration::from_millis(200));
        return true;
    }
    let stat = format!("/proc/self/task/{tid}/stat");
    loop {
        if FLAGS[RETURNED].load(SeqCst) > 0 || FLAGS[UNWOUND].load(SeqCst) > 0 {
            return true;
        }
        let Ok(text) = std::fs::read_to_string(&stat) else {
            return true; // the thread has ended
        };
        // "tid (comm) S ...": the state follows the last ')'.
        let state = text
            .rsplit(')')
            .next()
            .and_then(|rest| rest.trim_start().chars().next());
        if state != Some('R') {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_micros(100));
    }
}

/// Run in a loop by eight Python daemon threads while the interpreter
/// finalizes.
pub(crate) extern "C" fn rp_short_block() -> c_longlong {
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

pub(crate) fn shutdown_tight_loop(target: &Target) -> Outcome {
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
