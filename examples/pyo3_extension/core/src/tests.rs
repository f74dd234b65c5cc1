//! The library code under nuwa's mocks: no Python in the process.

use std::cell::Cell;
use std::num::NonZeroUsize;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use nuwa_core::mock::MockGil;
use nuwa_core::{GilUnavailable, Nogil, Released, WithGil};
use nuwa_std::ThreadCheckedMock;

use super::*;

fn every(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

#[test]
fn monte_carlo_pi_releases_once_and_depends_on_its_arguments_only() {
    let gil = MockGil::new();
    let a = monte_carlo_pi(&gil, 200_000, 7);
    let b = std::thread::scope(|s| {
        s.spawn(|| monte_carlo_pi(ThreadCheckedMock::new(), 200_000, 7))
            .join()
            .unwrap()
    });
    assert_eq!(a.to_bits(), b.to_bits());
    assert!((a - std::f64::consts::PI).abs() < 0.02, "{a}");
    assert_ne!(monte_carlo_pi(&gil, 200_000, 8).to_bits(), a.to_bits());
    assert_eq!((gil.releases(), gil.reacquires()), (2, 2));
    gil.done();
}

#[test]
fn progress_runs_with_the_gil_held_and_the_sum_without() {
    let gil = ThreadCheckedMock::new();
    let data: Vec<f64> = (1..=10).map(f64::from).collect();
    let mut calls = Vec::new();
    let total = sum_of_squares(&gil, &data, every(4), |done, sum| {
        assert!(gil.is_held_by_current(), "callback without the GIL");
        calls.push((done, sum));
        Ok::<(), ()>(())
    });
    assert_eq!(total, Ok(385.0));
    assert_eq!(calls, [(4, 30.0), (8, 204.0), (10, 385.0)]);
    // The block's release, then one release and reacquire around each call.
    assert_eq!((gil.releases(), gil.reacquires()), (4, 4));
    assert!(gil.is_held_by_current());
    gil.done();
}

#[test]
fn an_error_from_the_callback_stops_the_sum() {
    let gil = MockGil::new();
    let calls = AtomicUsize::new(0);
    let total = sum_of_squares(&gil, &[1.0; 100], every(10), |done, _| {
        calls.fetch_add(1, Ordering::Relaxed);
        if done == 20 { Err("stop") } else { Ok(()) }
    });
    assert_eq!(total, Err(Stopped::Callback("stop")));
    assert_eq!(calls.load(Ordering::Relaxed), 2);
    assert!(gil.is_held());
    assert_eq!((gil.releases(), gil.reacquires()), (3, 3));
    gil.done();
}

#[test]
fn a_panic_in_the_callback_leaves_with_the_gil_held() {
    let gil = ThreadCheckedMock::new();
    let caught = panic::catch_unwind(AssertUnwindSafe(|| {
        sum_of_squares(&gil, &[1.0; 10], every(5), |_, _| -> Result<(), ()> {
            panic!("callback failed")
        })
    }));
    assert!(caught.is_err());
    assert!(gil.is_held_by_current());
    assert_eq!((gil.releases(), gil.reacquires()), (2, 2));
    gil.done();
}

#[test]
fn without_the_gil_the_callback_does_not_run() {
    // A thread that does not hold the GIL: nothing is released, and the GIL
    // cannot be taken back for the callback.
    let gil = ThreadCheckedMock::held_by_nobody();
    let called = AtomicBool::new(false);
    let total = sum_of_squares(&gil, &[1.0, 2.0], every(1), |_, _| {
        called.store(true, Ordering::Relaxed);
        Ok::<(), ()>(())
    });
    assert_eq!(total, Err(Stopped::GilUnavailable(GilUnavailable::new())));
    assert!(!called.load(Ordering::Relaxed));
    assert_eq!((gil.releases(), gil.skipped()), (0, 1));
}

#[test]
fn empty_data_calls_nothing_back() {
    let gil = MockGil::new();
    let total = sum_of_squares(&gil, &[], every(3), |_, _| -> Result<(), ()> {
        unreachable!("no chunk, no call")
    });
    assert_eq!(total, Ok(0.0));
    assert_eq!((gil.releases(), gil.reacquires()), (1, 1));
}

#[test]
fn wait_for_sees_a_flag_set_by_another_thread() {
    let gil = ThreadCheckedMock::new();
    let (flag, entered) = (AtomicBool::new(false), AtomicBool::new(false));
    let set = std::thread::scope(|s| {
        s.spawn(|| {
            while !entered.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            flag.store(true, Ordering::Release);
        });
        wait_for(&gil, &flag, Some(&entered), Duration::from_secs(30))
    });
    assert!(set);
    gil.done();
}

#[test]
fn wait_for_times_out_when_nobody_sets_the_flag() {
    let gil = MockGil::new();
    let flag = AtomicBool::new(false);
    assert!(!wait_for(&gil, &flag, None, Duration::from_millis(5)));
    assert!(!wait_for(&gil, &flag, None, Duration::ZERO));
    // A timeout too large for `Instant` waits for the flag only.
    flag.store(true, Ordering::Release);
    assert!(wait_for(&gil, &flag, None, Duration::MAX));
    assert_eq!((gil.releases(), gil.reacquires()), (3, 3));
}

#[test]
fn parse_sum_leaves_by_question_mark_and_return_with_the_gil_back() {
    let gil = MockGil::new();
    let items = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(parse_sum(&gil, &items(&["1", " 2 ", "39"])), Ok(42));
    assert_eq!(
        parse_sum(&gil, &items(&["1", "-2"])),
        Err(ParseSumError::NotANumber { index: 1 })
    );
    assert_eq!(
        parse_sum(&gil, &items(&["1", &u64::MAX.to_string()])),
        Err(ParseSumError::Overflow { index: 1 })
    );
    assert_eq!(parse_sum(&gil, &[]), Ok(0));
    assert_eq!((gil.releases(), gil.reacquires()), (4, 4));
    gil.done();
}

/// A backend of its own, built as the PyO3 adapter is: `Nogil` runs the
/// closure (here in place, counting), `WithGil` takes the "GIL" back.
#[derive(Clone, Copy)]
struct CountingAdapter<'a> {
    blocks: &'a Cell<usize>,
}

