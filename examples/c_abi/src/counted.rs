//! The backend every block in this library uses: [`CPython`], counted.

use std::sync::atomic::{AtomicU64, Ordering};

use nuwa_ffi::__private::SavedThreadState;
use nuwa_ffi::nuwa_core::__private::{PartFrame, release, released};
use nuwa_ffi::{CPython, GilOps};

/// How many releases [`Counted`] made, process-wide.
static RELEASES: AtomicU64 = AtomicU64::new(0);
/// How many of those releases were taken back.
static REACQUIRES: AtomicU64 = AtomicU64::new(0);

/// [`CPython`], forwarding every call unchanged and counting the releases it
/// made and the reacquires that completed.
///
/// At any quiet moment (no block running), `releases == reacquires`: every
/// release was taken back exactly once. A block that released nothing (the
/// thread did not hold the GIL) counts nothing.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counted;

// SAFETY: both methods forward to `CPython`, which keeps the contract, with
// the caller's obligations passed on unchanged and the state passed through
// untouched; the counters are only bumped after the call.
unsafe impl GilOps for Counted {
    type Gil = nuwa_ffi::CPython;
    type State = SavedThreadState;

    #[inline]
    unsafe fn release(&self) -> Option<SavedThreadState> {
        // SAFETY: the caller's obligations are the same for `CPython`.
        let state = unsafe { CPython.release() };
        if state.is_some() {
            // `Release`, so that a reader that sees this thread's reacquire
            // (with `Acquire`) also sees this release: see `counters`.
            RELEASES.fetch_add(1, Ordering::Release);
        }
        state
    }

    #[inline]
    unsafe fn reacquire(&self, state: SavedThreadState) {
        // SAFETY: the caller's obligations are the same for `CPython`, and
        // `state` is the one `CPython.release` returned.
        unsafe { CPython.reacquire(state) };
        // Not reached by a thread that CPython parks at shutdown: that
        // reacquire never completes.
        REACQUIRES.fetch_add(1, Ordering::Release);
    }

    fn is_held(&self) -> bool {
        CPython.is_held()
    }

    // The parts' hooks too: they park a thread CPython ends inside a part
    // at shutdown.
    #[inline]
    unsafe fn part_began(&self, frame: &PartFrame) {
        // SAFETY: the caller's obligations are the same for `CPython`.
        unsafe { CPython.part_began(frame) }
    }

    #[inline]
    unsafe fn part_ended(&self, frame: &PartFrame) {
        // SAFETY: the caller's obligations are the same for `CPython`.
        unsafe { CPython.part_ended(frame) }
    }
}

/// The counters, as `(releases, reacquires)`.
///
/// The reacquires are read first, so even while blocks run,
/// `releases >= reacquires` in what this returns.
pub(crate) fn counters() -> (u64, u64) {
    let reacquires = REACQUIRES.load(Ordering::Acquire);
    let releases = RELEASES.load(Ordering::Acquire);
    (releases, reacquires)
}

/// Whether a block started here releases the GIL.
///
/// It does start one, and ends it at once: if this thread holds the GIL, that
/// is one counted release and one counted reacquire.
pub(crate) fn probe() -> bool {
    // SAFETY: the guard is a temporary, dropped on this thread at the end of
    // this statement.
    released(&unsafe { release(Counted) })
}
