//! `embed::provide` after a block that found no Python: the handover takes
//! effect, and the blocks after it release.
//!
//! The "interpreter" is three stub functions with the C signatures of
//! CPython 3.13's `PyEval_SaveThread`, `PyEval_RestoreThread` and
//! `PyThreadState_GetUnchecked` over a thread-local "attached state", so
//! that a release is seen exactly (no real interpreter needed). One test
//! only: the resolution is process-wide.

use core::ffi::c_void;
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use nuwa_ffi::__private::{Details, Via};
use nuwa_ffi::CPython;
use nuwa_ffi::embed::{EmbedError, EmbeddedPython, provide};
use nuwa_ffi::nuwa_core::__private::{release, released};

/// The stand-in for this thread's `PyThreadState`.
static TSTATE: u8 = 0;

thread_local! {
    /// The state attached to this thread (null: none, the GIL is not held).
    // Clippy 1.97 asks for a `const` initializer on Windows, where this one
    // is already `const` (its lint misreads that target's expansion).
    #[allow(clippy::missing_const_for_thread_local)]
    static ATTACHED: Cell<*mut c_void> = const { Cell::new(core::ptr::null_mut()) };
}

static SAVES: AtomicUsize = AtomicUsize::new(0);
static RESTORES: AtomicUsize = AtomicUsize::new(0);

extern "C" fn save_thread() -> *mut c_void {
    SAVES.fetch_add(1, Ordering::SeqCst);
    ATTACHED.with(|a| a.replace(core::ptr::null_mut()))
}

extern "C" fn restore_thread(tstate: *mut c_void) {
    RESTORES.fetch_add(1, Ordering::SeqCst);
    ATTACHED.with(|a| a.set(tstate));
}

extern "C" fn current_thread_state() -> *mut c_void {
    ATTACHED.with(Cell::get)
}

fn stubs(version: (u8, u8)) -> EmbeddedPython {
    EmbeddedPython::new(
        version,
        save_thread as *const c_void,
        restore_thread as *const c_void,
        current_thread_state as *const c_void,
    )
}

#[test]
fn provide_after_a_block_that_found_nothing_takes_effect() {
    let tstate = (&raw const TSTATE).cast_mut().cast::<c_void>();
    ATTACHED.with(|a| a.set(tstate));

    let before = nuwa_ffi::init();
    assert!(!before.python_found(), "{before}");
    // SAFETY: dropped at the end of the statement, on this thread.
    let released = released(&unsafe { release(CPython) });
    assert!(!released, "released before any Python was handed over");
    assert_eq!(SAVES.load(Ordering::SeqCst), 0);

    // SAFETY: the stubs have the C signatures of CPython 3.13's functions of
    // those names and behave like them for one thread.
    let r = unsafe { provide(stubs((3, 13))) };
    assert_eq!(r, Ok(()), "provide after a block that found nothing");

    let after = nuwa_ffi::init();
    assert!(after.can_release(), "{after:#}");
    assert_eq!(after.via(), Via::Embedder, "{after:#}");
    let (released, inside) = {
        // SAFETY: dropped at the end of the block, on this thread.
        let guard = unsafe { release(CPython) };
        (
            nuwa_ffi::nuwa_core::__private::released(&guard),
            current_thread_state(),
        )
    };
    assert!(released, "the block after the handover did not release");
    assert!(
        inside.is_null(),
        "the state stayed attached inside the block"
    );
    assert_eq!(current_thread_state(), tstate, "the state was not restored");
    assert_eq!(
        (
            SAVES.load(Ordering::SeqCst),
            RESTORES.load(Ordering::SeqCst)
        ),
        (1, 1)
    );

    // SAFETY: as above; these calls must not change anything.
    unsafe {
        assert_eq!(provide(stubs((3, 13))), Ok(()));
        assert_eq!(
            provide(stubs((3, 14))),
            Err(EmbedError::AlreadyProvided { version: (3, 13) })
        );
    }
    assert!(std::ptr::eq(after, nuwa_ffi::init()));
}
