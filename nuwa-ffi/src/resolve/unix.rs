//! The lookup on Unix: three places, in a fixed order, every name from one
//! object.
//!
//! 1. The global scope (`dlopen(NULL)`): an interpreter that loaded the
//!    extension, or a libpython loaded `RTLD_GLOBAL`.
//! 2. The object that contains nuwa's code, found with `dladdr` on one of
//!    nuwa's functions and reopened with `RTLD_NOLOAD`: `dlsym` on that
//!    handle searches the object and the objects it depends on, which is
//!    where the library's own references to libpython are bound, even when
//!    the host loaded libpython `RTLD_LOCAL`.
//! 3. The loaded objects whose file name looks like libpython
//!    (`dl_iterate_phdr`, where the C library has it), reopened with
//!    `RTLD_NOLOAD`.
//! 4. On ELF targets, the functions statically linked into the object that
//!    contains nuwa's code (weak references in `restore_shim.c`): a program
//!    that links `libpython3.X.a` without `--export-dynamic`, fully static
//!    included.
//!
//! In places 1-3, a symbol counts only if `dladdr` puts it in the same object
//! as `PyEval_SaveThread`; in place 4, only if it lies in nuwa's own object:
//! the functions and the version always come from one libpython. The object they came from is then pinned
//! (`RTLD_NODELETE`), so that a host's `dlclose` cannot unmap the functions
//! nuwa keeps pointers to.

use core::ffi::{CStr, c_void};
use std::ffi::CString;
use std::string::String;
use std::vec::Vec;

use super::decide::{self, Lookup};
use super::report::{Resolution, State, Via};
use crate::sys;

/// A `dlopen` handle, closed on drop.
struct Handle(*mut c_void);

impl Handle {
    /// The global scope.
    fn global() -> Option<Handle> {
        // SAFETY: a null file name loads nothing new, so no initialisation
        // routine runs; it returns the handle of the running program.
        let h = unsafe { sys::dlopen(core::ptr::null(), sys::RTLD_LAZY) };
        Handle::checked(h)
    }

    /// An object that is already loaded, by the name the loader knows it by.
    #[cfg(nuwa_dl_noload)]
    fn reopen(path: &CStr) -> Option<Handle> {
        // SAFETY: `RTLD_NOLOAD` never loads anything: it returns a new
        // reference to an object already loaded (no initialiser runs), or
        // null.
        let h = unsafe { sys::dlopen(path.as_ptr(), sys::RTLD_LAZY | sys::RTLD_NOLOAD) };
        Handle::checked(h)
    }

    fn checked(h: *mut c_void) -> Option<Handle> {
        if h.is_null() {
            clear_dlerror();
            None
        } else {
            Some(Handle(h))
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle came from a successful `dlopen` and is closed
        // once; it only drops the reference this `Handle` added.
        unsafe { sys::dlclose(self.0) };
    }
}

impl Lookup for Handle {
    fn lookup(&self, name: &CStr) -> Option<*mut c_void> {
        // SAFETY: the handle is open; the symbol is only read as an address.
        let p = unsafe { sys::dlsym(self.0, name.as_ptr()) };
        if p.is_null() {
            clear_dlerror();
            None
        } else {
            Some(p)
        }
    }
}

/// Forgets a failed call's message, so that the host's own `dlerror` after
/// a later failure of its own is not confused by ours.
fn clear_dlerror() {
    // SAFETY: `dlerror` only reads and clears this thread's error state.
    unsafe { sys::dlerror() };
}

/// The object an address lies in: its load address and its path.
fn object_of(addr: *const c_void) -> Option<(usize, CString)> {
    let mut info = core::mem::MaybeUninit::<sys::DlInfo>::zeroed();
    // SAFETY: `dladdr` only reads the loader's tables and fills `info`.
    let found = unsafe { sys::dladdr(addr, info.as_mut_ptr()) };
    if found == 0 {
        return None;
    }
    // SAFETY: `dladdr` succeeded, so it filled `info`.
    let info = unsafe { info.assume_init() };
    let path = if info.dli_fname.is_null() {
        CString::default()
    } else {
        // SAFETY: `dli_fname` is the loader's NUL-terminated name of the
        // object, valid while the object is loaded (it is, we are in it or
        // looking at it); it is copied at once.
        unsafe { CStr::from_ptr(info.dli_fname) }.to_owned()
    };
    Some((info.dli_fbase as usize, path))
}

/// Only the symbols of the object at `base`, looked up through `inner`.
struct OneObject<'a> {
    inner: &'a dyn Lookup,
    base: usize,
}

