//! Size contender: the block is the raw `PyEval_SaveThread` /
//! `PyEval_RestoreThread` pair, as `Py_BEGIN_ALLOW_THREADS` writes it.

macro_rules! release_gil {
    ($body:block) => {{
        // SAFETY: Python called us, so this thread holds the GIL; the state
        // is restored right after the block, which cannot panic.
        let state = unsafe { pyo3_ffi::PyEval_SaveThread() };
        let value = $body;
        // SAFETY: restores the state saved above, on this thread.
        unsafe { pyo3_ffi::PyEval_RestoreThread(state) };
        value
    }};
}

const MODULE_NAME: &std::ffi::CStr = c"size_raw";

include!("../../common.rs");

/// The module's entry point.
///
/// # Safety
///
/// Called by CPython's import machinery, with the GIL held.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyInit_size_raw() -> *mut PyObject {
    // SAFETY: as this function's contract.
    unsafe { create_module() }
}
