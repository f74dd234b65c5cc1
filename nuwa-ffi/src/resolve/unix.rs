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
//! In places 1-3, a symbol counts only if it lies in the same object as
//! `PyEval_SaveThread`; in place 4, only if it lies in nuwa's own object:
//! the functions and the version always come from one libpython. "The same
//! object" is told by glibc's `_dl_find_object` where it has it (2.35 and
//! later: the object's link map, found without the loader's lock, which a
//! walk would wait for while another thread's `dl_iterate_phdr` callback
//! may wait for the GIL this thread holds); otherwise the way glibc's
//! `dladdr` tells it, by the object's `PT_LOAD` segments, found with one
//! `dl_iterate_phdr` walk for the first symbol (on musl only: an older
//! glibc, FreeBSD and Android hold the loader's lock through a walk's
//! callbacks, and are told by `dladdr`); each further symbol is then
//! a comparison of its address with those ranges (a `dladdr` would also
//! search the object's symbol table for the nearest name, some 57,000
//! instructions in a libpython, each time). Without `dl_iterate_phdr`
//! (macOS), while a fork keeps nuwa from walking, or for an object with
//! more `PT_LOAD` segments than the walk keeps (16), each symbol is checked
//! with `dladdr`. The object they came from is then pinned
//! (`RTLD_NODELETE`), so that a host's `dlclose` cannot unmap the functions
//! nuwa keeps pointers to.
//!
//! The lookup builds no text: what a report needs is kept as found (the
//! object's name, how many objects were tried), and `Display` writes it.

use core::ffi::{CStr, c_char, c_void};
use std::ffi::CString;
use std::string::String;

use super::decide::{self, Lookup};
use super::report::{Place, Resolution, State, Via};
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
            // glibc drops a pending message as every later `dlopen`,
            // `dlsym` or `dlclose` starts (not `dladdr`), and writes it
            // only when `dlerror` asks (some 1,800 instructions): there
            // each handle's `dlclose`, after its lookups, drops it
            // (`a_lookup_leaves_no_dlerror_message`).
            #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
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

/// `dladdr`: the load address of the object `addr` lies in, and the
/// loader's name for it (valid while the object is loaded).
fn dladdr_of(addr: *const c_void) -> Option<(usize, *const c_char)> {
    let mut info = core::mem::MaybeUninit::<sys::DlInfo>::zeroed();
    // SAFETY: `dladdr` only reads the loader's tables and fills `info`.
    let found = unsafe { sys::dladdr(addr, info.as_mut_ptr()) };
    if found == 0 {
        return None;
    }
    // SAFETY: `dladdr` succeeded, so it filled `info`.
    let info = unsafe { info.assume_init() };
    Some((info.dli_fbase.addr(), info.dli_fname))
}

/// The loaded object that contains an address, as the same-object check
/// compares with it, and its name (copied as soon as it is found, as
/// `dladdr`'s always was: the loader's own copy lives only as long as the
/// object stays loaded).
struct Object {
    /// How an address is told to be inside it.
    bounds: Bounds,
    /// The loader's name for it (empty for the program itself).
    name: CString,
}

/// How [`Object`] tells that an address is inside it.
#[allow(
    clippy::large_enum_variant,
    reason = "one at a time, on the stack of a lookup"
)]
enum Bounds {
    /// Its segments, from one `dl_iterate_phdr` walk.
    #[cfg(nuwa_dl_iterate)]
    Mapped(super::loaded::Segments),
    /// Its load address, from `dladdr` (no `dl_iterate_phdr` here, or a
    /// fork kept nuwa from walking): each address checked costs a `dladdr`.
    Based(usize),
    /// Its link map, from glibc's `_dl_find_object`: each address checked
    /// costs a search without the loader's lock.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    Found(usize, FindObject),
}

/// glibc's `_dl_find_object` (2.35 and later).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
type FindObject = unsafe extern "C" fn(*mut c_void, *mut DlFindObject) -> core::ffi::c_int;

