//! Signal checks inside long blocks: let Ctrl-C stop long work.
//!
//! While a block runs, the thread does not run Python code, so CPython's own
//! signal handling (which runs the Python handlers, and raises
//! `KeyboardInterrupt` for Ctrl-C, between bytecodes of the main thread)
//! waits for the block to end. [`SignalCheck::check`], called from inside the
//! block, takes the GIL back every so often to run `PyErr_CheckSignals`, and
//! returns [`Interrupted`] when a handler raised, so that the block can stop
//! with `?`.
//!
//! # The countdown
//!
//! A call that is not due only counts down (load, compare, branch,
//! decrement, store): no CPython call, no clock read. Every `stride` calls
//! the clock is read; `stride`
//! adapts so that this happens about four times per interval while the calls
//! take similar times (it at most quadruples at each read, and shrinks at
//! once when calls get slower; between 1 and 2²⁴). A check is made at the
//! first clock read at or after the interval has passed since the last one.
//! So Ctrl-C is seen about `interval` + `interval / 4` after it was pressed,
//! plus the wait for the GIL; if calls suddenly take much longer than before,
//! the next clock read (and check) comes late by that factor, once.

use core::any::TypeId;
use core::fmt;
use std::time::{Duration, Instant};

use nuwa_core::{GilUnavailable, Released};

use crate::CPython;
use crate::resolve;

/// Takes the GIL back every so often inside a block to run CPython's signal
/// handlers, so that Ctrl-C (or any Python signal handler that raises) can
/// stop long work.
///
/// Make one before the loop and call [`check`](Self::check) often: with
/// `&mut released!()` in place, with the closure's argument in the strict
/// form (any backend's: the PyO3 adapter's, a mock's in a unit test). A call that is not due costs about a nanosecond; a due one (every
/// 100 ms by default, [`every`](Self::every) for another interval) a GIL
/// round trip. The README's
/// [Callbacks and Ctrl-C](https://github.com/nuwa-rs/nuwa#callbacks-and-ctrl-c-inside-a-block)
/// has the measurements and how to choose the interval.
///
/// Where nothing can be checked, a due check finds nothing and returns
/// `Ok(())`: on a thread other than the main thread, or in a subinterpreter
/// (CPython runs signal handlers on the main thread of the main interpreter
/// only; 3.12+ may run a pending garbage collection there; stop workers by
/// your own means, a flag their progress callback reads), where the block
/// cannot take the GIL back (a nested block, a thread Python does not know,
/// no Python), and where `PyErr_CheckSignals` is missing (an embedder that
/// did not hand it over with
/// [`with_check_signals`](crate::embed::EmbeddedPython::with_check_signals)).
///
/// # Examples
///
/// ```
/// use nuwa_ffi::{Interrupted, SignalCheck};
///
/// fn count_primes(limit: u64) -> Result<u64, Interrupted> {
///     nuwa_ffi::nogil! {
///         let mut signals = SignalCheck::new();
///         let mut count = 0;
///         for n in 2..limit {
///             count += u64::from((2..n).take_while(|d| d * d <= n).all(|d| n % d != 0));
///             signals.check(&mut released!())?; // strict form: `signals.check(gil)?`
///         }
///         Ok(count)
///     }
/// }
///
/// assert_eq!(count_primes(30), Ok(10));
/// ```
#[derive(Clone, Debug)]
pub struct SignalCheck {
    schedule: Schedule,
}

static_assertions::assert_impl_all!(SignalCheck: Send, Sync);
static_assertions::assert_impl_all!(Interrupted: Send, Sync, std::error::Error);

impl SignalCheck {
    /// The interval of [`new`](Self::new): 100 ms.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(100);

    /// Checks about every [`DEFAULT_INTERVAL`](Self::DEFAULT_INTERVAL)
    /// (100 ms), counted from now.
    pub fn new() -> Self {
        Self::every(Self::DEFAULT_INTERVAL)
    }

    /// Checks about every `interval`, counted from now. `Duration::ZERO`
    /// checks at every call (for tests and measurements).
    pub fn every(interval: Duration) -> Self {
        SignalCheck {
            schedule: Schedule::new(interval, Instant::now()),
        }
    }

