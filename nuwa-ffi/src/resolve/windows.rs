//! The lookup on Windows: the Python DLL already loaded in the process.
//!
//! Not compiled on the project's machines (no Windows target there); the
//! name logic it uses lives in [`names`](super::names) and is tested on
//! every host.

use core::ffi::{CStr, c_void};
use std::ffi::CString;

use libloading::os::windows::Library;

use super::decide::{self, Lookup};
use super::names;
use super::report::{Place, Resolution, State, Via};

impl Lookup for Library {
    fn lookup(&self, name: &CStr) -> Option<*mut c_void> {
        // SAFETY: the symbol is only read as an address here; its type is
        // given where it is used.
        let found = unsafe { self.get::<*mut c_void>(name.to_bytes_with_nul()) };
        found.ok().map(|s| *s).filter(|p| !p.is_null())
    }
}

pub(super) fn look_up() -> Resolution {
    let mut first_forwarder: Option<Resolution> = None;
    for name in names::windows_dll_candidates() {
        let Ok(lib) = Library::open_already_loaded(&name) else {
            continue;
        };
        let state = decide::decide(&lib);
        if matches!(state, State::NotFound { .. }) {
            continue;
        }
        let resolution = Resolution {
            state,
            via: Via::LoadedObject,
            place: Place::Object(CString::new(name.as_str()).unwrap_or_default()),
        };
        if names::is_forwarder_dll(&name) {
            // Never a held check there; keep it only for the report.
            first_forwarder.get_or_insert(resolution);
            continue;
        }
        // Keep the DLL loaded for the rest of the process: the reference
        // `open_already_loaded` took is never given back.
        core::mem::forget(lib);
        return resolution;
    }
    first_forwarder.unwrap_or_else(|| Resolution::not_found(false, 0))
}