/// `struct dl_find_object`: the fields read, then room for every target's
/// tail (glibc's is 96 bytes or less).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[repr(C)]
struct DlFindObject {
    flags: u64,
    map_start: *mut c_void,
    map_end: *mut c_void,
    /// `struct link_map *`, whose second field is `l_name` (`<link.h>`).
    link_map: *const *const c_char,
    rest: [u64; 16],
}

/// `_dl_find_object`, looked up once (0: not yet, 1: not in this C library).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
static FIND_OBJECT: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// `_dl_find_object`, if this glibc has it: the object that holds an
/// address, found without the loader's lock (a `dl_iterate_phdr` walk takes
/// its write lock, and waits for a thread inside another walk whose callback
/// may wait for the GIL the looking thread holds).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn find_object() -> Option<FindObject> {
    find_object_in(None)
}

/// [`find_object`], looked up in `global` (the global scope, already open)
/// if it was not yet: the lookup asks with the handle it has.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn find_object_in(global: Option<&Handle>) -> Option<FindObject> {
    use core::sync::atomic::Ordering;
    let mut f = FIND_OBJECT.load(Ordering::Acquire);
    if f == 0 {
        // (On glibc, closing `opened` drops a failed lookup's message.)
        let opened;
        let global = match global {
            Some(global) => Some(global),
            None => {
                opened = Handle::global();
                opened.as_ref()
            }
        };
        f = global
            .and_then(|global| global.lookup(c"_dl_find_object"))
            .map_or(1, |p| p.addr());
        FIND_OBJECT.store(f, Ordering::Release);
    }
    // SAFETY: a non-null, non-1 value is the address of glibc's
    // `_dl_find_object`, whose C signature `FindObject` is.
    (f > 1).then(|| unsafe { core::mem::transmute::<usize, FindObject>(f) })
}

/// The link map of the object that holds `addr`, and its `l_name`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn found_in(find: FindObject, addr: *const c_void) -> Option<(usize, *const c_char)> {
    let mut out = core::mem::MaybeUninit::<DlFindObject>::zeroed();
    // SAFETY: `_dl_find_object` only reads the loader's tables (lock-free,
    // async-signal-safe) and fills at most a `struct dl_find_object`, which
    // `out` has room for.
    if unsafe { find(addr.cast_mut(), out.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: it succeeded, so it filled the fields read.
    let map = unsafe { out.assume_init() }.link_map;
    if map.is_null() {
        return None;
    }
    // SAFETY: `link_map` points to the object's `struct link_map`, whose
    // public part starts with `l_addr` and `l_name`; the object is loaded.
    Some((map.addr(), unsafe { *map.add(1) }))
}

impl Object {
    /// The object that contains `addr`, if any.
    fn of(addr: *const c_void) -> Option<Object> {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if let Some(find) = find_object() {
            let (map, name) = found_in(find, addr)?;
            return Some(Object {
                bounds: Bounds::Found(map, find),
                name: copied(name),
            });
        }
        // Only on musl, whose walk takes the loader's lock between objects,
        // not through the callbacks. glibc without `_dl_find_object` (before
        // 2.35), FreeBSD and Android hold it through them, so a walk on this
        // thread, which holds the GIL, would wait for good for another
        // thread whose callback waits for the GIL: `dladdr` (below) there,
        // as before the walk.
        #[cfg(nuwa_dl_iterate)]
        if cfg!(all(target_os = "linux", target_env = "musl"))
            && let (true, found) = super::loaded::segments_of(addr.addr())
        {
            let segments = found?;
            // An object with more segments than kept is told by `dladdr`
            // (below), which knows them all.
            if segments.complete {
                // SAFETY: the object holds an address found in it a moment
                // ago; its name is copied at once.
                let name = unsafe { segments.name() }.to_owned();
                return Some(Object {
                    bounds: Bounds::Mapped(segments),
                    name,
                });
            }
        }
        let (base, name) = dladdr_of(addr)?;
        Some(Object {
            bounds: Bounds::Based(base),
            name: copied(name),
        })
    }

    /// Whether `addr` lies in this object.
    fn holds(&self, addr: *const c_void) -> bool {
        match self.bounds {
            #[cfg(nuwa_dl_iterate)]
            Bounds::Mapped(ref segments) => segments.contains(addr.addr()),
            Bounds::Based(base) => dladdr_of(addr).is_some_and(|(b, _)| b == base),
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            Bounds::Found(map, find) => found_in(find, addr).is_some_and(|(m, _)| m == map),
        }
    }
}

/// A copy of the loader's name of an object found a moment ago (empty if
/// it has none).
fn copied(name: *const c_char) -> CString {
    if name.is_null() {
        CString::default()
    } else {
        // SAFETY: the loader's NUL-terminated name of an object that holds
        // an address found in it a moment ago; copied at once.
        unsafe { CStr::from_ptr(name) }.to_owned()
    }
}

/// Only the symbols of `object`, looked up through `inner`.
struct OneObject<'a> {
    inner: &'a dyn Lookup,
    object: &'a Object,
    /// `PyEval_SaveThread`, if already found in `object` (not asked again).
    save: Option<*mut c_void>,
}