    /// The interval it was made with.
    pub fn interval(&self) -> Duration {
        self.schedule.interval
    }

    /// Counts one call; when a check is due, takes the GIL back through
    /// `gil`, runs the signal handlers, and releases the GIL again.
    ///
    /// `gil` is any block's [`Released`]. Where it takes the interpreter's
    /// GIL back (`Released<'_, CPython>`: nuwa's CPython backends, whatever
    /// wraps them, the PyO3 adapter of the feature `pyo3`), the handlers
    /// are CPython's (`PyErr_CheckSignals`). Otherwise they are the
    /// backend's own ([`GilOps::check_signals`](crate::GilOps::check_signals)):
    /// a mock's scheduled "signal", nothing for a backend without signals.
    /// So library code generic over [`Nogil`](crate::Nogil) checks too, and
    /// is tested with a mock.
    ///
    /// # Errors
    ///
    /// [`Interrupted`] if a signal handler raised: the Python exception
    /// (`KeyboardInterrupt` for Ctrl-C) is set on this thread, and the
    /// caller must leave the block and return it to Python (`NULL`).
    #[inline]
    pub fn check<L: 'static>(&mut self, gil: &mut Released<'_, L>) -> Result<(), Interrupted> {
        if self.schedule.count() {
            return Ok(());
        }
        self.due(gil, Instant::now)
    }

    /// The clock read, and the check if one is due.
    #[cold]
    #[inline(never)]
    fn due<L: 'static>(
        &mut self,
        gil: &mut Released<'_, L>,
        now: impl Fn() -> Instant,
    ) -> Result<(), Interrupted> {
        if !self.schedule.read(now()) {
            return Ok(());
        }
        let outcome = match run_signal_handlers(gil) {
            Ok(true) => Err(Interrupted { _private: () }),
            // Nothing raised, or the GIL cannot be taken back here.
            Ok(false) | Err(_) => Ok(()),
        };
        // The time spent in the check (the wait for the GIL, the handlers)
        // is not the calls' time: count the next stride from here.
        self.schedule.checked(now());
        outcome
    }
}

/// Takes the GIL back through `gil` and runs the signal handlers: `true`
/// if one raised.
///
/// For the interpreter's GIL (`L` is [`CPython`]) nuwa-ffi runs
/// `PyErr_CheckSignals` itself, so a backend that wraps `CPython` and
/// forwards only what it must still checks; without `PyErr_CheckSignals` (an
/// embedder that did not hand it over) nothing is taken back. Any other GIL
/// is the backend's to check.
fn run_signal_handlers<L: 'static>(gil: &mut Released<'_, L>) -> Result<bool, GilUnavailable> {
    if TypeId::of::<L>() != TypeId::of::<CPython>() {
        return nuwa_core::__private::check_signals(gil);
    }
    let Some(check_signals) = resolve::check_signals() else {
        return Ok(false);
    };
    gil.with_gil(|| {
        // SAFETY: `L` is `CPython`, and a `Released<'_, CPython>` runs this
        // only with the interpreter's GIL held by this thread (the
        // `WithGil` contract: the `Gil` is `CPython` only if that is the GIL
        // held), which is all `PyErr_CheckSignals` needs.
        let rc = unsafe { check_signals() };
        rc < 0
    })
}

impl Default for SignalCheck {
    /// [`SignalCheck::new`].
    fn default() -> Self {
        Self::new()
    }
}

/// A Python signal handler raised during [`SignalCheck::check`]: the
/// exception (`KeyboardInterrupt` for Ctrl-C, or whatever a handler of
/// yours raised) is set on this thread.
///
/// Leave the block (with `?`) and return `NULL` (or `-1`) from the extension
/// function, so that Python raises it; do not call Python meanwhile, except
/// to clear or replace that exception.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Interrupted {
    _private: (),
}

impl fmt::Debug for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Interrupted")
    }
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "a Python signal handler raised an exception (KeyboardInterrupt for Ctrl-C); it is \
             set on this thread: return NULL to Python to raise it",
        )
    }
}

impl std::error::Error for Interrupted {}

