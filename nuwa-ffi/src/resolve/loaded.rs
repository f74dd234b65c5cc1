//! nuwa's walks of the loaded objects (`dl_iterate_phdr`), and what they
//! tell: whether a libpython may have arrived since the last lookup, the
//! candidates a lookup tries, and the address ranges of an object (the one
//! that holds `PyEval_SaveThread`, for the same-object check; nuwa's own).
//!
//! # Fork
//!
//! glibc holds a lock of the dynamic loader for the whole of a
//! `dl_iterate_phdr` walk, and (2.36) does not reset it in a forked child:
//! a child forked while a thread of its parent was inside a walk waits for
//! that lock at its first walk, for good. So nuwa counts its own walks in
//! progress, and a fork handler (`pthread_atfork`, registered before nuwa's
//! first walk) waits, before the fork, until none is left; a walk that would
//! start while a fork is under way is skipped (its caller treats that as "no
//! change"). A thread of another library inside `dl_iterate_phdr` at a fork
//! (an unwinder, a profiler) still leaves the child waiting: that is glibc's
//! limit, which nuwa cannot lift. (`vfork` and `posix_spawn` run no fork
//! handlers; their children only `exec`.)
//!
//! # The loader's lock
//!
//! A walk takes the loader's write lock, one for the process (not the lock
//! that `dlopen` holds while constructors run, which is why a block after a
//! `dlopen` only walks). The first lookup (one walk for the same-object
//! check, wherever CPython is found, unless glibc has `_dl_find_object`)
//! and a block while no Python is found
//! therefore wait while another thread is inside `dl_iterate_phdr`; if that
//! thread's callback waits for a lock the looking thread holds (the GIL:
//! `threadpoolctl`'s callback is Python code), they deadlock (as a panic
//! unwinding on the block's thread would: the unwinder walks too), and a
//! fork on a thread that holds such a lock waits in the fork handler.
//!
//! # No allocation inside a walk
//!
//! Fork handlers registered after nuwa's run before it and may lock the
//! allocator (jemalloc does); a walk that allocated could then wait for a
//! lock held by the forking thread, which waits for the walk. So the
//! callbacks only read, compare and copy into buffers made beforehand.

use core::cell::Cell;
use core::ffi::{CStr, c_char, c_int, c_void};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU8, AtomicUsize, Ordering};
use std::boxed::Box;
use std::vec::Vec;

use super::names;
use crate::sys;

/// nuwa's walks in progress, in every thread.
static WALKS: AtomicUsize = AtomicUsize::new(0);
/// A fork is under way (between the prepare handler and the parent's or
/// child's handler): new walks are skipped.
static FORKING: AtomicBool = AtomicBool::new(false);

const UNREGISTERED: u8 = 0;
const REGISTERING: u8 = 1;
const REGISTERED: u8 = 2;
const FAILED: u8 = 3;
/// Whether the fork handlers are registered.
static ATFORK: AtomicU8 = AtomicU8::new(UNREGISTERED);
/// The process that is registering them (to tell, in a child forked in the
/// middle of that, that nobody will finish it).
static ATFORK_PID: AtomicI32 = AtomicI32::new(0);

std::thread_local! {
    /// This thread's walks in progress (more than one only if a signal
    /// handler walks while the thread it interrupted was walking).
    static OWN_WALKS: Cell<usize> = const { Cell::new(0) };
}

/// Before a fork: no new walk starts, and those in progress end (except
/// the forking thread's own, if a signal handler forks inside one).
unsafe extern "C" fn prepare() {
    FORKING.store(true, Ordering::SeqCst);
    let own = OWN_WALKS.try_with(Cell::get).unwrap_or(0);
    while WALKS.load(Ordering::SeqCst) > own {
        std::thread::yield_now();
    }
}

/// After a fork, in the parent and in the child: walks may start again.
unsafe extern "C" fn after() {
    FORKING.store(false, Ordering::SeqCst);
}

/// After a fork, in the child: the handlers are registered (a fork may have
/// come between the registration and its record).
unsafe extern "C" fn child() {
    ATFORK.store(REGISTERED, Ordering::Release);
    FORKING.store(false, Ordering::SeqCst);
}

