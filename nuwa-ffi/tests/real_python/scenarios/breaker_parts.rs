//! Threads CPython ends inside a part at shutdown, in the shapes a review
//! found: a part of a block that kept the GIL (a suite member), and the
//! part's own locals, which the forced unwind drops without the GIL where
//! the call into Python can unwind (a reproducer of that documented limit,
//! skipped unless `NUWA_BREAKER=1`).

use std::env;
use std::sync::atomic::Ordering::SeqCst;

use super::shutdown::{
    check_daemon_not_paused_yet, cycle_until_daemon_paused, gil_check_here, hung_by_cpython,
    not_exercised_if_hung, part_that_loops, rp_daemon_paused, this_tid,
};
use crate::harness::*;

/// Where [`PartLocal`]'s `Drop` notes whether it ran with the GIL:
/// 0 never ran, 1 ran without the GIL, 2 ran with it.
const PART_LOCAL_DROP: usize = 30;

/// A local of a `with_gil!` part, in the frame that runs the part. Its
/// `Drop` stands for what a part's locals do when dropped (a Python object
/// owner: `Py_DECREF`), which needs the GIL.
struct PartLocal;

impl Drop for PartLocal {
    fn drop(&mut self) {
        FLAGS[PART_LOCAL_DROP].store(1 + gil_check_here(), SeqCst);
    }
}

/// Run by a Python daemon thread: a block whose part has a local of its own
/// and runs Python code (through a Rust function, as any helper is called)
/// until the interpreter finalizes.
extern "C" fn rp_breaker_part_with_local() {
    FLAGS[DAEMON_TID].store(this_tid(), SeqCst);
    let _ = nuwa_ffi::nogil! {
        with_gil! {
            let _local = PartLocal;
            part_that_loops();
        }
    };
    FLAGS[RETURNED].fetch_add(1, SeqCst);
}

/// README (shutdown row) and `CPython`'s docs: a thread CPython ends inside
/// Python code that a part runs "is parked as the unwind reaches the frame
/// that runs the part ..., so that frame, the rest of the block and
/// everything outside it are not unwound". The part's own locals are in that
/// frame; their `Drop` must not run (it would run without the GIL, while the
/// finalizing thread runs Python).
pub(crate) fn breaker_part_locals_not_unwound_at_shutdown(target: &Target) -> Outcome {
    if env::var("NUWA_BREAKER").as_deref() != Ok("1") {
        return Ok(Pass::Skipped(
            "breaker reproducer: set NUWA_BREAKER=1".into(),
        ));
    }
    if target.version >= (3, 14, 0) {
        return Ok(Pass::Skipped(
            "3.14+ hang the thread in the eval loop".into(),
        ));
    }
    finalize_with_daemon_in_part(target, rp_breaker_part_with_local)?;
    ensure!(
        rp_daemon_paused() == 1,
        "the daemon has not entered pause(): it is not parked"
    );
    if let Some(outcome) = unless_ended_inside_part(target) {
        return outcome;
    }
    let dropped = FLAGS[PART_LOCAL_DROP].load(SeqCst);
    ensure!(
        dropped == 0,
        "a local of the part's own frame was dropped by the forced unwind ({}), although the \
         README says that frame is not unwound",
        if dropped == 1 {
            "without the GIL"
        } else {
            "with the GIL"
        }
    );
    passed()
}

/// Run by a Python daemon thread: a block that keeps the GIL
/// (`ReleaseIf` false, as `compute_pi(release=False, progress=...)` does),
/// whose part runs Python code until the interpreter finalizes.
extern "C" fn rp_breaker_kept_gil_part() {
    FLAGS[DAEMON_TID].store(this_tid(), SeqCst);
    let _ = nuwa_ffi::nogil!(nuwa_ffi::ReleaseIf::new(nuwa_ffi::CPython, false) => {
        with_gil! { part_that_loops() }
    });
    FLAGS[RETURNED].fetch_add(1, SeqCst);
}

/// A thread CPython ends inside Python code that a part of a block that kept
/// the GIL runs: parked, or ended as without nuwa, never an abort. The
/// daemon function is `extern "C"`, as an extension's entry points are.
pub(crate) fn shutdown_in_part_of_kept_gil_block(target: &Target) -> Outcome {
    if target.version >= (3, 14, 0) {
        return Ok(Pass::Skipped(
            "3.14+ hang the thread in the eval loop".into(),
        ));
    }
    finalize_with_daemon_in_part(target, rp_breaker_kept_gil_part)?;
    if let Some(outcome) = unless_ended_inside_part(target) {
        return outcome;
    }
    passed()
}

/// Starts a Python daemon thread that runs `daemon` (an `extern "C"`
/// function whose block's part runs Python code until the interpreter
/// finalizes), waits until it is in its part, and finalizes the interpreter.
fn finalize_with_daemon_in_part(target: &Target, daemon: extern "C" fn()) -> Result<(), String> {
    if target.free_threaded {
        // SAFETY: no other thread of this child runs yet.
        unsafe { env::set_var("PYTHON_GIL", "1") };
    }
    let py = start(target)?;
    py.run(&format!(
        r#"
nuwa_daemon = threading.Thread(target=ctypes.PYFUNCTYPE(None)({addr}), daemon=True)
nuwa_daemon.start()
nuwa_wait({IN_PART})
"#,
        addr = daemon as *const () as usize,
    ))?;
    check_daemon_not_paused_yet()?;
    py.run(&cycle_until_daemon_paused())?;
    py.finalize()
}

/// After `finalize_with_daemon_in_part`: `None` if CPython ended the daemon
/// inside its part (what the scenario must exercise); otherwise the
/// scenario's outcome: skipped where this CPython hung the thread itself
/// (nothing for nuwa to park), a failure where the part was not left.
fn unless_ended_inside_part(target: &Target) -> Option<Outcome> {
    let left = FLAGS[PART_LEFT].load(SeqCst);
    if hung_by_cpython(target, left) {
        return Some(not_exercised_if_hung(target, true));
    }
    (left != 1).then(|| {
        Err("the daemon was not ended inside its part: the scenario did not exercise it".into())
    })
}