/// When to read the clock, and when a check is due; pure logic, tested with
/// a fake clock.
#[derive(Clone, Debug)]
struct Schedule {
    /// Calls left until the next clock read; at least 1.
    left: u32,
    /// Calls between two clock reads.
    stride: u32,
    interval: Duration,
    last_read: Instant,
    /// `None`: never (an interval too long for an `Instant`).
    next_due: Option<Instant>,
}

/// Clock reads per interval, while calls take similar times.
const READS_PER_INTERVAL: u32 = 4;
/// How much the stride may grow at one read.
const GROWTH: u32 = 4;
/// The longest stride: a clock read at least every 2²⁴ calls.
const MAX_STRIDE: u32 = 1 << 24;

impl Schedule {
    fn new(interval: Duration, now: Instant) -> Self {
        Schedule {
            left: 1,
            stride: 1,
            interval,
            last_read: now,
            next_due: now.checked_add(interval),
        }
    }

    /// Counts one call: `true` while no clock read is due.
    #[inline(always)]
    fn count(&mut self) -> bool {
        if self.left > 1 {
            self.left -= 1;
            true
        } else {
            false
        }
    }

    /// The clock read `now`: sets the next stride from the calls' pace, and
    /// says whether a check is due.
    fn read(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last_read);
        self.stride = next_stride(self.stride, elapsed, self.interval / READS_PER_INTERVAL);
        self.left = self.stride;
        self.last_read = now;
        self.next_due.is_some_and(|due| now >= due)
    }

    /// A check ended at `now`: the next one is due an interval later.
    fn checked(&mut self, now: Instant) {
        self.last_read = now;
        self.next_due = now.checked_add(self.interval);
    }
}

/// The stride that makes `stride` calls last about `target`, if the last
/// `stride` calls took `elapsed`; it grows at most `GROWTH` times.
fn next_stride(stride: u32, elapsed: Duration, target: Duration) -> u32 {
    if target.is_zero() {
        return 1;
    }
    let elapsed = elapsed.as_nanos().max(1);
    let ideal = u128::from(stride) * target.as_nanos() / elapsed;
    let most = stride.saturating_mul(GROWTH).min(MAX_STRIDE);
    // `most` fits in a u32, so the clamped value does too.
    ideal.clamp(1, u128::from(most)) as u32
}

#[cfg(test)]
mod tests {
    use core::cell::Cell;

    use nuwa_core::Nogil;
    use nuwa_core::mock::MockGil;
    use nuwa_std::ThreadCheckedMock;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A clock that only moves when told.
    struct FakeClock {
        start: Instant,
        now: Cell<Duration>,
    }

    impl FakeClock {
        fn new() -> Self {
            FakeClock {
                start: Instant::now(),
                now: Cell::new(Duration::ZERO),
            }
        }
        fn now(&self) -> Instant {
            self.start + self.now.get()
        }
        fn advance(&self, by: Duration) {
            self.now.set(self.now.get() + by);
        }
    }

    /// Runs calls that each take `per_call` on the fake clock, until a check
    /// is due; returns (calls, clock reads) made.
    fn calls_until_due(s: &mut Schedule, clock: &FakeClock, per_call: Duration) -> (u64, u64) {
        let (mut calls, mut reads) = (0, 0);
        loop {
            clock.advance(per_call);
            calls += 1;
            if s.count() {
                continue;
            }
            reads += 1;
            if s.read(clock.now()) {
                s.checked(clock.now());
                return (calls, reads);
            }
        }
    }

    #[test]
    fn calls_between_clock_reads_only_count() {
        let clock = FakeClock::new();
        let mut s = Schedule::new(100 * MS, clock.now());
        // The first call reads the clock (stride 1); 1 µs per call, so the
        // stride grows fourfold at each read.
        clock.advance(Duration::from_micros(1));
        assert!(!s.count());
        assert!(!s.read(clock.now()));
        assert_eq!(s.stride, 4);
        for _ in 0..3 {
            assert!(
                s.count(),
                "a call before the stride is used up reads the clock"
            );
        }
        assert!(!s.count(), "the fourth call reads the clock");
    }