struct CountingWithGil<'a> {
    calls: &'a Cell<usize>,
}

/// The "GIL" of `CountingAdapter`: not the interpreter's, so no code that
/// needs `Released<'_, CPython>` (code that calls Python) accepts it.
struct NoInterpreter;

// SAFETY: `Gil` is a type of its own, not `CPython`: nothing calls Python in
// `f` on the strength of it. `f` is called exactly once and `Ok` returned.
unsafe impl WithGil for CountingWithGil<'_> {
    type Gil = NoInterpreter;

    fn with_gil_dyn(&mut self, f: &mut dyn FnMut()) -> Result<(), GilUnavailable> {
        self.calls.set(self.calls.get() + 1);
        f();
        Ok(())
    }
}

impl Nogil for CountingAdapter<'_> {
    type Gil = NoInterpreter;

    fn nogil<T, F>(&self, f: F) -> T
    where
        F: FnOnce(&mut Released<'_, NoInterpreter>) -> T + Send,
        T: Send,
    {
        let calls = Cell::new(0);
        let out = f(&mut Released::new(&mut CountingWithGil { calls: &calls }));
        self.blocks.set(self.blocks.get() + 1 + calls.get());
        out
    }
}

#[test]
fn library_code_runs_through_a_nogil_adapter() {
    let blocks = Cell::new(0);
    let adapter = CountingAdapter { blocks: &blocks };
    let total = sum_of_squares(adapter, &[3.0, 4.0], every(1), |_, _| Ok::<(), ()>(()));
    assert_eq!(total, Ok(25.0));
    assert_eq!(blocks.get(), 3); // the block and two callbacks
    assert_eq!(
        monte_carlo_pi(adapter, 10, 1),
        monte_carlo_pi(MockGil::new(), 10, 1)
    );
}

/// Interrupted, or the progress callback's own error.
#[derive(Debug, PartialEq, Eq)]
enum HashStop {
    Interrupted,
    Progress(usize),
}

impl From<nuwa_ffi::Interrupted> for HashStop {
    fn from(_: nuwa_ffi::Interrupted) -> Self {
        HashStop::Interrupted
    }
}

fn every_call() -> nuwa_ffi::SignalCheck {
    nuwa_ffi::SignalCheck::every(Duration::ZERO)
}

