//! Release statistics (feature `stats`) with a real interpreter: a block
//! that ends in nuwa's own panic still counts.

use crate::harness::*;

/// A thread state left attached inside a block (`PyGILState_Ensure` without
/// its `PyGILState_Release`) makes nuwa panic where it takes the GIL back:
/// at the end of the block, or at a `with_gil!` part. Each such block, in
/// place and strict, counts once at its call site, as having released.
#[cfg(feature = "stats")]
pub(crate) fn stats_count_blocks_nuwa_panics_in(target: &Target) -> Outcome {
    use std::panic::{self, AssertUnwindSafe};

    let py = start(target)?;
    let previous = panic::take_hook();
    panic::set_hook(Box::new(|info| eprintln!("(expected) {info}")));
    let mut leaked = Vec::new();
    let mut lines = Vec::new();
    let caught = |f: &mut dyn FnMut()| panic::catch_unwind(AssertUnwindSafe(f)).is_err();
    let mut panicked = Vec::new();
    panicked.push(caught(&mut || {
        lines.push(line!() + 1);
        nuwa_ffi::nogil! {
            leaked.push(py.gilstate_ensure());
        }
    }));
    panicked.push(caught(&mut || {
        lines.push(line!() + 1);
        nuwa_ffi::nogil! {
            leaked.push(py.gilstate_ensure());
            let _ = with_gil! { () };
        }
    }));
    let ensure = || py.gilstate_ensure();
    lines.push(line!() + 1);
    let strict_end = nuwa_ffi::Panicked::catch(|| nuwa_ffi::nogil(|_| ensure()));
    lines.push(line!() + 2);
    let strict_part = nuwa_ffi::Panicked::catch(|| {
        nuwa_ffi::nogil(|released| {
            let state = ensure();
            let _ = released.with_gil(|| ());
            state
        })
    });
    panic::set_hook(previous);
    ensure!(
        panicked == [true, true] && strict_end.is_err() && strict_part.is_err(),
        "nuwa did not panic at every take-back: in place {panicked:?}, strict {}, {}",
        strict_end.is_err(),
        strict_part.is_err()
    );
    // Each strict block leaked one state too (its value is lost with the
    // panic), made as the first one was: with no state attached.
    let first = *leaked.first().ok_or("the first block did not run")?;
    leaked.extend([first, first]);
    undo_leaked_ensures(py, &leaked)?;
    let sites = nuwa_ffi::stats::sites();
    for line in lines {
        let site = sites
            .iter()
            .find(|s| s.file == file!() && s.line == line)
            .ok_or_else(|| format!("no call site at line {line}: the block was not counted"))?;
        ensure!(
            (site.stats.blocks, site.stats.not_released) == (1, 0),
            "{site}: expected 1 block that released"
        );
    }
    py.finalize()?;
    passed()
}

/// Without the feature there is nothing to count.
#[cfg(not(feature = "stats"))]
pub(crate) fn stats_count_blocks_nuwa_panics_in(_: &Target) -> Outcome {
    Ok(Pass::Skipped("needs nuwa-ffi's `stats` feature".into()))
}

/// Undoes leaked `PyGILState_Ensure`s the way the blocks would have
/// (release, which may detach, then take the thread's state back) and
/// checks that the GIL is held.
#[cfg(feature = "stats")]
fn undo_leaked_ensures(py: &Py, leaked: &[std::ffi::c_int]) -> Result<(), String> {
    type StateFn = unsafe extern "C" fn() -> *mut std::ffi::c_void;
    type RestoreFn = unsafe extern "C" fn(*mut std::ffi::c_void);
    // SAFETY: the C signatures of these CPython 3.8+ functions.
    let (this_thread, restore) = unsafe {
        (
            api::<StateFn>("PyGILState_GetThisThreadState")?,
            api::<RestoreFn>("PyEval_RestoreThread")?,
        )
    };
    for &state in leaked.iter().rev() {
        py.gilstate_release(state);
        if py.gil_check() == 0 {
            // SAFETY: this thread's own state, detached by the release.
            unsafe { restore(this_thread()) };
        }
    }
    ensure!(py.gil_check() == 1, "the GIL is not held after the cleanup");
    py.run("nuwa_x = [i for i in range(100)]")
}

