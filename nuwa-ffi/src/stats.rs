//! Release statistics, per call site and per process (feature `stats`).
//!
//! The seed's advice, made measurable: keep blocks large, release for work
//! over about 10 µs, profile first. With the `stats` feature on, every block
//! that runs through the CPython backend of [`nogil!`](crate::nogil!)
//! (`nogil! { .. }`, `nogil!(hide(..) => ..)`), through
//! [`nogil()`](crate::nogil()) or [`nogil_catch`](crate::nogil_catch), or
//! through a backend wrapped in [`recorded!`](crate::recorded!) counts, for
//! its call site:
//!
//! - how many blocks ran, and how many released nothing;
//! - the time spent released (total and longest);
//! - the time spent waiting to take the GIL back (total and longest);
//! - how many times the GIL was released for less than the short-block
//!   threshold (default 10 µs, [`set_short_threshold`]): releases that cost
//!   more than they gave.
//!
//! A block counts once, whatever its [`with_gil!`](crate::with_gil!) parts
//! (or [`Released::with_gil`](crate::Released::with_gil) calls). Each part
//! ends one released stretch of the block and starts another: the times
//! above, the longest and the short count are per stretch (each part costs
//! a GIL round trip), and a part's wait for the GIL is a wait to take it
//! back.
//!
//! With the feature off (the default) this module does not exist and the
//! macros expand to exactly what they did before it existed: the instruction
//! counts in BENCHMARKS.md show the same figure.
//!
//! With it on, each block reads the clock three times (after the release,
//! before and after the reacquire) and updates a few atomic counters; the
//! strict form also looks its call site up in a locked table. BENCHMARKS.md
//! has the cost in instructions.
//!
//! # Examples
//!
//! ```
//! # #[cfg(feature = "stats")] {
//! use nuwa_ffi::stats;
//! stats::reset();
//! for _ in 0..3 {
//!     nuwa_ffi::nogil! { (0..1000u64).sum::<u64>() };
//! }
//! let site = stats::sites().into_iter().find(|s| s.line == line!() - 2).unwrap();
//! assert_eq!(site.stats.blocks, 3);
//! // No interpreter in a test binary: nothing was released.
//! assert_eq!(site.stats.not_released, 3);
//! # }
//! ```

use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::panic::Location;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use std::vec::Vec;

use nuwa_core::GilOps;

/// One call site's counters. Made by [`recorded!`](crate::recorded!) (a
/// `static` per site); read with [`sites`].
#[derive(Debug)]
pub struct CallSite {
    file: &'static str,
    line: u32,
    column: u32,
    registered: AtomicBool,
    next: AtomicPtr<CallSite>,
    blocks: AtomicU64,
    not_released: AtomicU64,
    released_ns: AtomicU64,
    max_released_ns: AtomicU64,
    waiting_ns: AtomicU64,
    max_waiting_ns: AtomicU64,
    short: AtomicU64,
}

/// The registered call sites, newest first (a lock-free list of statics).
static SITES: AtomicPtr<CallSite> = AtomicPtr::new(core::ptr::null_mut());
/// The short-block threshold, in nanoseconds.
static SHORT_NS: AtomicU64 = AtomicU64::new(10_000);

