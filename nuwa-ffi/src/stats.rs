//! The counters behind [`stats`](crate::stats): a list of call sites that
//! only grows, and the backend wrapper that records into them.
//!
//! No lock: the table of the strict form's call sites and the list of call
//! sites are lists that only grow, each entry put on with a
//! compare-exchange, and a site half put on the list by one thread is
//! finished by the next that looks. So a thread stopped anywhere in this
//! module holds up no other, and a child forked while another thread of the
//! parent was in here (where only the forking thread goes on) runs its
//! blocks and counts them.

use core::fmt;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::boxed::Box;
use std::panic::Location;
use std::time::Duration;
use std::vec::Vec;

use nuwa_core::GilOps;

/// One call site's counters. Made by `nogil!` (a
/// `static` per site); read with [`sites`].
#[derive(Debug)]
pub struct CallSite {
    file: &'static str,
    line: u32,
    column: u32,
    /// The next site on the list of sites, [`UNLINKED`] until it is put
    /// on the list (null at the end of the list).
    next: AtomicPtr<CallSite>,
    blocks: AtomicU64,
    not_released: AtomicU64,
    released_ns: AtomicU64,
    max_released_ns: AtomicU64,
    waiting_ns: AtomicU64,
    max_waiting_ns: AtomicU64,
    short: AtomicU64,
}

/// The registered call sites, newest first: a list of statics (or leaked
/// sites of the strict form), never shortened. It takes no lock: a site is
/// put on it through [`PENDING`], which any thread completes.
static SITES: AtomicPtr<CallSite> = AtomicPtr::new(core::ptr::null_mut());
/// The site being put on [`SITES`] (null: none). A thread claims it for
/// its site, and any thread that finds it set finishes the job (see
/// [`finish_pending`]): a thread stopped halfway, or gone (a forked child has
/// only the thread that forked), leaves nothing stuck and no site lost.
static PENDING: AtomicPtr<CallSite> = AtomicPtr::new(core::ptr::null_mut());
/// The `next` of a site not on the list yet: an address no site can have.
const UNLINKED: *mut CallSite = core::ptr::NonNull::<CallSite>::dangling().as_ptr();
/// The short-block threshold, in nanoseconds.
static SHORT_NS: AtomicU64 = AtomicU64::new(10_000);

impl CallSite {
    /// A call site's counters, all zero (a `static` in `nogil!`'s expansion).
    pub const fn new(file: &'static str, line: u32, column: u32) -> Self {
        CallSite {
            file,
            line,
            column,
            next: AtomicPtr::new(UNLINKED),
            blocks: AtomicU64::new(0),
            not_released: AtomicU64::new(0),
            released_ns: AtomicU64::new(0),
            max_released_ns: AtomicU64::new(0),
            waiting_ns: AtomicU64::new(0),
            max_waiting_ns: AtomicU64::new(0),
            short: AtomicU64::new(0),
        }
    }

    /// Puts this site on the list that [`sites`] reads, once.
    #[inline(always)]
    fn register(&'static self) {
        if self.next.load(Ordering::Relaxed) == UNLINKED {
            self.register_slow();
        }
    }