    #[test]
    fn the_stride_settles_at_about_four_reads_per_interval() {
        let clock = FakeClock::new();
        let mut s = Schedule::new(100 * MS, clock.now());
        let per_call = Duration::from_micros(10);
        // Ramping up: due after about one interval, within a quarter of it.
        let (calls, _) = calls_until_due(&mut s, &clock, per_call);
        assert!((10_000..=12_500).contains(&calls), "{calls} calls");
        // Settled: 25 ms worth of calls per read (2500 calls of 10 µs).
        assert_eq!(s.stride, 2_500);
        for _ in 0..5 {
            let (calls, reads) = calls_until_due(&mut s, &clock, per_call);
            assert_eq!((calls, reads), (10_000, 4));
        }
    }

    #[test]
    fn slower_calls_shrink_the_stride_at_once() {
        let clock = FakeClock::new();
        let mut s = Schedule::new(100 * MS, clock.now());
        calls_until_due(&mut s, &clock, Duration::from_micros(1));
        assert_eq!(s.stride, 25_000);
        // Calls now take 100 times longer: the first read after the change
        // comes late (2.5 s instead of 25 ms), and is due; the stride then
        // fits the new pace at once.
        let (calls, reads) = calls_until_due(&mut s, &clock, Duration::from_micros(100));
        assert_eq!((calls, reads), (25_000, 1));
        let (calls, reads) = calls_until_due(&mut s, &clock, Duration::from_micros(100));
        assert_eq!(s.stride, 250);
        assert_eq!((calls, reads), (1_000, 4));
    }

    #[test]
    fn the_stride_stays_within_its_bounds() {
        assert_eq!(next_stride(1, Duration::ZERO, 25 * MS), GROWTH);
        assert_eq!(next_stride(MAX_STRIDE, Duration::ZERO, 25 * MS), MAX_STRIDE);
        assert_eq!(
            next_stride(u32::MAX, Duration::from_nanos(1), Duration::MAX),
            MAX_STRIDE
        );
        assert_eq!(next_stride(1000, Duration::from_secs(10), MS), 1);
        assert_eq!(next_stride(1000, MS, Duration::ZERO), 1);
    }

    #[test]
    fn interval_zero_is_due_at_every_call() {
        let clock = FakeClock::new();
        let mut s = Schedule::new(Duration::ZERO, clock.now());
        for _ in 0..10 {
            assert!(!s.count());
            assert!(s.read(clock.now()));
            s.checked(clock.now());
        }
    }

    #[test]
    fn an_endless_interval_is_never_due() {
        let clock = FakeClock::new();
        let mut s = Schedule::new(Duration::MAX, clock.now());
        clock.advance(Duration::from_secs(1 << 40));
        assert!(!s.read(clock.now()));
    }

    /// A due check through a mock block: the GIL is taken back once for the
    /// check and released again, and the mock's "signal" decides.
    #[test]
    fn a_due_check_takes_the_mock_gil_back_and_releases_it_again() {
        let gil = MockGil::new();
        let clock = FakeClock::new();
        let mut signals = SignalCheck {
            schedule: Schedule::new(Duration::ZERO, clock.now()),
        };
        gil.signal_at(2);
        let mut outcomes = Vec::new();
        nuwa_core::nogil!(gil => {
            for _ in 0..3 {
                outcomes.push(signals.due(&mut released!(), || clock.now()));
                assert!(!gil.is_held(), "released again after the check");
            }
        });
        let interrupted = Err(Interrupted { _private: () });
        assert_eq!(outcomes, [Ok(()), interrupted, Ok(())]);
        assert_eq!(gil.signal_checks(), 3);
        // The block's release and reacquire, and one pair per check.
        assert_eq!((gil.releases(), gil.reacquires()), (4, 4));
        gil.done();
    }

    #[test]
    fn a_check_that_is_not_due_touches_nothing() {
        let gil = ThreadCheckedMock::new();
        gil.signal_at(1);
        let clock = FakeClock::new();
        let mut signals = SignalCheck {
            schedule: Schedule::new(100 * MS, clock.now()),
        };
        let mut reads = 0;
        nuwa_core::nogil!(gil => {
            for _ in 0..1000 {
                clock.advance(Duration::from_micros(1));
                if !signals.schedule.count() {
                    reads += 1;
                    let outcome = signals.due(&mut released!(), || clock.now());
                    assert_eq!(outcome, Ok(()));
                }
            }
        });
        assert_eq!(gil.signal_checks(), 0, "1 ms of calls, a 100 ms interval");
        // Read at calls 1, 5, 21, 85 and 341 (strides 1, 4, 16, 64, 256).
        assert_eq!(reads, 5);
        assert_eq!((gil.releases(), gil.reacquires()), (1, 1));
        gil.done();
    }