impl Lookup for OneObject<'_> {
    fn lookup(&self, name: &CStr) -> Option<*mut c_void> {
        if let Some(save) = self.save
            && name == decide::GIL_PAIR[0]
        {
            return Some(save);
        }
        let p = self.inner.lookup(name)?;
        self.object.holds(p).then_some(p)
    }
}

/// Keeps the object the loader knows as `name` loaded for the rest of the
/// process (nothing for an empty name: the program itself stays).
fn pin(name: &CStr) {
    #[cfg(nuwa_dl_noload)]
    if !name.is_empty() {
        // SAFETY: `RTLD_NOLOAD` loads nothing; `RTLD_NODELETE` marks the
        // already loaded object so that no `dlclose` unloads it. The handle
        // itself is then closed: the mark stays.
        let h = unsafe {
            sys::dlopen(
                name.as_ptr(),
                sys::RTLD_LAZY | sys::RTLD_NOLOAD | sys::RTLD_NODELETE,
            )
        };
        drop(Handle::checked(h));
    }
    #[cfg(not(nuwa_dl_noload))]
    let _ = name;
}

/// Keeps the object that contains `addr` loaded for the rest of the
/// process, and returns its name (empty for the program itself).
pub(crate) fn pin_object_of(addr: *const c_void) -> Option<CString> {
    let name = Object::of(addr)?.name;
    pin(&name);
    Some(name)
}

/// The path of the object that contains nuwa's code, for a report (a
/// `dladdr`: only a diagnosis asks).
pub(crate) fn own_object() -> Option<String> {
    let (_, name) = dladdr_of(own())?;
    if name.is_null() {
        return None;
    }
    // SAFETY: nuwa's own object stays loaded while its code runs;
    // `dli_fname` is NUL-terminated.
    let name = unsafe { CStr::from_ptr(name) };
    Some(name.to_string_lossy().into_owned())
}