    /// Claims [`PENDING`] for this site and puts it on the list, unless it is
    /// linked to the list already (then it is on it, or a thread that finds
    /// it pending puts it there). No lock: each turn either finishes another
    /// thread's pending site or claims the slot.
    #[cold]
    #[inline(never)]
    fn register_slow(&'static self) {
        let me = core::ptr::from_ref(self).cast_mut();
        loop {
            finish_pending();
            if self.next.load(Ordering::Acquire) != UNLINKED {
                return;
            }
            if PENDING
                .compare_exchange(
                    core::ptr::null_mut(),
                    me,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
            {
                registry_point(RegistryPoint::Claimed);
                finish_pending();
                return;
            }
        }
    }

    /// A block begins. It counts now, before its backend is called, so
    /// that it counts whichever way it ends (a panic of the backend's own
    /// included), and while it runs.
    pub(crate) fn began(&'static self) {
        self.register();
        self.blocks.fetch_add(1, Ordering::Relaxed);
    }

    /// The block that just began released nothing.
    #[inline(always)]
    pub(crate) fn released_nothing(&self) {
        // Release: a snapshot that sees this sees the block counted (see
        // `stats`).
        self.not_released.fetch_add(1, Ordering::Release);
    }

    /// A released stretch ended, and the GIL was taken back after `waiting`
    /// (in nanoseconds, as `released`): at the end of a block or for one of
    /// its `with_gil!` parts, after which the same block goes on.
    #[inline(always)]
    pub(crate) fn stretch(&self, released: u64, waiting: u64) {
        // Each longest after its total, with Release: see `stats`. A longest
        // is written only if this stretch may beat it (a relaxed read first:
        // a stale read only costs the read-modify-write it would have cost
        // anyway); one not written was written, after its own total, by the
        // stretch that set it.
        self.released_ns.fetch_add(released, Ordering::Relaxed);
        if released > self.max_released_ns.load(Ordering::Relaxed) {
            self.max_released_ns.fetch_max(released, Ordering::Release);
        }
        self.waiting_ns.fetch_add(waiting, Ordering::Relaxed);
        if waiting > self.max_waiting_ns.load(Ordering::Relaxed) {
            self.max_waiting_ns.fetch_max(waiting, Ordering::Release);
        }
        if released < SHORT_NS.load(Ordering::Relaxed) {
            self.short.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A snapshot. Blocks may be counting meanwhile, so each part is read
    /// before what it is part of, with Acquire: the writers add to the whole
    /// first and to the part with Release after it, so a snapshot never
    /// shows more blocks that released nothing than blocks, nor a longest
    /// stretch or wait above its total. (A [`reset`] racing with blocks may
    /// still leave such figures until the next reset.)
    fn stats(&self) -> Stats {
        let ns = |ns: u64| Duration::from_nanos(ns);
        let not_released = self.not_released.load(Ordering::Acquire);
        let max_released = self.max_released_ns.load(Ordering::Acquire);
        let max_waiting = self.max_waiting_ns.load(Ordering::Acquire);
        Stats {
            blocks: self.blocks.load(Ordering::Relaxed),
            not_released,
            released: ns(self.released_ns.load(Ordering::Relaxed)),
            max_released: ns(max_released),
            waiting: ns(self.waiting_ns.load(Ordering::Relaxed)),
            max_waiting: ns(max_waiting),
            short: self.short.load(Ordering::Relaxed),
        }
    }

    fn reset(&self) {
        for counter in [
            &self.blocks,
            &self.not_released,
            &self.released_ns,
            &self.max_released_ns,
            &self.waiting_ns,
            &self.max_waiting_ns,
            &self.short,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }
}

/// Puts the pending site (if any) on the list of sites, and clears
/// [`PENDING`]. Any thread may call it, any number of times, at any moment:
///
/// - While a site is pending, only it can be put on the list, so the head
///   is either what it was when the site was claimed, or the site itself.
/// - The site's `next` goes from [`UNLINKED`] to that head once (a
///   compare-exchange), and the head becomes the site only if it still is
///   the `next` the site got: the head never comes back to an older site,
///   so a thread that read `PENDING` long ago (the site since put on the
///   list, another one pending now) changes nothing.
/// - `PENDING` is cleared only once the site is linked, and then the site
///   is on the list, or about to be by the linking thread's compare-exchange.
fn finish_pending() {
    let pending = PENDING.load(Ordering::Acquire);
    if pending.is_null() {
        return;
    }
    // SAFETY: only `&'static CallSite`s are made pending.
    let site = unsafe { &*pending };
    let head = SITES.load(Ordering::Acquire);
    if head != pending {
        let next =
            match site
                .next
                .compare_exchange(UNLINKED, head, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => head,
                Err(linked) => linked,
            };
        registry_point(RegistryPoint::Linked);
        if next == head {
            // Fails only if another thread put it there first.
            let _ = SITES.compare_exchange(head, pending, Ordering::AcqRel, Ordering::Acquire);
        }
    }
    let _ = PENDING.compare_exchange(
        pending,
        core::ptr::null_mut(),
        Ordering::AcqRel,
        Ordering::Acquire,
    );
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The monotonic clock, in nanoseconds from an arbitrary origin (which
/// may differ between threads: a stretch is always measured on one thread):
/// what a block records its stretches with. Read three times per block, so
/// read as cheaply as the target allows: on 64-bit Linux straight from
/// `clock_gettime(CLOCK_MONOTONIC)` (the clock `Instant` reads), as one
/// integer, so that a stretch is one subtraction (`Instant`'s own
/// arithmetic costs more than the reads); elsewhere through `Instant`
/// ([`portable_now`]).
#[inline(always)]
pub(crate) fn now() -> u64 {
    #[cfg(all(target_os = "linux", target_pointer_width = "64"))]
    {
        let mut ts = Timespec { sec: 0, nsec: 0 };
        // SAFETY: `ts` is a valid `struct timespec` (two 64-bit fields on
        // 64-bit Linux, in glibc and musl alike) for the call to fill; the
        // monotonic clock always exists on Linux, so the call cannot fail.
        unsafe { clock_gettime(CLOCK_MONOTONIC, &mut ts) };
        // (Non-negative: seconds since boot, and nanoseconds below 10^9.)
        (ts.sec as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(ts.nsec as u64)
    }
    #[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
    portable_now()
}

/// [`now`] through `Instant`: nanoseconds since this thread's first read.
///
/// The origin is per thread, in a `Cell` that needs no initializer and no
/// destructor, so that a read takes no lock and waits for nothing: a child
/// forked while another thread of the parent was making its first read, or
/// a signal handler's block that interrupts this thread's first read, reads
/// the clock as any other read does (a process-wide `OnceLock` would wait
/// forever in both). A stretch begins and ends on one thread, so one
/// thread's origin is enough.
#[cfg(any(test, not(all(target_os = "linux", target_pointer_width = "64"))))]
#[allow(
    clippy::missing_const_for_thread_local,
    reason = "the initializer is const: clippy 1.97 still reports it on Windows"
)]
fn portable_now() -> u64 {
    use core::cell::Cell;
    use std::time::Instant;
    std::thread_local! {
        static ORIGIN: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    let now = Instant::now();
    ORIGIN.with(|origin| {
        let from = match origin.get() {
            Some(from) => from,
            None => {
                #[cfg(test)]
                tests::first_read_point();
                origin.set(Some(now));
                now
            }
        };
        duration_ns(now.saturating_duration_since(from))
    })
}

/// `struct timespec` of 64-bit Linux.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

/// `CLOCK_MONOTONIC` on Linux.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
const CLOCK_MONOTONIC: core::ffi::c_int = 1;

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
unsafe extern "C" {
    fn clock_gettime(clock: core::ffi::c_int, ts: *mut Timespec) -> core::ffi::c_int;
}

/// What the blocks of one call site (or of the process) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Blocks begun (released or not), counted as they begin: every block
    /// counts, however it ends, and so does a block still running.
    pub blocks: u64,
    /// Blocks that released nothing (the thread did not hold the GIL: a
    /// nested block, a thread Python does not know, no interpreter).
    pub not_released: u64,
    /// Time spent released, summed over the blocks that released.
    pub released: Duration,
    /// The longest time the GIL stayed released in one stretch: a block, or
    /// the part of a block between two of its `with_gil!` parts.
    pub max_released: Duration,
    /// Time spent waiting to take the GIL back (at the end of a block and for
    /// its `with_gil!` parts), summed.
    pub waiting: Duration,
    /// The longest wait to take the GIL back.
    pub max_waiting: Duration,
    /// Stretches released for less than the short-block threshold
    /// ([`short_threshold`]), each a release that cost more than it gave: a
    /// block without `with_gil!` parts is one stretch, and each part starts
    /// another (so a block with parts may count more than once here).
    pub short: u64,
}

impl Stats {
    fn add(&mut self, other: &Stats) {
        self.blocks += other.blocks;
        self.not_released += other.not_released;
        self.released += other.released;
        self.max_released = self.max_released.max(other.max_released);
        self.waiting += other.waiting;
        self.max_waiting = self.max_waiting.max(other.max_waiting);
        self.short += other.short;
    }
}

/// One call site's [`Stats`], with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SiteStats {
    /// The source file of the block (as `file!()` gives it).
    pub file: &'static str,
    /// Its line.
    pub line: u32,
    /// Its column.
    pub column: u32,
    /// What its blocks did.
    pub stats: Stats,
}

impl fmt::Display for SiteStats {
    /// One line: `file:line:column: N blocks, ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        write!(
            f,
            "{}:{}:{}: {} blocks ({} released nothing, {} short), released {:?} (longest {:?}), \
             waited {:?} to take the GIL back (longest {:?})",
            self.file,
            self.line,
            self.column,
            s.blocks,
            s.not_released,
            s.short,
            s.released,
            s.max_released,
            s.waiting,
            s.max_waiting
        )
    }
}

/// Every call site that ran a block since the process started, newest first.
pub fn sites() -> Vec<SiteStats> {
    finish_pending();
    let mut out = Vec::new();
    let mut p = SITES.load(Ordering::Acquire);
    while !p.is_null() {
        // SAFETY: only `&'static CallSite`s are put on the list, and never
        // taken off.
        let site = unsafe { &*p };
        out.push(SiteStats {
            file: site.file,
            line: site.line,
            column: site.column,
            stats: site.stats(),
        });
        p = site.next.load(Ordering::Acquire);
    }
    out
}

/// The process's totals: every call site's [`Stats`] added up.
pub fn total() -> Stats {
    let mut total = Stats::default();
    for site in sites() {
        total.add(&site.stats);
    }
    total
}

/// Sets every counter of every call site back to zero. Blocks running at
/// that moment may still add to them, to some counters and not to others:
/// after a reset that raced with blocks, a site may show, say, more blocks
/// that released nothing than blocks, until the next reset. Reset while no
/// block runs for exact figures.
pub fn reset() {
    finish_pending();
    let mut p = SITES.load(Ordering::Acquire);
    while !p.is_null() {
        // SAFETY: as in `sites`.
        let site = unsafe { &*p };
        site.reset();
        p = site.next.load(Ordering::Acquire);
    }
}

/// The short-block threshold: a block released for less counts as short.
pub fn short_threshold() -> Duration {
    Duration::from_nanos(SHORT_NS.load(Ordering::Relaxed))
}

/// Sets the short-block threshold (default 10 µs).
pub fn set_short_threshold(threshold: Duration) {
    SHORT_NS.store(duration_ns(threshold), Ordering::Relaxed);
}

/// The call site of a strict-form call (`nuwa_ffi::nogil`,
/// `nuwa_ffi::nogil_catch`), found by its `Location` in [`STRICT`].
///
/// No lock: a thread stopped anywhere in here (or gone, in a forked child)
/// holds nothing another thread waits for. What it had not published is
/// its own, and another thread looking up the same call site makes its own
/// entry.
pub(crate) fn site_of(location: &'static Location<'static>) -> &'static CallSite {
    let key = core::ptr::from_ref(location).addr();
    let place = (location.file(), location.line(), location.column());
    let mut head = STRICT.load(Ordering::Acquire);
    // The entries from here on were searched.
    let mut searched: *mut Entry = core::ptr::null_mut();
    // A site found for the same place: one line of source may have several
    // `Location`s (a generic caller instantiated in two crates), which
    // share its site.
    let mut same_place: *const CallSite = core::ptr::null();
    // This thread's own site and entry, until published.
    let mut own_site: *mut CallSite = core::ptr::null_mut();
    let mut entry: *mut Entry = core::ptr::null_mut();
    loop {
        let mut p = head;
        while p != searched {
            // SAFETY: published entries are leaked and never changed.
            let e = unsafe { &*p };
            if e.key == key {
                // SAFETY: the unpublished allocations are this thread's own.
                unsafe { free(entry, own_site) };
                // SAFETY: a published entry's site is a leaked or static one.
                return unsafe { &*e.site };
            }
            // SAFETY: as above.
            let site = unsafe { &*e.site };
            if same_place.is_null() && (site.file, site.line, site.column) == place {
                same_place = e.site;
            }
            p = e.next;
        }
        searched = head;
        let site = if same_place.is_null() {
            if own_site.is_null() {
                own_site = Box::into_raw(Box::new(CallSite::new(place.0, place.1, place.2)));
            }
            own_site.cast_const()
        } else {
            if !own_site.is_null() {
                // SAFETY: never published.
                drop(unsafe { Box::from_raw(own_site) });
                own_site = core::ptr::null_mut();
            }
            same_place
        };
        if entry.is_null() {
            entry = Box::into_raw(Box::new(Entry {
                key,
                site,
                next: head,
            }));
        } else {
            // SAFETY: this thread's own entry, not published yet.
            unsafe {
                (*entry).site = site;
                (*entry).next = head;
            }
        }
        registry_point(RegistryPoint::Lookup);
        match STRICT.compare_exchange(head, entry, Ordering::AcqRel, Ordering::Acquire) {
            // SAFETY: published: leaked (the entry and its site).
            Ok(_) => return unsafe { &*site },
            Err(now) => head = now,
        }
    }
}

/// A strict-form call site's `Location` (by address) and its site.
struct Entry {
    key: usize,
    site: *const CallSite,
    next: *mut Entry,
}

/// The strict-form call sites, newest first: a list of leaked entries,
/// never shortened, each pushed with a compare-exchange.
static STRICT: AtomicPtr<Entry> = AtomicPtr::new(core::ptr::null_mut());

/// Frees what [`site_of`] allocated and did not publish.
///
/// # Safety
///
/// Both are null or this thread's own allocations, never published.
unsafe fn free(entry: *mut Entry, site: *mut CallSite) {
    if !entry.is_null() {
        // SAFETY: the caller's contract.
        drop(unsafe { Box::from_raw(entry) });
    }
    if !site.is_null() {
        // SAFETY: the caller's contract.
        drop(unsafe { Box::from_raw(site) });
    }
}

/// A point in the registry of call sites where a test can stop a thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryPoint {
    /// A strict-form call site is looked up, and not found yet.
    Lookup,
    /// A call site is claimed for the list of sites, not put on it yet.
    Claimed,
    /// A claimed call site is linked to the list, not put at its head yet.
    Linked,
}