impl Lookup for OneObject<'_> {
    fn lookup(&self, name: &CStr) -> Option<*mut c_void> {
        let p = self.inner.lookup(name)?;
        match object_of(p) {
            Some((base, _)) if base == self.base => Some(p),
            _ => None,
        }
    }
}

/// Keeps the object that contains `addr` loaded for the rest of the
/// process, and returns its path.
pub(crate) fn pin_object_of(addr: *const c_void) -> Option<String> {
    let (_, path) = object_of(addr)?;
    #[cfg(nuwa_dl_noload)]
    if !path.as_bytes().is_empty() {
        // SAFETY: `RTLD_NOLOAD` loads nothing; `RTLD_NODELETE` marks the
        // already loaded object so that no `dlclose` unloads it. The handle
        // itself is then closed: the mark stays.
        let h = unsafe {
            sys::dlopen(
                path.as_ptr(),
                sys::RTLD_LAZY | sys::RTLD_NOLOAD | sys::RTLD_NODELETE,
            )
        };
        drop(Handle::checked(h));
    }
    Some(path.to_string_lossy().into_owned())
}

/// What a lookup's walk saw, for [`loaded::remember`](super::loaded::remember)
/// (nothing where there is no `dl_iterate_phdr`).
#[cfg(nuwa_dl_iterate)]
pub(super) type Scanned = super::loaded::Scan;
/// What a lookup's walk saw (nothing: no `dl_iterate_phdr` here).
#[cfg(not(nuwa_dl_iterate))]
pub(super) type Scanned = ();

/// Looks in every place, in order; returns the answer and what the walk of
/// the loaded objects saw (when the answer is not final).
pub(super) fn look_up() -> (Resolution, Scanned) {
    let mut search = Search::default();

    search.searched.push("the global scope".into());
    if let Some(global) = Handle::global()
        && let Some(r) = search.try_place(&global, Via::GlobalScope)
    {
        return (r, Scanned::default());
    }

    #[cfg(nuwa_dl_noload)]
    {
        let own = look_up as fn() -> (Resolution, Scanned) as *const c_void;
        if let Some((_, path)) = object_of(own) {
            search
                .searched
                .push(format!("nuwa's own object ({})", path.to_string_lossy()));
            if let Some(handle) = Handle::reopen(&path)
                && let Some(r) = search.try_place(&handle, Via::OwnObject)
            {
                return (r, Scanned::default());
            }
        }
    }

    #[cfg(nuwa_dl_iterate)]
    #[cfg_attr(not(nuwa_weak_linked), allow(unused_mut))]
    let mut scan = super::loaded::scan();
    #[cfg(nuwa_dl_iterate)]
    {
        #[cfg(nuwa_dl_noload)]
        {
            let candidates: Vec<&CStr> = scan.candidates().collect();
            search
                .searched
                .push(format!("{} loaded libpython objects", candidates.len()));
            for path in candidates {
                search.pypy |= super::names::is_libpypy(path.to_bytes());
                if let Some(handle) = Handle::reopen(path)
                    && let Some(r) = search.try_place(&handle, Via::LoadedObject)
                {
                    return (r, scan);
                }
            }
        }
    }

    #[cfg(all(nuwa_weak_linked, nuwa_dl_iterate))]
    {
        search
            .searched
            .push("the functions linked into nuwa's own object".into());
        let own = look_up as fn() -> (Resolution, Scanned) as usize;
        match super::loaded::segments_of(own) {
            (true, Some(segments)) => {
                if let Some(r) = search.try_linked(&Linked { segments }) {
                    return (r, scan);
                }
            }
            (true, None) => {}
            // Skipped for a fork: the next block looks again.
            (false, _) => scan.incomplete(),
        }
    }

    #[cfg(not(nuwa_dl_iterate))]
    return (search.finish(), ());
    #[cfg(nuwa_dl_iterate)]
    (search.finish(), scan)
}