fn getpid() -> c_int {
    // SAFETY: `getpid` has no preconditions.
    unsafe { sys::getpid() }
}

/// Registers the fork handlers once; whether they are registered. `false`
/// (walk nothing) while another thread registers them, or if the C library
/// refused (out of memory).
fn handlers_registered() -> bool {
    loop {
        match ATFORK.load(Ordering::Acquire) {
            REGISTERED => return true,
            FAILED => return false,
            UNREGISTERED => {
                if ATFORK
                    .compare_exchange(
                        UNREGISTERED,
                        REGISTERING,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_err()
                {
                    continue;
                }
                ATFORK_PID.store(getpid(), Ordering::Release);
                // SAFETY: the handlers are `extern "C"`, never unwind, and
                // only touch atomics and this thread's walk count.
                let rc = unsafe { sys::pthread_atfork(Some(prepare), Some(after), Some(child)) };
                let done = if rc == 0 { REGISTERED } else { FAILED };
                // Not over `REGISTERED`, stored by `child` in a child
                // forked after the registration took effect.
                let _ =
                    ATFORK.compare_exchange(REGISTERING, done, Ordering::AcqRel, Ordering::Acquire);
                return ATFORK.load(Ordering::Acquire) == REGISTERED;
            }
            _ => {
                // Another thread is registering; or this process is a child
                // forked while a thread of its parent was, before the
                // registration took effect, and nobody will finish it here.
                let pid = ATFORK_PID.load(Ordering::Acquire);
                if pid != 0 && pid != getpid() {
                    let _ = ATFORK.compare_exchange(
                        REGISTERING,
                        UNREGISTERED,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                    continue;
                }
                return false;
            }
        }
    }
}

type Callback = unsafe extern "C" fn(*mut sys::DlPhdrInfo, usize, *mut c_void) -> c_int;

/// `dl_iterate_phdr(callback, data)`, counted, unless a fork is under way
/// (or the fork handlers could not be registered): whether it walked.
///
/// # Safety
///
/// `callback` must accept `data`, never unwind and never allocate.
unsafe fn walk(callback: Callback, data: *mut c_void) -> bool {
    if !handlers_registered() {
        return false;
    }
    let _ = OWN_WALKS.try_with(|n| n.set(n.get() + 1));
    WALKS.fetch_add(1, Ordering::SeqCst);
    // Paired with `prepare`: either it sees this walk counted and waits for
    // it, or this sees the fork under way and does not walk.
    let walked = !FORKING.load(Ordering::SeqCst);
    if walked {
        // SAFETY: as the caller promised.
        unsafe { sys::dl_iterate_phdr(Some(callback), data) };
    }
    WALKS.fetch_sub(1, Ordering::SeqCst);
    let _ = OWN_WALKS.try_with(|n| n.set(n.get().saturating_sub(1)));
    walked
}

/// `dlpi_adds + dlpi_subs` of one object (every object reports the same),
/// if this C library's `struct dl_phdr_info` has them (`size`).
///
/// # Safety
///
/// `info` and `size` as `dl_iterate_phdr` passes them.
unsafe fn generation_of(info: *const sys::DlPhdrInfo, size: usize) -> Option<usize> {
    (size >= core::mem::size_of::<sys::DlPhdrInfo>()).then(|| {
        // SAFETY: at `size`, the structure has the counters.
        let (adds, subs) = unsafe { ((*info).dlpi_adds, (*info).dlpi_subs) };
        adds.wrapping_add(subs) as usize
    })
}

/// The object's name, empty if it has none.
///
/// # Safety
///
/// `info` as `dl_iterate_phdr` passes it.
unsafe fn name_of<'a>(info: *const sys::DlPhdrInfo) -> &'a [u8] {
    // SAFETY: `dlpi_name` is null or NUL-terminated, valid during the
    // callback (the caller uses it only there).
    unsafe {
        let name: *const c_char = (*info).dlpi_name;
        if name.is_null() {
            &[]
        } else {
            CStr::from_ptr(name).to_bytes()
        }
    }
}

/// Whether `names` (NUL-terminated names, one after another) has `name`.
fn has(names: &[u8], name: &[u8]) -> bool {
    names.split(|&b| b == 0).any(|n| n == name)
}

/// The loader's count and the libpython-like names when a lookup last
/// looked (see [`remember`]).
struct Seen {
    /// The candidates that lookup tried, each NUL-terminated.
    names: Box<[u8]>,
}

/// What the last complete lookup saw: null before it (then the next block
/// looks), and after an incomplete one. Each is leaked: a reader may still
/// hold the previous one; one is made per lookup, and a lookup happens
/// again only when a new libpython appears.
static SEEN: AtomicPtr<Seen> = AtomicPtr::new(core::ptr::null_mut());
/// The loader's count at the last lookup, or at the last block that found
/// no new libpython since.
static CHECKED: AtomicUsize = AtomicUsize::new(usize::MAX);

/// This C library's `dl_phdr_info` has no load/unload counters (OpenBSD):
/// blocks do not walk.
static NO_COUNTERS: AtomicBool = AtomicBool::new(false);

/// What a lookup's walk found: the loader's count, and the loaded objects
/// named like libpython (or PyPy), in load order.
pub(super) struct Scan {
    generation: Option<usize>,
    /// The names, each NUL-terminated, copied during the walk.
    buf: Vec<u8>,
    /// The walk ran (not skipped for a fork); cleared by the lookup if one
    /// of its other walks was skipped. (A name that does not fit in `buf`,
    /// past 16 KiB of libpython names, is neither tried nor remembered: it
    /// is tried when the next library load makes it look new.)
    complete: bool,
}

impl Scan {
    /// The candidates' names.
    #[cfg_attr(
        not(nuwa_dl_noload),
        allow(dead_code, reason = "tried where dlopen has RTLD_NOLOAD")
    )]
    pub(super) fn candidates(&self) -> impl Iterator<Item = &CStr> {
        self.buf
            .split_inclusive(|&b| b == 0)
            .filter_map(|n| CStr::from_bytes_with_nul(n).ok())
    }

    /// The lookup that made this scan missed something (a walk skipped
    /// for a fork): the next block looks again.
    pub(super) fn incomplete(&mut self) {
        self.complete = false;
    }
}

