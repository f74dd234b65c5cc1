//! The CPython functions nuwa calls, as Rust function pointer types: the
//! one vocabulary the lookup, the plan, the block code and the shutdown
//! frame share (a leaf module: it imports nothing of nuwa's).

use core::ffi::{c_int, c_void};

/// CPython's `PyThreadState`, only ever handled by pointer.
pub(crate) type ThreadStatePtr = *mut c_void;

/// `PyEval_SaveThread`.
pub(crate) type SaveThreadFn = unsafe extern "C" fn() -> ThreadStatePtr;
/// `PyEval_RestoreThread`. It may end the thread with `pthread_exit` (a
/// forced unwind) during shutdown on CPython 3.13 and older, hence
/// `C-unwind`.
pub(crate) type RestoreThreadFn = unsafe extern "C-unwind" fn(ThreadStatePtr);
/// `PyThreadState_GetUnchecked` (3.13+), `_PyThreadState_UncheckedGet`
/// (3.8-3.12), `PyGILState_GetThisThreadState`.
pub(crate) type GetThreadStateFn = unsafe extern "C" fn() -> ThreadStatePtr;
/// `Py_IsFinalizing` (3.13+) or `_Py_IsFinalizing` (3.8-3.12): only where
/// the take-back handles shutdown (Unix).
#[cfg(any(test, nuwa_restore_shim))]
pub(crate) type IsFinalizingFn = unsafe extern "C" fn() -> c_int;
/// `PyErr_CheckSignals`: runs the Python signal handlers (main thread of the
/// main interpreter), `-1` with an exception set if one raised.
pub(crate) type CheckSignalsFn = unsafe extern "C" fn() -> c_int;
/// `PyThreadState_Swap`: on 3.12 and later, with a null argument, it
/// detaches the state attached to the calling thread, if any (releasing the
/// GIL), and returns it; on 3.13 and later, given a state, it also attaches
/// that one (taking the GIL), and may then end the thread at shutdown like
/// `PyEval_RestoreThread` (3.13), hence `C-unwind`.
pub(crate) type SwapFn = unsafe extern "C-unwind" fn(ThreadStatePtr) -> ThreadStatePtr;
