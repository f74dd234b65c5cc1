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
    let strict_end = nuwa_ffi::nogil_catch(|_| ensure());
    lines.push(line!() + 1);
    let strict_part = nuwa_ffi::nogil_catch(|released| {
        let state = ensure();
        let _ = released.with_gil(|| ());
        state
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