impl Default for Scan {
    /// No walk: incomplete.
    fn default() -> Scan {
        Scan {
            generation: None,
            buf: Vec::new(),
            complete: false,
        }
    }
}

/// Room for the candidates' names (several full paths).
const SCAN_ROOM: usize = 16 * 1024;

/// Walks the loaded objects once: the loader's count and the candidates.
pub(super) fn scan() -> Scan {
    unsafe extern "C" fn visit(
        info: *mut sys::DlPhdrInfo,
        size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: `data` is the `Scan` below, borrowed for the walk; `info`
        // and `size` as the C library passes them.
        unsafe {
            let scan = &mut *data.cast::<Scan>();
            if scan.generation.is_none() {
                scan.generation = generation_of(info, size);
            }
            let name = name_of(info);
            if names::is_libpython(name) || names::is_libpypy(name) {
                // Within the capacity reserved: never reallocates.
                if scan.buf.capacity() - scan.buf.len() > name.len() {
                    scan.buf.extend_from_slice(name);
                    scan.buf.push(0);
                }
            }
        }
        0
    }
    let mut scan = Scan {
        generation: None,
        buf: Vec::with_capacity(SCAN_ROOM),
        complete: true,
    };
    // SAFETY: `visit` takes the `Scan`, does not unwind, and does not
    // allocate (it copies within the capacity reserved).
    let walked = unsafe { walk(visit, (&raw mut scan).cast()) };
    scan.complete &= walked;
    scan
}

/// Records what a lookup's walk saw, after the lookup's answer was offered:
/// the next blocks look again only if a libpython not among these names
/// appears. An incomplete walk is not recorded: the next block looks again.
pub(super) fn remember(scan: &Scan) {
    if !scan.complete {
        SEEN.store(core::ptr::null_mut(), Ordering::Release);
        return;
    }
    let seen = Box::into_raw(Box::new(Seen {
        names: scan.buf.clone().into_boxed_slice(),
    }));
    // The one replaced is leaked: a block may be reading it. The count is
    // stored after the names, which a block that reads it then sees.
    SEEN.store(seen, Ordering::Release);
    if let Some(generation) = scan.generation {
        CHECKED.store(generation, Ordering::Release);
    }
}