/// The hook of [`set_registry_hook`], as a pointer (null: none).
static HOOK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Test-only, not public API: `hook` is called by every thread that reaches
/// a [`RegistryPoint`] (off the fast path), so that a test can stop a
/// thread there, for example while another thread forks.
pub fn set_registry_hook(hook: Option<fn(RegistryPoint)>) {
    let ptr = hook.map_or(core::ptr::null_mut(), |f| f as *mut ());
    HOOK.store(ptr, Ordering::Release);
}

/// Calls the test hook, if one is set.
#[cold]
fn registry_point(point: RegistryPoint) {
    let ptr = HOOK.load(Ordering::Acquire);
    if !ptr.is_null() {
        // SAFETY: only `set_registry_hook` stores here, a `fn(RegistryPoint)`.
        let hook = unsafe { core::mem::transmute::<*mut (), fn(RegistryPoint)>(ptr) };
        hook(point);
    }
}

/// A backend that records its blocks in a [`CallSite`] (what `nogil!` wraps
/// its backend in, with the `stats` feature).
#[derive(Debug)]
pub struct Recorded<G> {
    /// The backend whose blocks are recorded.
    pub ops: G,
    /// Where they are recorded.
    pub site: &'static CallSite,
}

// SAFETY: every call is forwarded unchanged to `ops`; the state carries the
// moment the release ended, which only the counters read.
unsafe impl<G: GilOps> GilOps for Recorded<G> {
    type State = (G::State, u64);
    type Gil = G::Gil;