/// The functions that the static link put into the object that contains
/// nuwa's code (the weak references of `restore_shim.c`): a program that
/// links `libpython3.X.a` without exporting its symbols, dynamically or
/// fully static. An address counts only if it lies inside that object (its
/// `PT_LOAD` segments, as `dl_iterate_phdr` reports them: `dladdr` knows no
/// object in a fully static program): in a shared object the dynamic loader
/// may have bound a weak reference to another object's definition, which is
/// not the one this object links, and which the places searched before had
/// their chance to find. Two static libpythons cannot be linked into one
/// object, so the functions come from one interpreter.
#[cfg(all(nuwa_weak_linked, nuwa_dl_iterate))]
struct Linked {
    /// The segments of the object that contains nuwa's code.
    segments: super::loaded::Segments,
}

#[cfg(nuwa_weak_linked)]
unsafe extern "C" {
    fn nuwa_ffi_0_1_linked(name: *const core::ffi::c_char) -> *const c_void;
}

#[cfg(all(nuwa_weak_linked, nuwa_dl_iterate))]
impl Lookup for Linked {
    fn lookup(&self, name: &CStr) -> Option<*mut c_void> {
        // SAFETY: `name` is NUL-terminated; the C function only compares it
        // with its table and returns an address it does not dereference.
        let p = unsafe { nuwa_ffi_0_1_linked(name.as_ptr()) }.cast_mut();
        (!p.is_null() && self.segments.contains(p.addr())).then_some(p)
    }
}

/// What the search has seen so far.
#[derive(Default)]
struct Search {
    pypy: bool,
    searched: Vec<String>,
    /// The first place with CPython's GIL pair but no held check: the answer
    /// if no later place has one.
    without_check: Option<Resolution>,
}

impl Search {
    /// Tries one place: the resolution if it is ready to release.
    fn try_place(&mut self, symbols: &dyn Lookup, via: Via) -> Option<Resolution> {
        let Some(save) = symbols.lookup(decide::GIL_PAIR[0]) else {
            self.pypy |= symbols.lookup(decide::PYPY_MARK).is_some();
            return None;
        };
        let (base, _) = object_of(save)?;
        let one = OneObject {
            inner: symbols,
            base,
        };
        let state = decide::decide(&one);
        match state {
            State::NotFound { .. } => None,
            State::NoHeldCheck { .. } => {
                if self.without_check.is_none() {
                    let place = object_of(save)
                        .map(|(_, p)| p.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    self.without_check = Some(Resolution { state, via, place });
                }
                None
            }
            State::Ready { .. } => {
                let place = pin_object_of(save).unwrap_or_default();
                Some(Resolution { state, via, place })
            }
        }
    }

    /// Tries the functions linked into nuwa's own object: the resolution if
    /// it is ready to release. Nothing is pinned: the functions are in the
    /// object whose code is running.
    #[cfg(all(nuwa_weak_linked, nuwa_dl_iterate))]
    fn try_linked(&mut self, linked: &Linked) -> Option<Resolution> {
        linked.lookup(decide::GIL_PAIR[0])?;
        let own = look_up as fn() -> (Resolution, Scanned) as *const c_void;
        let place = match object_of(own) {
            Some((_, path)) if !path.as_bytes().is_empty() => path.to_string_lossy().into_owned(),
            _ => "this program".into(),
        };
        let state = decide::decide(linked);
        match state {
            State::NotFound { .. } => None,
            State::NoHeldCheck { .. } => {
                if self.without_check.is_none() {
                    self.without_check = Some(Resolution {
                        state,
                        via: Via::Linked,
                        place,
                    });
                }
                None
            }
            State::Ready { .. } => Some(Resolution {
                state,
                via: Via::Linked,
                place,
            }),
        }
    }

    fn finish(self) -> Resolution {
        match self.without_check {
            Some(found) => found,
            None => Resolution::not_found(self.pypy, self.searched.join(", ")),
        }
    }
}