    #[test]
    fn where_the_gil_cannot_be_taken_back_a_due_check_does_nothing() {
        let gil = MockGil::new();
        gil.signal_at(1);
        let mut signals = SignalCheck::every(Duration::ZERO);
        // Nested: the inner block released nothing and the GIL is not held
        // (the mock panics at a check without it).
        let outcome = nuwa_core::nogil!(gil => {
            nuwa_core::nogil!(gil => { signals.check(&mut released!()) })
        });
        assert_eq!(outcome, Ok(()));
        assert_eq!((gil.releases(), gil.reacquires(), gil.skipped()), (1, 1, 1));
        assert_eq!(gil.signal_checks(), 0);
        // A block that kept the GIL checks in place, without a round trip.
        let outcome = nuwa_core::nogil!(crate::ReleaseIf::new(&gil, false) => {
            signals.check(&mut released!())
        });
        assert_eq!(outcome, Err(Interrupted { _private: () }));
        assert_eq!((gil.releases(), gil.signal_checks()), (1, 1));
        gil.done();
    }

    /// The strict form and a thread-checked mock: the check runs on the
    /// owner's thread; a block on another thread finds nothing to check.
    #[test]
    fn the_strict_form_checks_a_thread_checked_mock() {
        let gil = ThreadCheckedMock::new();
        gil.signal_at(3);
        let mut signals = SignalCheck::every(Duration::ZERO);
        let done = gil.nogil(|released| (0..10).position(|_| signals.check(released).is_err()));
        assert_eq!(done, Some(2));
        std::thread::scope(|s| {
            s.spawn(|| {
                gil.signal_at(0);
                let mut signals = SignalCheck::every(Duration::ZERO);
                let outcome = gil.nogil(|released| signals.check(released));
                assert_eq!(
                    outcome,
                    Ok(()),
                    "not the owner: nothing released or checked"
                );
            });
        });
        assert_eq!(gil.signal_checks(), 3);
        assert_eq!((gil.releases(), gil.skipped()), (4, 1));
        gil.done();
    }

    /// One `SignalCheck` across two backends, a block of one inside a block
    /// of the other: each check runs on the backend whose `Released` it is
    /// given, and only the one told of a signal reports it.
    #[test]
    fn one_check_two_backends() {
        let (outer, inner) = (MockGil::new(), ThreadCheckedMock::new());
        inner.signal_at(2);
        let mut signals = SignalCheck::every(Duration::ZERO);
        let outcomes = nuwa_core::nogil!(outer => {
            let first = signals.check(&mut released!());
            let nested = inner.nogil(|released| [signals.check(released), signals.check(released)]);
            (first, nested, signals.check(&mut released!()))
        });
        let interrupted = Err(Interrupted { _private: () });
        assert_eq!(outcomes, (Ok(()), [Ok(()), interrupted], Ok(())));
        assert_eq!((outer.signal_checks(), inner.signal_checks()), (2, 2));
        outer.done();
        inner.done();
    }

    #[test]
    fn without_python_checks_run_and_do_nothing() {
        let mut signals = SignalCheck::every(Duration::ZERO);
        assert_eq!(signals.interval(), Duration::ZERO);
        let outcome = crate::nogil(|gil| (0..100).try_for_each(|_| signals.check(gil)));
        assert_eq!(outcome, Ok(()));
        let in_place: Result<(), Interrupted> = crate::nogil! {
            signals.check(&mut released!())
        };
        assert_eq!(in_place, Ok(()));
        assert_eq!(
            SignalCheck::default().interval(),
            SignalCheck::DEFAULT_INTERVAL
        );
    }

    #[test]
    fn interrupted_reads_well() {
        let e = Interrupted { _private: () };
        assert_eq!(format!("{e:?}"), "Interrupted");
        assert!(e.to_string().contains("KeyboardInterrupt"), "{e}");
    }
}