/// An address in nuwa's own code.
fn own() -> *const c_void {
    look_up as fn() -> (Resolution, Scanned) as *const c_void
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

    if let Some(global) = Handle::global() {
        // `_dl_find_object` (for the same-object check) from the handle
        // open here, not from one opened again.
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        let _ = find_object_in(Some(&global));
        if let Some(r) = search.try_place(&global, Via::GlobalScope) {
            return (r, Scanned::default());
        }
    }

    #[cfg(nuwa_dl_noload)]
    if let Some(mine) = Object::of(own())
        && !mine.name.is_empty()
        && let Some(handle) = Handle::reopen(&mine.name)
        && let Some(r) = search.try_place(&handle, Via::OwnObject)
    {
        return (r, Scanned::default());
    }

    #[cfg(nuwa_dl_iterate)]
    #[cfg_attr(not(nuwa_weak_linked), allow(unused_mut))]
    let mut scan = super::loaded::scan();
    #[cfg(all(nuwa_dl_iterate, nuwa_dl_noload))]
    {
        let found = scan.candidates().find_map(|path| {
            search.tried += 1;
            search.pypy |= super::names::is_libpypy(path.to_bytes());
            let handle = Handle::reopen(path)?;
            search.try_place(&handle, Via::LoadedObject)
        });
        if let Some(r) = found {
            return (r, scan);
        }
    }

    #[cfg(all(nuwa_weak_linked, nuwa_dl_iterate))]
    match super::loaded::segments_of(own().addr()) {
        (true, Some(segments)) => {
            if let Some(r) = search.try_linked(&Linked { segments }) {
                return (r, scan);
            }
        }
        (true, None) => {}
        // Skipped for a fork: the next block looks again.
        (false, _) => scan.incomplete(),
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
    /// Loaded objects named like libpython (or PyPy) tried.
    tried: usize,
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
        let object = Object::of(save)?;
        let state = decide::decide(&OneObject {
            inner: symbols,
            object: &object,
            // In `object`: it was found there.
            save: Some(save),
        });
        self.keep(state, via, object.name, true)
    }

    /// A place's answer: the resolution if it can release (its object
    /// pinned, if `pin`), otherwise kept if it is the first found without a
    /// held check. Not inlined: one copy for both callers, in every
    /// extension.
    #[inline(never)]
    fn keep(&mut self, state: State, via: Via, name: CString, pin_it: bool) -> Option<Resolution> {
        let ready = match state {
            State::NotFound { .. } => return None,
            State::NoHeldCheck { .. } if self.without_check.is_some() => return None,
            State::NoHeldCheck { .. } => false,
            State::Ready { .. } => true,
        };
        if ready && pin_it {
            pin(&name);
        }
        let found = Resolution {
            state,
            via,
            place: Place::Object(name),
        };
        if ready {
            return Some(found);
        }
        self.without_check = Some(found);
        None
    }

    /// Tries the functions linked into nuwa's own object: the resolution if
    /// it is ready to release. Nothing is pinned: the functions are in the
    /// object whose code is running.
    #[cfg(all(nuwa_weak_linked, nuwa_dl_iterate))]
    fn try_linked(&mut self, linked: &Linked) -> Option<Resolution> {
        linked.lookup(decide::GIL_PAIR[0])?;
        let state = decide::decide(linked);
        // SAFETY: nuwa's own object stays loaded while its code runs.
        let name = unsafe { linked.segments.name() }.to_owned();
        self.keep(state, Via::Linked, name, false)
    }

    fn finish(self) -> Resolution {
        match self.without_check {
            Some(found) => found,
            None => Resolution::not_found(self.pypy, self.tried),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::Details;
    use crate::resolve::report::Status;

    /// A place whose symbols lie where the test says: `here` in this test
    /// program, `there` in the C library (as an interposed or second
    /// library's would).
    struct Mixed {
        here: *mut c_void,
        there: *mut c_void,
        /// The names found `there`.
        elsewhere: &'static [&'static str],
    }

    impl Lookup for Mixed {
        fn lookup(&self, name: &CStr) -> Option<*mut c_void> {
            let name = name.to_str().ok()?;
            if self.elsewhere.contains(&name) {
                return Some(self.there);
            }
            [
                "PyEval_SaveThread",
                "PyEval_RestoreThread",
                "_PyThreadState_UncheckedGet",
                "PyGILState_GetThisThreadState",
            ]
            .contains(&name)
            .then_some(self.here)
        }
    }

    /// An address in this test program, and addresses in no object or in
    /// another one: the heap, the stack, and the C library's `write` where
    /// the C library is an object of its own (not in a static program,
    /// where `dlopen(NULL)` and `dladdr` find nothing either).
    fn addresses() -> (*mut c_void, Vec<*mut c_void>) {
        let here = own().cast_mut();
        let on_heap: *mut c_void = Box::into_raw(Box::new(0u64)).cast();
        let on_stack = 0u8;
        let mut others = vec![on_heap, (&raw const on_stack).cast_mut().cast()];
        if let Some(global) = Handle::global()
            && let Some(write) = global.lookup(c"write")
            && dladdr_of(write).map(|(base, _)| base) != dladdr_of(here).map(|(base, _)| base)
        {
            others.push(write);
        }
        (here, others)
    }

    /// The segments tell objects apart as `dladdr` does: the program from
    /// the C library, and neither holds the stack or the heap.
    #[test]
    fn an_object_holds_its_own_addresses_only() {
        let (here, others) = addresses();
        let found = Object::of(here).expect("the object of this program's code");
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        assert!(matches!(found.bounds, Bounds::Found(..)));
        #[cfg(all(nuwa_dl_iterate, not(all(target_os = "linux", target_env = "gnu"))))]
        assert!(matches!(found.bounds, Bounds::Mapped(_)));
        let by_dladdr = dladdr_of(here).map(|(base, _)| Object {
            bounds: Bounds::Based(base),
            name: CString::default(),
        });
        for object in [Some(&found), by_dladdr.as_ref()].into_iter().flatten() {
            assert!(object.holds(here));
            for &other in &others {
                assert!(!object.holds(other), "{other:?}");
            }
        }
        if let Some(&there) = others.get(2) {
            let libc = Object::of(there).expect("the C library");
            assert!(libc.holds(there) && !libc.holds(here));
            assert!(!libc.name.is_empty(), "the C library has a name");
        }
    }

    /// A lookup whose `dlsym`s fail (this test program has no Python)
    /// leaves no message for the host's `dlerror`; on glibc, because a
    /// failed `dlsym`'s message is dropped by the next `dl*` call (which
    /// `Handle::lookup` relies on: each handle's `dlclose` follows its
    /// lookups). The lookup is made here, on this thread (`resolution()`
    /// would look only if no other test had yet, and `look_again` would
    /// count a lookup that `without_python_blocks_do_not_look_again` may be
    /// counting on another thread): a change that ends the lookup with a
    /// failed `dlsym` fails here (checked by the breaker who wrote it). A
    /// static musl program has no global scope (its `dlopen` always
    /// fails): only the lookup is checked there.
    #[test]
    fn a_lookup_leaves_no_dlerror_message() {
        let message = || {
            // SAFETY: `dlerror` only reads and clears this thread's error
            // state.
            let m = unsafe { sys::dlerror() };
            // SAFETY: a message is NUL-terminated, valid until the next
            // `dl*` call on this thread; copied at once.
            (!m.is_null()).then(|| unsafe { CStr::from_ptr(m) }.to_owned())
        };
        if let Some(global) = Handle::global() {
            assert!(global.lookup(c"PyEval_SaveThread").is_none());
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            {
                assert!(global.lookup(c"write").is_some());
                assert_eq!(message(), None, "a later dlsym keeps the message");
            }
        } else {
            let static_musl = cfg!(all(target_env = "musl", target_feature = "crt-static"));
            assert!(static_musl, "no global scope: {:?}", message());
        }
        let (found, _) = look_up();
        assert!(!found.python_found(), "{found}");
        assert_eq!(message(), None);
    }

    /// A function found in another object than `PyEval_SaveThread` does not
    /// count: the place has no Python, or no held check, never a mix.
    #[test]
    fn a_function_from_another_object_does_not_count() {
        let (here, others) = addresses();
        let there = *others.last().expect("an address outside this program");
        let decide_on = |elsewhere| {
            let place = Mixed {
                here,
                there,
                elsewhere,
            };
            let object = Object::of(here).expect("the object of this program's code");
            let state = decide::decide(&OneObject {
                inner: &place,
                object: &object,
                save: None,
            });
            Resolution {
                state,
                via: Via::GlobalScope,
                place: Place::Object(object.name),
            }
            .status()
        };
        assert_eq!(decide_on(&[]), Status::Ready);
        assert_eq!(decide_on(&["PyEval_RestoreThread"]), Status::NotFound);
        assert_eq!(
            decide_on(&["PyGILState_GetThisThreadState"]),
            Status::FoundWithoutHeldCheck
        );
        assert_eq!(
            decide_on(&["_PyThreadState_UncheckedGet"]),
            Status::FoundWithoutHeldCheck
        );
    }
}