    /// The block counts here, before the release: see [`CallSite::began`].
    #[inline(always)]
    unsafe fn release(&self) -> Option<Self::State> {
        self.site.began();
        // SAFETY: the caller's obligations are passed on unchanged.
        match unsafe { self.ops.release() } {
            Some(state) => Some((state, now())),
            None => {
                self.site.released_nothing();
                None
            }
        }
    }

    /// The block's last released stretch, and the wait to take the GIL back.
    #[inline(always)]
    unsafe fn reacquire(&self, (state, released_at): Self::State) {
        let back_at = now();
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { self.ops.reacquire(state) };
        let held_at = now();
        // (Wrapping: the clock is monotonic, so these never wrap; a clock
        // that did would give a wrong figure, not a panic in a drop.)
        self.site.stretch(
            back_at.wrapping_sub(released_at),
            held_at.wrapping_sub(back_at),
        );
    }

    fn is_held(&self) -> bool {
        self.ops.is_held()
    }

    /// A part of the block: the stretch before it ends; the block goes on
    /// after it (it counted when it began).
    #[inline(always)]
    unsafe fn reacquire_for_part(&self, (state, released_at): Self::State) {
        let back_at = now();
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { self.ops.reacquire_for_part(state) };
        let held_at = now();
        self.site.stretch(
            back_at.wrapping_sub(released_at),
            held_at.wrapping_sub(back_at),
        );
    }