impl CallSite {
    /// A call site's counters, all zero. Not public API: use
    /// [`recorded!`](crate::recorded!).
    #[doc(hidden)]
    pub const fn __new(file: &'static str, line: u32, column: u32) -> Self {
        CallSite {
            file,
            line,
            column,
            registered: AtomicBool::new(false),
            next: AtomicPtr::new(core::ptr::null_mut()),
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
    fn register(&'static self) {
        if self.registered.load(Ordering::Relaxed) || self.registered.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = core::ptr::from_ref(self).cast_mut();
        let mut head = SITES.load(Ordering::Acquire);
        loop {
            self.next.store(head, Ordering::Relaxed);
            match SITES.compare_exchange_weak(head, me, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    fn not_released(&'static self) {
        self.register();
        self.blocks.fetch_add(1, Ordering::Relaxed);
        // Release: a snapshot that sees this sees the block counted (see
        // `stats`).
        self.not_released.fetch_add(1, Ordering::Release);
    }

    /// A block ended: its last released stretch, and the wait to take the
    /// GIL back.
    fn record(&'static self, released: Duration, waiting: Duration) {
        self.register();
        self.blocks.fetch_add(1, Ordering::Relaxed);
        self.stretch(released, waiting);
    }

    /// A released stretch ended, and the GIL was taken back after `waiting`:
    /// at the end of a block ([`record`](Self::record)) or for one of its
    /// `with_gil!` parts, after which the same block goes on.
    fn stretch(&'static self, released: Duration, waiting: Duration) {
        self.register();
        let released = duration_ns(released);
        let waiting = duration_ns(waiting);
        // Each longest after its total, with Release: see `stats`.
        self.released_ns.fetch_add(released, Ordering::Relaxed);
        self.max_released_ns.fetch_max(released, Ordering::Release);
        self.waiting_ns.fetch_add(waiting, Ordering::Relaxed);
        self.max_waiting_ns.fetch_max(waiting, Ordering::Release);
        if released < SHORT_NS.load(Ordering::Relaxed) {
            self.short.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A block that released and took the GIL back for a part could not
    /// release again after it: it ends now, with the GIL held.
    fn ended_in_part(&'static self) {
        self.register();
        self.blocks.fetch_add(1, Ordering::Relaxed);
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

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What the blocks of one call site (or of the process) did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Blocks that ran (released or not).
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
/// `nuwa_ffi::nogil_catch`), found by its `Location` in a locked table.
pub(crate) fn site_of(location: &'static Location<'static>) -> &'static CallSite {
    static TABLE: Mutex<Vec<(usize, &'static CallSite)>> = Mutex::new(Vec::new());
    let key = core::ptr::from_ref(location).addr();
    let mut table = TABLE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, site)) = table.iter().find(|(k, _)| *k == key) {
        return site;
    }
    // One line of source may have several `Location`s (a generic caller
    // instantiated in two crates): they share its site.
    let same_place = |(_, site): &&(usize, &'static CallSite)| {
        (site.file, site.line, site.column) == (location.file(), location.line(), location.column())
    };
    let site: &'static CallSite = match table.iter().find(same_place) {
        Some((_, site)) => site,
        None => std::boxed::Box::leak(std::boxed::Box::new(CallSite::__new(
            location.file(),
            location.line(),
            location.column(),
        ))),
    };
    table.push((key, site));
    site
}

/// A backend that records its blocks in a [`CallSite`]. Not public API: use
/// [`recorded!`](crate::recorded!).
#[doc(hidden)]
#[derive(Debug)]
pub struct __Recorded<G> {
    ops: G,
    site: &'static CallSite,
}

impl<G: GilOps> __Recorded<G> {
    #[inline(always)]
    pub const fn new(ops: G, site: &'static CallSite) -> Self {
        __Recorded { ops, site }
    }
}

// SAFETY: every call is forwarded unchanged to `ops`; the state carries the
// moment the release ended, which only the counters read.
unsafe impl<G: GilOps> GilOps for __Recorded<G> {
    type State = (G::State, Instant);
    type Gil = G::Gil;

    #[inline(always)]
    unsafe fn release(&self) -> Option<Self::State> {
        // SAFETY: the caller's obligations are passed on unchanged.
        match unsafe { self.ops.release() } {
            Some(state) => Some((state, Instant::now())),
            None => {
                self.site.not_released();
                None
            }
        }
    }

    #[inline(always)]
    unsafe fn reacquire(&self, (state, released_at): Self::State) {
        let back_at = Instant::now();
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { self.ops.reacquire(state) };
        let held_at = Instant::now();
        self.site.record(back_at - released_at, held_at - back_at);
    }

    fn is_held(&self) -> bool {
        self.ops.is_held()
    }

    /// A part of the block: the stretch before it is recorded, not the
    /// block, which goes on after it.
    #[inline(always)]
    unsafe fn reacquire_for_part(&self, (state, released_at): Self::State) {
        let back_at = Instant::now();
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { self.ops.reacquire_for_part(state) };
        let held_at = Instant::now();
        self.site.stretch(back_at - released_at, held_at - back_at);
    }

    /// The end of a part: the block released again, not a new block.
    #[inline(always)]
    unsafe fn release_after_part(&self) -> Option<Self::State> {
        // SAFETY: the caller's obligations are passed on unchanged.
        match unsafe { self.ops.release_after_part() } {
            Some(state) => Some((state, Instant::now())),
            None => {
                self.site.ended_in_part();
                None
            }
        }
    }

    #[inline(always)]
    unsafe fn part_began(&self, frame: &nuwa_core::PartFrame) {
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { self.ops.part_began(frame) }
    }

    #[inline(always)]
    unsafe fn part_ended(&self, frame: &nuwa_core::PartFrame) {
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { self.ops.part_ended(frame) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::MockGil;

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
        static SITE: CallSite = CallSite::__new(file!(), line!(), 0);
        assert_eq!(short_threshold(), Duration::from_micros(10));
        let us = Duration::from_micros;
        SITE.record(us(9), us(1)); // short
        SITE.record(us(10), us(1)); // not short: at the threshold
        SITE.stretch(us(3), us(1)); // a part's stretch, short
        SITE.record(us(30), us(2));
        let s = SITE.stats();
        assert_eq!((s.blocks, s.short), (3, 2), "{s:?}");
        assert_eq!((s.released, s.max_released), (us(52), us(30)));
        assert_eq!((s.waiting, s.max_waiting), (us(5), us(2)));
    }

    #[test]
    fn a_block_with_parts_counts_once() {
        let gil = MockGil::new();
        let line = line!() + 1;
        let value = crate::nogil!(crate::recorded!(&gil) => {
            let a = with_gil! { 1 }.unwrap();
            let b = with_gil! { 2 }.unwrap();
            a + b
        });
        assert_eq!(value, 3);
        assert_eq!((gil.releases(), gil.reacquires()), (3, 3));
        gil.done();
        let s = at(line);
        assert_eq!((s.blocks, s.not_released), (1, 0), "{s:?}");
        // Three released stretches, each short unless this thread was
        // descheduled meanwhile (the threshold itself: `short_is_below_the_threshold`).
        assert!(s.short <= 3, "{s:?}");
        assert!(s.max_released <= s.released);
    }

    #[test]
    fn a_strict_block_with_parts_counts_once() {
        let gil = MockGil::new();
        let line = line!() + 1;
        let value = crate::nuwa_core::nogil(crate::recorded!(&gil), |released| {
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
            crate::nogil!(crate::recorded!(&gil) => {
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
        crate::nogil!(crate::recorded!(&gil) => {
            let _ = with_gil! {
                let inner = line!() + 1;
                crate::nogil!(crate::recorded!(&gil) => { let _ = with_gil! { () }; });
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

    #[test]
    fn a_snapshot_never_shows_more_unreleased_blocks_than_blocks() {
        use std::sync::atomic::AtomicBool;
        static SITE: CallSite = CallSite::__new(file!(), line!(), column!());
        static STOP: AtomicBool = AtomicBool::new(false);
        let writers: Vec<_> = (0..2)
            .map(|_| {
                std::thread::spawn(|| {
                    while !STOP.load(Ordering::Relaxed) {
                        SITE.not_released();
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