#[test]
fn fnv1a_matches_the_reference_values() {
    let gil = MockGil::new();
    let mut h = Fnv1a::new();
    assert_eq!(h.digest(), 0xcbf2_9ce4_8422_2325);
    h.update(&gil, b"a", &mut every_call(), |_| Ok::<(), HashStop>(()))
        .unwrap();
    assert_eq!(h.digest(), 0xaf63_dc4c_8601_ec8c);
    // Fed in pieces or at once, across chunk borders: the same hash.
    let data: Vec<u8> = (0..(2 * Fnv1a::CHUNK + 17)).map(|i| i as u8).collect();
    let (mut whole, mut pieces) = (Fnv1a::new(), Fnv1a::new());
    whole
        .update(&gil, &data, &mut every_call(), |_| Ok::<(), HashStop>(()))
        .unwrap();
    for piece in data.chunks(Fnv1a::CHUNK / 3) {
        pieces
            .update(&gil, piece, &mut every_call(), |_| Ok::<(), HashStop>(()))
            .unwrap();
    }
    assert_eq!(whole, pieces);
    gil.done();
}

/// The chunked loop of library code, stopped by a "signal" at each possible
/// check: it stops right there, reports progress up to there only, leaves
/// the hasher unchanged, and the GIL is back.
#[test]
fn a_signal_stops_the_hash_at_that_chunk_and_changes_nothing() {
    let data = vec![1u8; 4 * Fnv1a::CHUNK];
    for at in 1..=4 {
        let gil = MockGil::new();
        gil.signal_at(at);
        let mut hasher = Fnv1a::new();
        let mut reported = Vec::new();
        let outcome = hasher.update(&gil, &data, &mut every_call(), |done| {
            reported.push(done / Fnv1a::CHUNK);
            Ok::<(), HashStop>(())
        });
        assert_eq!(outcome, Err(HashStop::Interrupted), "signal at check {at}");
        assert_eq!(
            hasher,
            Fnv1a::new(),
            "half-changed after a signal at check {at}"
        );
        assert_eq!(gil.signal_checks(), at);
        assert_eq!(reported, (1..at).collect::<Vec<_>>());
        // The block, one part per check, one per progress report.
        assert_eq!(gil.releases(), 1 + at + (at - 1));
        assert!(gil.is_held());
        gil.done();
    }
}

#[test]
fn an_error_from_progress_changes_nothing_either() {
    let gil = ThreadCheckedMock::new();
    let data = vec![2u8; 3 * Fnv1a::CHUNK];
    let mut hasher = Fnv1a::new();
    let outcome = hasher.update(&gil, &data, &mut every_call(), |done| {
        assert!(gil.is_held_by_current(), "progress without the GIL");
        if done == 2 * Fnv1a::CHUNK {
            Err(HashStop::Progress(done))
        } else {
            Ok(())
        }
    });
    assert_eq!(outcome, Err(HashStop::Progress(2 * Fnv1a::CHUNK)));
    assert_eq!(hasher, Fnv1a::new());
    assert_eq!(gil.signal_checks(), 2);
    gil.done();
}

/// On a thread that does not hold the GIL nothing is released, checked or
/// reported, and the hash completes: a signal cannot be seen there.
#[test]
fn where_the_gil_is_not_held_the_hash_runs_unchecked() {
    let gil = ThreadCheckedMock::held_by_nobody();
    gil.signal_at(1);
    let mut hasher = Fnv1a::new();
    let outcome = hasher.update(
        &gil,
        &[3u8; 10],
        &mut every_call(),
        |_| -> Result<(), HashStop> { unreachable!("no GIL, no progress") },
    );
    assert_eq!(outcome, Ok(()));
    assert_ne!(hasher, Fnv1a::new());
    assert_eq!(
        (gil.signal_checks(), gil.releases(), gil.skipped()),
        (0, 0, 1)
    );
}

/// A block that kept the GIL (`ReleaseIf`, the threshold) checks in place.
#[test]
fn a_block_below_the_threshold_still_checks() {
    let gil = MockGil::new();
    gil.signal_at(1);
    let mut hasher = Fnv1a::new();
    let small = nuwa_core::ReleaseIf::new(&gil, false);
    let outcome = hasher.update(small, &[4u8; 10], &mut every_call(), |_| {
        Ok::<(), HashStop>(())
    });
    assert_eq!(outcome, Err(HashStop::Interrupted));
    assert_eq!((gil.releases(), gil.signal_checks()), (0, 1));
    assert_eq!(hasher, Fnv1a::new());
    gil.done();
}
