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
use nuwa_ffi::__private::{Details, HeldCheck};
use nuwa_ffi::{CPython, GilHeld, GilOps};

use crate::harness::*;
use crate::paused::entered_pause;

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
static BLOCK_DAEMON_TID: AtomicI64 = AtomicI64::new(0);

/// Run by a Python daemon thread: a block that ends only when `__del__`
/// runs during `Py_FinalizeEx`, so that the reacquire happens while the
/// interpreter finalizes.
pub(crate) extern "C" fn rp_daemon_block() {
    let mut witness = UnwindWitness { completed: false };
    BLOCK_DAEMON_TID.store(this_tid(), SeqCst);
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
/// returned, unwound, ended, or entered `pause()`, where nuwa parks it
/// (CPython 3.13 and older) or CPython hangs it (3.14+), for good (see
/// `paused.rs`: the kernel's view of the thread, such as its state in
/// `/proc/self/task/TID/stat`, is qemu's under `qemu-user`). Without Linux's
/// thread ids, a pause of 200 ms stands in.
fn daemon_past_its_reacquire(deadline: Instant) -> bool {
    let tid = BLOCK_DAEMON_TID.load(SeqCst);
    if !cfg!(all(target_os = "linux", target_env = "gnu")) || tid == 0 {
        thread::sleep(Duration::from_millis(200));
        return true;
    }
    // The thread's directory goes when the thread ends (under qemu-user
    // too: a guest thread is a host thread, with the same id).
    let task = PathBuf::from(format!("/proc/self/task/{tid}"));
    loop {
        if FLAGS[RETURNED].load(SeqCst) > 0
            || FLAGS[UNWOUND].load(SeqCst) > 0
            || entered_pause(tid)
            || !task.exists()
        {
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

/// A local of a `with_gil` part whose `Drop` records that the part was left.
struct PartWitness;

impl Drop for PartWitness {
    fn drop(&mut self) {
        FLAGS[PART_LEFT].fetch_add(1, SeqCst);
    }
}

/// The Python code of the daemon's part: it says it runs, then loops in the
/// eval loop, which gives the GIL up and takes it back every switch
/// interval, until CPython ends the thread there at shutdown.
pub(crate) fn part_that_loops() {
    let _witness = PartWitness;
    if let Some(py) = PY.get() {
        // Errors are noted by the prelude's hook; the loop never ends.
        let _ = py.run(&format!("_nuwa_set({IN_PART}, 1)\nwhile True:\n    pass\n"));
    }
}

/// Run by a Python daemon thread (through `ctypes.PYFUNCTYPE`, so with the
/// GIL): a block whose part runs Python code until the interpreter
/// finalizes. `form` picks the part: 0 `with_gil!`, 1 `released!()`'s
/// `with_gil`, 2 the strict form's.
pub(crate) extern "C" fn rp_daemon_part(form: c_int) {
    let mut witness = UnwindWitness { completed: false };
    FLAGS[DAEMON_TID].store(this_tid(), SeqCst);
    let ran = match form {
        0 => nuwa_ffi::nogil! {
            with_gil! { part_that_loops() }
        },
        1 => nuwa_ffi::nogil! {
            released!().with_gil(part_that_loops)
        },
        _ => nuwa_ffi::nogil(|gil| gil.with_gil(part_that_loops)),
    };
    witness.completed = ran.is_ok();
    FLAGS[RETURNED].fetch_add(1, SeqCst);
}

/// The kernel's id of the calling thread (Linux, where the scenarios that
/// look for a thread by its id run); 0 elsewhere.
#[cfg(target_os = "linux")]
pub(crate) fn this_tid() -> i64 {
    // SAFETY: gettid(2) has no preconditions.
    i64::from(unsafe { libc::gettid() })
}

/// See the Linux definition: no kernel thread ids to read here.
#[cfg(not(target_os = "linux"))]
pub(crate) fn this_tid() -> i64 {
    0
}

/// Whether the daemon thread of [`rp_daemon_part`] has entered `pause()`:
/// parked by nuwa (3.13 and older) or hung by CPython (3.14 and later),
/// both of which call `pause()` in a loop and never leave it.
pub(crate) extern "C" fn rp_daemon_paused() -> c_int {
    c_int::from(entered_pause(FLAGS[DAEMON_TID].load(SeqCst)))
}

/// The probe that [`rp_daemon_paused`] and [`daemon_past_its_reacquire`] use
/// (this binary's `pause()`, `paused.rs`), checked on its own: the global
/// scope's `pause` is this binary's (so libpython binds to it); a thread
/// blocked elsewhere (a futex) is not seen, one in `pause()` is, and its
/// `pause()` returns -1 with `EINTR` once a signal handler ran; a Python
/// thread in `signal.pause()` (libpython's call) is seen.
pub(crate) fn pause_probe(target: &Target) -> Outcome {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    return pause_probe_checks(target);
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    return Ok(Pass::Skipped(format!(
        "this binary has its own pause() on Linux with glibc only (Python {:?})",
        target.version
    )));
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn pause_probe_checks(target: &Target) -> Outcome {
    use std::os::unix::thread::JoinHandleExt;
    use std::sync::mpsc;

    // SAFETY: RTLD_DEFAULT and a NUL-terminated name: dlsym only looks the
    // name up in the global scope.
    let found = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"pause".as_ptr()) } as usize;
    let ours = crate::paused::pause as *const () as usize;
    ensure!(
        found == ours,
        "dlsym(RTLD_DEFAULT, \"pause\") is {found:#x}, not this binary's pause() at {ours:#x}: \
         libpython would call the C library's, which notes nothing (is it exported? see build.rs)"
    );

    extern "C" fn on_signal(_: c_int) {}
    // SAFETY: an all-zero sigaction is a valid value (no flags, empty
    // mask) before its handler is set; `on_signal` does nothing, so it is
    // async-signal-safe; the old action is not asked for.
    let rc = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as extern "C" fn(c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut())
    };
    ensure!(rc == 0, "sigaction(SIGUSR1) failed");

    let (tid_tx, tid_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (out_tx, out_rx) = mpsc::channel();
    let helper = thread::spawn(move || {
        let _ = tid_tx.send(this_tid());
        if go_rx.recv_timeout(WAIT).is_ok() {
            // SAFETY: pause has no preconditions.
            let rc = unsafe { libc::pause() };
            let _ = out_tx.send((rc, std::io::Error::last_os_error().raw_os_error()));
        }
    });
    let tid = tid_rx
        .recv_timeout(WAIT)
        .map_err(|e| format!("the helper: {e}"))?;
    thread::sleep(Duration::from_millis(50));
    ensure!(
        tid != 0 && !entered_pause(tid) && !entered_pause(this_tid()),
        "a thread waiting on a channel, or this running one, is said to have entered pause()"
    );
    go_tx.send(()).map_err(|e| format!("the helper: {e}"))?;
    let deadline = Instant::now() + WAIT;
    while !entered_pause(tid) {
        ensure!(
            Instant::now() < deadline,
            "the helper's pause() was not seen in {WAIT:?}"
        );
        thread::sleep(Duration::from_millis(1));
    }
    // Signals until pause() returns (one sent before the helper blocks
    // would be handled before, and leave it blocked).
    let (rc, errno) = loop {
        // SAFETY: the helper has not been joined, so its pthread_t is valid.
        unsafe { libc::pthread_kill(helper.as_pthread_t(), libc::SIGUSR1) };
        if let Ok(out) = out_rx.recv_timeout(Duration::from_millis(20)) {
            break out;
        }
        ensure!(
            Instant::now() < deadline,
            "the helper's pause() did not return on SIGUSR1"
        );
    };
    ensure!(
        rc == -1 && errno == Some(libc::EINTR),
        "pause() returned {rc} with errno {errno:?}, not -1 with EINTR"
    );
    helper.join().map_err(|_| "the helper panicked")?;

    // The wait is in Python, whose sleeps give the GIL up: the Python thread
    // needs it between noting its id and calling signal.pause().
    let py = start(target)?;
    py.run(&format!(
        r#"
import signal
def _nuwa_pauser():
    _nuwa_set({DAEMON_TID}, threading.get_native_id())
    signal.pause()
threading.Thread(target=_nuwa_pauser, daemon=True).start()
nuwa_wait({DAEMON_TID})
_nuwa_paused = ctypes.PYFUNCTYPE(ctypes.c_int)({paused})
_nuwa_deadline = time.monotonic() + {wait}
while not _nuwa_paused() and time.monotonic() < _nuwa_deadline:
    time.sleep(0.001)
"#,
        paused = rp_daemon_paused as *const () as usize,
        wait = WAIT.as_secs(),
    ))?;
    ensure!(
        rp_daemon_paused() == 1,
        "a Python thread in signal.pause() was not seen in pause() in {WAIT:?}: \
         libpython's pause() is not this binary's"
    );
    passed()
}

/// The probe's control: the daemon of [`rp_daemon_part`] runs Python code
/// in its part, so it must not be seen in `pause()` (a probe that always
/// said "parked" would fail here).
pub(crate) fn check_daemon_not_paused_yet() -> Result<(), String> {
    ensure!(
        FLAGS[DAEMON_TID].load(SeqCst) != 0 && rp_daemon_paused() == 0,
        "before finalization, while the daemon runs its part, the probe says it entered \
         pause() (or the daemon's thread id is unknown)"
    );
    Ok(())
}

/// A garbage cycle whose `__del__`, run by `Py_FinalizeEx`, gives the GIL up
/// (so that the daemon thread waiting for it is ended, or hung) until the
/// daemon has entered `pause()`, for at most 30 s.
pub(crate) fn cycle_until_daemon_paused() -> String {
    format!(
        r#"
gc.disable()
class NuwaCycle:
    def __del__(self, _set=_nuwa_set, _sleep=time.sleep, _finalizing=sys.is_finalizing,
                _now=time.monotonic, _paused=ctypes.PYFUNCTYPE(ctypes.c_int)({paused})):
        _set({DEL_FINALIZING}, 1 if _finalizing() else 2)
        _set({DEL_RAN}, 1)
        deadline = _now() + 30
        while not _paused() and _now() < deadline:
            _sleep(0.001)
nuwa_cycle = NuwaCycle()
nuwa_cycle.itself = nuwa_cycle
del nuwa_cycle
"#,
        paused = rp_daemon_paused as *const () as usize,
    )
}

/// A daemon thread is in a part of a block, running Python code, when the
/// interpreter finalizes; CPython 3.13 and older end it there. It must be
/// parked at the end of the part (3.14 and later hang it in the eval loop
/// themselves), never unwound past the part: before nuwa parked it, the
/// unwind reached the function's `extern "C"` boundary and aborted.
///
/// A free-threaded build runs with its GIL enabled here: with the GIL
/// disabled, CPython 3.13t's finalization stops a thread that runs Python
/// and leaves it suspended for good (or, now and then, ends it inside the
/// part when it was detached at that moment), which this scenario cannot
/// bring about every run.
fn shutdown_in_part(target: &Target, form: c_int) -> Outcome {
    if target.free_threaded {
        // SAFETY: no other thread of this child runs yet (the interpreter
        // and the pause helper start below), so nothing reads the
        // environment concurrently.
        unsafe { env::set_var("PYTHON_GIL", "1") };
    }
    let py = start(target)?;
    py.run(&format!(
        r#"
nuwa_daemon = threading.Thread(
    target=ctypes.PYFUNCTYPE(None, ctypes.c_int)({addr}), args=({form},), daemon=True)
nuwa_daemon.start()
nuwa_wait({IN_PART})
"#,
        addr = rp_daemon_part as *const () as usize,
    ))?;
    check_daemon_not_paused_yet()?;
    py.run(&cycle_until_daemon_paused())?;
    py.finalize()?;
    check_del_ran_finalizing()?;
    ensure!(
        rp_daemon_paused() == 1,
        "the daemon thread has not entered pause() after Py_FinalizeEx (part left {} times)",
        FLAGS[PART_LEFT].load(SeqCst)
    );
    let left = FLAGS[PART_LEFT].load(SeqCst);
    let hung_by_cpython = hung_by_cpython(target, left);
    if hung_by_cpython {
        ensure!(left == 0, "CPython 3.14+ ended the daemon inside its part");
    } else {
        ensure!(
            left == 1,
            "the daemon's part was not left: the scenario did not exercise a thread \
             that CPython ends inside a part"
        );
    }
    ensure!(
        FLAGS[UNWOUND].load(SeqCst) == 0,
        "the daemon's function was unwound past its part"
    );
    ensure!(
        FLAGS[RETURNED].load(SeqCst) == 0,
        "the daemon's function returned"
    );
    not_exercised_if_hung(target, hung_by_cpython)
}

/// Whether CPython itself hung the daemon at shutdown (so nothing unwound):
/// 3.14 and later always (gh-87135); 3.13 since the change was backported
/// to a patch release (Debian's 3.13.18 has it; 3.13.0 and 3.13.5 do not),
/// which shows as a daemon in `pause()` whose part was not left.
/// Up to 3.13.5 never: there a part not left is a failure.
pub(crate) fn hung_by_cpython(target: &Target, part_left: i64) -> bool {
    target.version >= (3, 14, 0) || (target.version >= (3, 13, 6) && part_left == 0)
}

/// A 3.13 that hangs the thread itself did not exercise nuwa's parking:
/// the scenario says so instead of passing.
pub(crate) fn not_exercised_if_hung(target: &Target, hung: bool) -> Outcome {
    if hung && target.version < (3, 14, 0) {
        return Ok(Pass::Skipped(
            "this CPython 3.13 hangs the thread itself at shutdown (gh-87135, backported to a \
             3.13 patch release): nothing unwound, nothing for nuwa to park"
                .into(),
        ));
    }
    passed()
}

pub(crate) fn shutdown_in_with_gil_part(target: &Target) -> Outcome {
    shutdown_in_part(target, 0)
}

pub(crate) fn shutdown_in_released_part(target: &Target) -> Outcome {
    shutdown_in_part(target, 1)
}

pub(crate) fn shutdown_in_strict_part(target: &Target) -> Outcome {
    shutdown_in_part(target, 2)
}
