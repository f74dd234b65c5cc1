//! A `Guard` is not `Sync`, even over a backend whose ops and state are
//! `Send + Sync`: a `&Guard` cannot be shared with another thread.

use nuwa_core::GilOps;

/// A backend that is `Send + Sync` with a `Send + Sync` state.
struct SyncOps;

// SAFETY: releases nothing, so never reacquires.
unsafe impl GilOps for SyncOps {
    type Gil = SyncOps;
    type State = ();

    unsafe fn release(&self) -> Option<()> {
        None
    }

    unsafe fn reacquire(&self, (): ()) {}
}

fn main() {
    // SAFETY: not run; this must not compile.
    let guard = unsafe { nuwa_core::__private::release(SyncOps) };
    std::thread::scope(|s| {
        s.spawn(|| nuwa_core::__private::released(&guard));
    });
}