/// Whether a libpython may have been loaded since the last lookup, for a
/// block while no Python that can release is found.
///
/// One walk that stops at the first object while the loader's count has not
/// moved since the last check; if it moved, the same walk goes on and only
/// compares names (no `dlopen`, `dladdr` or `dlsym`, which wait for the
/// loader's lock that a running `dlopen` holds while constructors run). A
/// walk skipped for a fork counts as no change.
pub(super) fn python_may_have_arrived() -> bool {
    if NO_COUNTERS.load(Ordering::Relaxed) || ATFORK.load(Ordering::Relaxed) == FAILED {
        // Nothing can tell (and every walk would be skipped): never.
        return false;
    }
    let seen = SEEN.load(Ordering::Acquire);
    if seen.is_null() {
        // No lookup recorded (the last one was incomplete): look.
        return true;
    }
    // SAFETY: `SEEN` only ever holds leaked `Box`es.
    let seen = unsafe { &*seen };

    struct Check<'a> {
        checked: usize,
        known: &'a [u8],
        first: bool,
        generation: Option<usize>,
        new_python: bool,
    }
    unsafe extern "C" fn visit(
        info: *mut sys::DlPhdrInfo,
        size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: `data` is the `Check` below, borrowed for the walk; `info`
        // and `size` as the C library passes them.
        unsafe {
            let check = &mut *data.cast::<Check<'_>>();
            if core::mem::take(&mut check.first) {
                check.generation = generation_of(info, size);
                match check.generation {
                    Some(now) if now != check.checked => {}
                    // Unchanged (or no counters): stop here.
                    _ => return 1,
                }
            }
            let name = name_of(info);
            if names::is_libpython(name) && !has(check.known, name) {
                check.new_python = true;
                return 1;
            }
        }
        0
    }
    let checked = CHECKED.load(Ordering::Acquire);
    let mut check = Check {
        checked,
        known: &seen.names,
        first: true,
        generation: None,
        new_python: false,
    };
    // SAFETY: `visit` takes the `Check`, does not unwind and does not
    // allocate.
    if !unsafe { walk(visit, (&raw mut check).cast()) } {
        return false;
    }
    if check.new_python {
        return true;
    }
    if check.generation.is_none() {
        // This C library's `dl_phdr_info` has no counters: do not walk
        // again for nothing.
        NO_COUNTERS.store(true, Ordering::Relaxed);
    }
    if let Some(now) = check.generation
        && now != checked
    {
        CHECKED.store(now, Ordering::Relaxed);
    }
    false
}

/// Whether the loader's count can be read here (OpenBSD's `dl_phdr_info`,
/// for one, has no counters): blocks look again only where it can.
pub(super) fn counters_readable() -> bool {
    unsafe extern "C" fn first(
        info: *mut sys::DlPhdrInfo,
        size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: `data` is the `Option` below; `info` and `size` as passed.
        unsafe { *data.cast::<Option<usize>>() = generation_of(info, size) };
        1
    }
    let mut generation: Option<usize> = None;
    // A walk is skipped while another thread registers the fork handlers
    // or a fork is under way: both pass within microseconds, and the answer
    // (which `init()`'s text states) must not depend on them, so a skipped
    // walk is tried again, a bounded number of times (a registration that
    // failed for good skips every time, and then the answer is no).
    for _ in 0..100_000 {
        // SAFETY: `first` takes the `Option`, does not unwind or allocate.
        if unsafe { walk(first, (&raw mut generation).cast()) } {
            return generation.is_some();
        }
        if ATFORK.load(Ordering::Acquire) == FAILED {
            return false;
        }
        std::thread::yield_now();
    }
    false
}

