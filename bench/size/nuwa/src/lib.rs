//! Size contender: the block is a `nuwa_ffi::nogil!`.

macro_rules! release_gil {
    ($body:block) => {
        nuwa_ffi::nogil!($body)
    };
}

const MODULE_NAME: &std::ffi::CStr = c"size_nuwa";

include!("../../common.rs");

/// The module's entry point.
///
/// # Safety
///
/// Called by CPython's import machinery, with the GIL held.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PyInit_size_nuwa() -> *mut PyObject {
    // SAFETY: as this function's contract.
    unsafe { create_module() }
}