    /// The end of a part: the block released again, not a new block.
    #[inline(always)]
    unsafe fn release_after_part(&self) -> Option<Self::State> {
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { self.ops.release_after_part() }.map(|state| (state, now()))
    }

    #[inline(always)]
    unsafe fn part_began(&self, frame: &nuwa_core::__private::PartFrame) {
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { self.ops.part_began(frame) }
    }

    unsafe fn check_signals(&self) -> bool {
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { self.ops.check_signals() }
    }

    #[inline(always)]
    unsafe fn part_ended(&self, frame: &nuwa_core::__private::PartFrame) {
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { self.ops.part_ended(frame) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::MockGil;
    use nuwa_core::Nogil;
    use std::time::Instant;

    /// The counters of the site at `line` of this file.
    fn at(line: u32) -> Stats {
        let found: Vec<_> = sites()
            .into_iter()
            .filter(|s| s.file == file!() && s.line == line)
            .collect();
        assert_eq!(found.len(), 1, "one site at line {line}: {found:?}");
        found[0].stats
    }

    #[test]
    fn short_is_below_the_threshold() {
        // No test changes the threshold: it is the default, 10 µs.
        static SITE: CallSite = CallSite::new(file!(), line!(), 0);
        assert_eq!(short_threshold(), Duration::from_micros(10));
        let us = Duration::from_micros;
        for _ in 0..3 {
            SITE.began();
        }
        let ns = duration_ns;
        SITE.stretch(ns(us(9)), ns(us(1))); // short
        SITE.stretch(ns(us(10)), ns(us(1))); // not short: at the threshold
        SITE.stretch(ns(us(3)), ns(us(1))); // a part's stretch, short
        SITE.stretch(ns(us(30)), ns(us(2)));
        let s = SITE.stats();
        assert_eq!((s.blocks, s.short), (3, 2), "{s:?}");
        assert_eq!((s.released, s.max_released), (us(52), us(30)));
        assert_eq!((s.waiting, s.max_waiting), (us(5), us(2)));
    }

    #[test]
    fn a_block_with_parts_counts_once() {
        let gil = MockGil::new();
        let us = Duration::from_micros;
        // Each released stretch lasts at least 20 µs (a spin on the
        // monotonic clock, a lower bound whatever the scheduler does), twice
        // the default short-block threshold.
        let stretch = || {
            let start = Instant::now();
            while start.elapsed() < us(20) {
                core::hint::spin_loop();
            }
        };
        let line = line!() + 1;
        let value = crate::nogil!(gil => {
            stretch();
            let a = with_gil! { 1 }.unwrap();
            stretch();
            let b = with_gil! { 2 }.unwrap();
            stretch();
            a + b
        });
        assert_eq!(value, 3);
        assert_eq!((gil.releases(), gil.reacquires()), (3, 3));
        gil.done();
        let s = at(line);
        assert_eq!((s.blocks, s.not_released), (1, 0), "{s:?}");
        // Three stretches, none short, all summed: a part that ended no
        // stretch, or one timed from the wrong moment, fails here.
        assert_eq!(s.short, 0, "{s:?}");
        assert!(s.released >= us(60), "{s:?}");
        assert!(
            s.max_released >= us(20) && s.max_released <= s.released,
            "{s:?}"
        );
    }

    #[test]
    fn a_strict_block_with_parts_counts_once() {
        let gil = MockGil::new();
        let line = line!() + 1;
        let value = crate::__nuwa_recorded!(&gil).nogil(|released| {
            (0..4)
                .map(|i| released.with_gil(|| i).unwrap())
                .sum::<i32>()
        });
        assert_eq!(value, 6);
        gil.done();
        let s = at(line);
        assert_eq!((s.blocks, s.not_released), (1, 0), "{s:?}");
        assert!(s.short <= 5, "five stretches at most: {s:?}");
    }

    #[test]
    fn a_panic_in_a_part_still_counts_the_block_once() {
        let gil = MockGil::new();
        let line = line!() + 2;
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::nogil!(gil => {
                let _ = with_gil! { 1 };
                let _ = with_gil! { panic!("in a part") };
            })
        }));
        assert!(caught.is_err());
        gil.done();
        let s = at(line);
        assert_eq!((s.blocks, s.not_released), (1, 0), "{s:?}");
    }

    #[test]
    fn a_block_nested_in_a_part_is_its_own_block() {
        let gil = MockGil::new();
        let outer = line!() + 1;
        crate::nogil!(gil => {
            let _ = with_gil! {
                let inner = line!() + 1;
                crate::nogil!(gil => { let _ = with_gil! { () }; });
                inner
            }
            .map(|inner| {
                let s = at(inner);
                assert_eq!((s.blocks, s.not_released), (1, 0), "inner {s:?}");
            });
        });
        gil.done();
        let s = at(outer);
        assert_eq!((s.blocks, s.not_released), (1, 0), "outer {s:?}");
    }

    /// Where [`Faulty`] panics: at a take-back, as nuwa's CPython backend
    /// does when a thread state was left attached inside the block, or at a
    /// release.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Fault {
        Nothing,
        Release,
        TakeBack,
        PartTakeBack,
        ReleaseAfterPart,
    }

    /// A backend that releases every time and panics at its `Fault`,
    /// unless a panic is unwinding already (where nuwa prints its message
    /// and aborts the process).
    struct Faulty(Fault);

    impl Faulty {
        fn fault(&self, here: Fault) {
            if self.0 == here && !std::thread::panicking() {
                panic!("nuwa's own panic, at {here:?}");
            }
        }
    }

    // SAFETY: it holds no GIL; "released" is a state of its own, handed back
    // once by the guard.
    unsafe impl GilOps for Faulty {
        type State = ();
        type Gil = Faulty;
        unsafe fn release(&self) -> Option<()> {
            self.fault(Fault::Release);
            Some(())
        }
        unsafe fn reacquire(&self, (): ()) {
            self.fault(Fault::TakeBack);
        }
        unsafe fn reacquire_for_part(&self, (): ()) {
            self.fault(Fault::PartTakeBack);
        }
        unsafe fn release_after_part(&self) -> Option<()> {
            self.fault(Fault::ReleaseAfterPart);
            Some(())
        }
    }

    /// How the body of a block leaves it.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Exit {
        End,
        Question,
        Return,
        Break,
        Panic,
        PanicInPart,
    }

    const FAULTS: [Fault; 5] = [
        Fault::Nothing,
        Fault::Release,
        Fault::TakeBack,
        Fault::PartTakeBack,
        Fault::ReleaseAfterPart,
    ];
    const EXITS: [Exit; 6] = [
        Exit::End,
        Exit::Question,
        Exit::Return,
        Exit::Break,
        Exit::Panic,
        Exit::PanicInPart,
    ];

    /// Runs `f`, catching a panic (its message is printed).
    fn quietly(f: impl FnOnce()) -> bool {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err()
    }

    static IN_PLACE_LINE: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

    /// One in-place block, at one call site, with a part, left by `exit`.
    fn in_place(fault: Fault, exit: Exit) -> Result<u32, ()> {
        #[allow(clippy::never_loop)]
        'outer: loop {
            IN_PLACE_LINE.store(line!() + 1, Ordering::Relaxed);
            let value = crate::nogil!(Faulty(fault) => {
                let _ = with_gil! { assert_ne!(exit, Exit::PanicInPart, "in a part") };
                match exit {
                    Exit::End => 1,
                    Exit::Question => Err(())?,
                    Exit::Return => return Ok(2),
                    Exit::Break => break 'outer,
                    Exit::Panic | Exit::PanicInPart => panic!("in the block"),
                }
            });
            return Ok(value);
        }
        Ok(3)
    }

    #[test]
    fn every_way_out_of_an_in_place_block_counts_it_once() {
        let mut runs = 0;
        for fault in FAULTS {
            for exit in EXITS {
                quietly(|| {
                    let _ = in_place(fault, exit);
                });
                runs += 1;
                let s = at(IN_PLACE_LINE.load(Ordering::Relaxed));
                assert_eq!(
                    (s.blocks, s.not_released),
                    (runs, 0),
                    "after {fault:?}, {exit:?}: {s:?}"
                );
            }
        }
    }

    #[test]
    fn every_way_out_of_a_strict_block_counts_it_once() {
        let strict = |fault: Fault, exit: Exit| {
            crate::__nuwa_recorded!(Faulty(fault)).nogil(|released| {
                let _ = released.with_gil(|| assert_ne!(exit, Exit::PanicInPart, "in a part"));
                assert_ne!(exit, Exit::Panic, "in the block");
            })
        };
        let line = line!() - 5;
        let mut runs = 0;
        for fault in FAULTS {
            for exit in [Exit::End, Exit::Panic, Exit::PanicInPart] {
                quietly(|| strict(fault, exit));
                runs += 1;
                let s = at(line);
                assert_eq!(
                    (s.blocks, s.not_released),
                    (runs, 0),
                    "after {fault:?}, {exit:?}: {s:?}"
                );
            }
        }
    }

    std::thread_local! {
        /// Whether this thread's first clock read calls the clock again
        /// from inside itself, as a signal handler's block would.
        static REENTER: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
        /// What that inner read returned.
        static INNER: core::cell::Cell<Option<u64>> = const { core::cell::Cell::new(None) };
    }

    /// Called by [`portable_now`] in the middle of a thread's first read.
    pub(super) fn first_read_point() {
        if REENTER.replace(false) {
            INNER.set(Some(portable_now()));
        }
    }

    /// A block in a signal handler that interrupts its thread's first
    /// clock read reads the clock too (a process-wide `OnceLock` origin,
    /// initialized reentrantly, waited for itself forever: this test then
    /// hangs), and the thread's later reads count from one origin.
    #[test]
    fn the_portable_clock_can_be_read_inside_its_own_first_read() {
        let (inner, outer, later) = std::thread::spawn(|| {
            REENTER.set(true);
            let outer = portable_now();
            let later = portable_now();
            (INNER.get(), outer, later)
        })
        .join()
        .unwrap();
        assert_eq!(inner, Some(0), "the inner read was the first to finish");
        assert_eq!(outer, 0);
        assert!(later >= outer);
    }

    /// Sixteen sites at line 10 000 of this file, columns 0 to 15.
    static MANY: [CallSite; 16] = {
        let mut sites = [const { CallSite::new(file!(), 10_000, 0) }; 16];
        let mut i = 0;
        while i < sites.len() {
            sites[i].column = i as u32;
            i += 1;
        }
        sites
    };

    #[test]
    fn threads_registering_at_once_list_each_site_once() {
        #[track_caller]
        fn lookup() -> usize {
            core::ptr::from_ref(site_of(Location::caller())).addr()
        }
        let barrier = std::sync::Barrier::new(8);
        let seen: Vec<[usize; 3]> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..8)
                .map(|t| {
                    let barrier = &barrier;
                    scope.spawn(move || {
                        barrier.wait();
                        for i in 0..MANY.len() {
                            MANY[(i + t) % MANY.len()].began();
                        }
                        [lookup(), lookup(), lookup()]
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let listed: Vec<_> = sites().into_iter().filter(|s| s.line == 10_000).collect();
        let mut columns: Vec<_> = listed.iter().map(|s| s.column).collect();
        columns.sort_unstable();
        assert_eq!(columns, (0..16).collect::<Vec<_>>(), "each site once");
        assert!(listed.iter().all(|s| s.stats.blocks == 8), "{listed:?}");
        // One site per strict-form call site, whichever thread looked first.
        assert!(seen.iter().all(|s| *s == seen[0]), "{seen:?}");
        let [a, b, c] = seen[0];
        assert!(a != b && b != c && a != c);
    }

    #[test]
    fn a_snapshot_never_shows_more_unreleased_blocks_than_blocks() {
        use std::sync::atomic::AtomicBool;
        static SITE: CallSite = CallSite::new(file!(), line!(), column!());
        static STOP: AtomicBool = AtomicBool::new(false);
        let writers: Vec<_> = (0..2)
            .map(|_| {
                std::thread::spawn(|| {
                    while !STOP.load(Ordering::Relaxed) {
                        SITE.began();
                        SITE.released_nothing();
                    }
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut bad = None;
        while Instant::now() < deadline && bad.is_none() {
            let s = SITE.stats();
            if s.not_released > s.blocks {
                bad = Some(s);
            }
        }
        STOP.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(bad, None, "an inconsistent snapshot");
    }
}