/// A thread of the process is stopped inside nuwa's registry of call sites
/// (by its test hook: while a strict-form call site is looked up, once a
/// site is claimed for the list of sites, once it is linked to it) when
/// Python's `os.fork()` runs on the main thread. The child runs a
/// strict-form block at that same call site and must exit, within 30 s,
/// with the block counted once, released.
#[cfg(feature = "stats")]
pub(crate) fn stats_fork_while_a_thread_is_in_the_registry(target: &Target) -> Outcome {
    use std::sync::atomic::Ordering::SeqCst;

    let py = start(target)?;
    py.run(&format!(
        "import os, warnings\n\
         _nuwa_probe = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_int)({probe})\n\
         def nuwa_fork_and_probe(point):\n    \
             with warnings.catch_warnings():\n        \
                 warnings.simplefilter('ignore', DeprecationWarning)\n        \
                 pid = os.fork()\n    \
             if pid == 0:\n        \
                 os._exit(_nuwa_probe(point))\n    \
             deadline = time.monotonic() + 30\n    \
             while True:\n        \
                 done, status = os.waitpid(pid, os.WNOHANG)\n        \
                 if done:\n            \
                     code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1000 + os.WTERMSIG(status)\n            \
                     break\n        \
                 if time.monotonic() > deadline:\n            \
                     os.kill(pid, 9)\n            \
                     os.waitpid(pid, 0)\n            \
                     code = 2000\n            \
                     break\n        \
                 time.sleep(0.01)\n    \
             _nuwa_set({result}, code)\n",
        probe = registry::probe_in_child as *const () as usize,
        result = WAIT_RESULT,
    ))?;
    let mut notes = Vec::new();
    for (point, name) in ["lookup", "claimed", "linked"].into_iter().enumerate() {
        FLAGS[WAIT_RESULT].store(-1, SeqCst);
        registry::pause(point as u8)?;
        let forked = py.run(&format!("nuwa_fork_and_probe({point})"));
        let line = registry::resume();
        forked?;
        let code = FLAGS[WAIT_RESULT].load(SeqCst);
        ensure!(
            code != 2000,
            "{name}: the forked child hung (killed after 30 s)"
        );
        ensure!(
            code == 0,
            "{name}: the child exited with {code} (1: its block was not counted once, \
             released; 1000 + N: signal N)"
        );
        let line = line.ok_or_else(|| format!("{name}: the stopped thread did not finish"))?;
        let counted = nuwa_ffi::stats::sites()
            .into_iter()
            .find(|s| s.file == file!() && s.line == line)
            .map(|s| s.stats.not_released);
        ensure!(
            counted == Some(1),
            "{name}: the stopped thread's block, in the parent: {counted:?} released nothing"
        );
        notes.push(name);
    }
    py.finalize()?;
    Ok(Pass::Ok(format!(
        "a child forked with a thread stopped at each of: {}",
        notes.join(", ")
    )))
}

/// Without the feature there is nothing to count.
#[cfg(not(feature = "stats"))]
pub(crate) fn stats_fork_while_a_thread_is_in_the_registry(_: &Target) -> Outcome {
    Ok(Pass::Skipped("needs nuwa-ffi's `stats` feature".into()))
}

/// A thread stopped at a point of nuwa's registry of call sites, through
/// its test hook, until told to go on.
#[cfg(feature = "stats")]
mod registry {
    use std::ffi::c_int;
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::sync::{Condvar, Mutex, PoisonError};
    use std::thread::JoinHandle;
    use std::time::Duration;

    use nuwa_ffi::__private::RegistryPoint as Point;

    /// The point to stop at, plus one (0: none); taken by the first thread
    /// that reaches it.
    static ARMED: AtomicU8 = AtomicU8::new(0);
    /// (stopped, go on).
    static STATE: Mutex<(bool, bool)> = Mutex::new((false, false));
    static CHANGED: Condvar = Condvar::new();
    static THREAD: Mutex<Option<JoinHandle<u32>>> = Mutex::new(None);

    /// A strict-form block at the call site of `point`, one line each.
    fn probe(point: u8) -> u32 {
        match point {
            0 => nuwa_ffi::nogil(|_| line!()),
            1 => nuwa_ffi::nogil(|_| line!()),
            _ => nuwa_ffi::nogil(|_| line!()),
        }
    }

    /// In the child, called by Python with the GIL held: runs the probe and
    /// returns 0 if its block counted once, released.
    pub(super) extern "C" fn probe_in_child(point: c_int) -> c_int {
        let line = probe(u8::try_from(point).unwrap_or(2));
        let counted = nuwa_ffi::stats::sites()
            .into_iter()
            .find(|s| s.file == file!() && s.line == line)
            .map(|s| (s.stats.blocks, s.stats.not_released));
        c_int::from(counted != Some((1, 0)))
    }

    fn hook(point: Point) {
        let n = match point {
            Point::Lookup => 1,
            Point::Claimed => 2,
            Point::Linked => 3,
        };
        if ARMED
            .compare_exchange(n, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let mut state = STATE.lock().unwrap_or_else(PoisonError::into_inner);
        state.0 = true;
        CHANGED.notify_all();
        while !state.1 {
            state = CHANGED.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Starts a thread that runs the probe of `point` and returns once it
    /// has stopped there (bounded).
    pub(super) fn pause(point: u8) -> Result<(), String> {
        *STATE.lock().unwrap_or_else(PoisonError::into_inner) = (false, false);
        nuwa_ffi::__private::set_registry_hook(Some(hook));
        ARMED.store(point + 1, Ordering::Release);
        *THREAD.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(std::thread::spawn(move || probe(point)));
        let state = STATE.lock().unwrap_or_else(PoisonError::into_inner);
        let (state, _) = CHANGED
            .wait_timeout_while(state, Duration::from_secs(10), |s| !s.0)
            .unwrap_or_else(PoisonError::into_inner);
        if !state.0 {
            ARMED.store(0, Ordering::Release);
            return Err(format!(
                "no thread stopped at registry point {point} within 10 s"
            ));
        }
        Ok(())
    }

    /// Lets the stopped thread go on and joins it: the line it ran.
    pub(super) fn resume() -> Option<u32> {
        ARMED.store(0, Ordering::Release);
        {
            let mut state = STATE.lock().unwrap_or_else(PoisonError::into_inner);
            state.1 = true;
            CHANGED.notify_all();
        }
        let thread = THREAD.lock().unwrap_or_else(PoisonError::into_inner).take();
        thread.and_then(|t| t.join().ok())
    }
}