/// The address ranges (`PT_LOAD` segments, as `dl_iterate_phdr` reports
/// them) of the object that contains an address, and the loader's name for
/// it: what tells whether two addresses lie in one object (the test glibc's
/// `dladdr` makes, without its walk of the object's symbol table), and
/// nuwa's own object, even in a fully static program, where `dladdr` knows
/// no object.
pub(super) struct Segments {
    ranges: [(usize, usize); 16],
    count: usize,
    /// Every `PT_LOAD` segment of the object is in `ranges` (false for an
    /// object with more than 16: [`contains`](Segments::contains) then
    /// misses the rest, and the same-object check asks `dladdr` instead).
    pub(super) complete: bool,
    /// `dlpi_name`: NUL-terminated, empty for the program itself; the
    /// loader's, valid while the object is loaded.
    name: *const c_char,
}

impl Segments {
    /// Whether `addr` lies in one of the object's segments (only the first
    /// 16 are kept: an address beyond them counts as outside, the safe
    /// answer; see `complete`).
    pub(super) fn contains(&self, addr: usize) -> bool {
        self.ranges[..self.count]
            .iter()
            .any(|&(start, end)| (start..end).contains(&addr))
    }

    /// The object's name as the loader knows it (empty for the program).
    ///
    /// # Safety
    ///
    /// The object is still loaded, and stays loaded while the name is used.
    pub(super) unsafe fn name(&self) -> &CStr {
        if self.name.is_null() {
            c""
        } else {
            // SAFETY: the caller's contract; `dlpi_name` is NUL-terminated.
            unsafe { CStr::from_ptr(self.name) }
        }
    }
}

/// Whether the walk ran (not skipped for a fork), and the segments of the
/// object that contains `addr`, if it found one. One walk, stopped at that
/// object: a few hundred instructions an object before it.
pub(super) fn segments_of(addr: usize) -> (bool, Option<Segments>) {
    struct Find {
        addr: usize,
        found: Option<Segments>,
    }
    unsafe extern "C" fn visit(
        info: *mut sys::DlPhdrInfo,
        _size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: `data` is the `Find` below; `info` as passed, its
        // `dlpi_phdr` an array of `dlpi_phnum` program headers.
        unsafe {
            let find = &mut *data.cast::<Find>();
            let base = (*info).dlpi_addr;
            let phdrs: *const sys::Phdr = (*info).dlpi_phdr.cast();
            let count = usize::from((*info).dlpi_phnum);
            if phdrs.is_null() {
                return 0;
            }
            let mut segments = Segments {
                ranges: [(0, 0); 16],
                count: 0,
                complete: true,
                name: (*info).dlpi_name,
            };
            // Every segment is compared with `addr`, the first 16 kept.
            let mut holds = false;
            for i in 0..count {
                let ph = &*phdrs.add(i);
                if ph.p_type != sys::PT_LOAD {
                    continue;
                }
                let start = base.wrapping_add(ph.p_vaddr as usize);
                let end = start.wrapping_add(ph.p_memsz as usize);
                holds |= (start..end).contains(&find.addr);
                if segments.count == segments.ranges.len() {
                    segments.complete = false;
                    continue;
                }
                segments.ranges[segments.count] = (start, end);
                segments.count += 1;
            }
            if holds {
                find.found = Some(segments);
                return 1;
            }
        }
        0
    }
    let mut find = Find { addr, found: None };
    // SAFETY: `visit` takes the `Find`, does not unwind or allocate.
    let walked = unsafe { walk(visit, (&raw mut find).cast()) };
    (walked, find.found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_segments_hold_own_code_and_not_the_stack() {
        let own = segments_of as fn(usize) -> (bool, Option<Segments>) as *const () as usize;
        let (walked, segments) = segments_of(own);
        assert!(walked);
        let segments = segments.expect("nuwa's own object");
        assert!(segments.contains(own));
        let on_stack = 0u8;
        assert!(!segments.contains((&raw const on_stack).addr()));
    }

    #[test]
    fn names_compare_whole() {
        let names = b"/a/libpython3.12.so\0libpython3.so\0";
        assert!(has(names, b"libpython3.so"));
        assert!(has(names, b"/a/libpython3.12.so"));
        assert!(!has(names, b"libpython3.12.so"));
    }
}
