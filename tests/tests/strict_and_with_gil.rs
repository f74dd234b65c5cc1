//! The strict form (`Nogil::nogil`), taking the GIL back inside a block
//! (`with_gil!`, `Released::with_gil`, a `Released` around a `Guard` by
//! hand), `ReleaseIf`, and the self-checks of the std adapter, with exact
//! mock counts.
//!
//! Proves that the strict form releases once and takes the GIL back on every
//! way out; that taking the GIL back inside a block restores exactly the
//! state the block saved and releases again on every way out of the inner
//! part (end, `return`, `?`, `break`, panic); that where the block released
//! nothing the inner part runs only if the GIL is held; that the names a
//! block hides are usable again inside `with_gil!`; that an async function
//! using the strict form is balanced across a suspension; and that
//! `Panicked` is `Send + Sync` and `ThreadCheckedMock` checks itself on drop.

use std::cell::{Cell, RefCell};
use std::error::Error;
use std::future::Future;
use std::num::ParseIntError;
use std::panic::{self, AssertUnwindSafe};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use nuwa_core::__private::{release, released};
use nuwa_core::mock::{MockGil, MockState};
use nuwa_core::{GilOps, GilUnavailable, Nogil, ReleaseIf, Released};
use nuwa_std::{Panicked, ThreadCheckedMock};
use nuwa_tests::assert_held_after;

// ---------------------------------------------------------------------------
// The strict form
// ---------------------------------------------------------------------------

#[test]
fn strict_form_releases_once_and_returns_the_value() {
    let gil = ThreadCheckedMock::new();
    let data = [3.0_f64, 4.0];
    let (norm, held_inside) = gil.nogil(|_| {
        (
            data.iter().map(|x| x * x).sum::<f64>().sqrt(),
            gil.is_held_by_current(),
        )
    });
    assert_eq!((norm, held_inside), (5.0, false));
    assert!(gil.is_held_by_current());
    assert_eq!((gil.releases(), gil.reacquires()), (1, 1));
}

#[test]
fn strict_form_takes_the_gil_back_on_a_panic() {
    let gil = MockGil::new();
    let caught = panic::catch_unwind(AssertUnwindSafe(|| {
        gil.nogil(|_| -> u32 { panic!("strict boom") })
    }));
    assert!(caught.is_err());
    assert_held_after(&gil, 1, 1, 0);
}

#[test]
fn strict_form_nested_in_a_block_releases_nothing() {
    let gil = MockGil::new();
    let (value, again) = nuwa_core::nogil!(gil => {
        gil.nogil(|released| (7, released.with_gil(|| ())))
    });
    assert_eq!(value, 7);
    assert_eq!(
        again,
        Err(GilUnavailable::new()),
        "took back a GIL it did not release"
    );
    assert_held_after(&gil, 1, 1, 1);
}

#[test]
fn strict_form_on_a_thread_that_never_held_the_gil() {
    let gil = MockGil::never_held();
    let again = gil.nogil(|released| released.with_gil(|| unreachable!()));
    assert_eq!(again, Err(GilUnavailable::new()));
    assert_eq!((gil.releases(), gil.reacquires(), gil.skipped()), (0, 0, 1));
}

// ---------------------------------------------------------------------------
// Released::with_gil (the strict form's inner part)
// ---------------------------------------------------------------------------

#[test]
fn released_with_gil_takes_back_each_time_and_releases_again() {
    let gil = ThreadCheckedMock::new();
    let mut seen = Vec::new();
    let total = gil.nogil(|released| {
        let mut total = 0;
        for step in 1..=3 {
            total += step; // GIL released
            let held = released
                .with_gil(|| gil.is_held_by_current())
                .expect("this block released, so it can take the GIL back");
            seen.push((held, gil.is_held_by_current()));
        }
        total
    });
    assert_eq!(total, 6);
    // Held inside each part, released again after it.
    assert_eq!(seen, [(true, false); 3]);
    assert!(gil.is_held_by_current());
    // One release for the block, then one more per part; as many reacquires.
    assert_eq!((gil.releases(), gil.reacquires()), (4, 4));
}

#[test]
fn released_with_gil_releases_again_when_the_part_panics() {
    let gil = MockGil::new();
    let caught = panic::catch_unwind(AssertUnwindSafe(|| {
        gil.nogil(|released| {
            let _ = released.with_gil(|| panic!("in the callback"));
        })
    }));
    assert!(caught.is_err());
    assert_held_after(&gil, 2, 2, 0);
}

#[test]
fn catch_turns_a_panic_in_the_inner_part_into_an_error() {
    let gil = MockGil::new();
    let err = Panicked::catch(|| {
        gil.nogil(|released| released.with_gil(|| -> () { panic!("callback raised") }))
    })
    .unwrap_err();
    assert_eq!(err.message(), Some("callback raised"));
    assert_held_after(&gil, 2, 2, 0);
}

// ---------------------------------------------------------------------------
// with_gil! (the in-place form's inner part)
// ---------------------------------------------------------------------------

#[test]
fn with_gil_in_place_restores_and_releases_again() {
    let gil = MockGil::new();
    let mut states = Vec::new();
    nuwa_core::nogil!(gil => {
        for _ in 0..2 {
            let held = with_gil! { gil.is_held() }.unwrap();
            states.push((held, gil.is_held()));
        }
    });
    assert_eq!(states, [(true, false), (true, false)]);
    assert_held_after(&gil, 3, 3, 0);
}

#[test]
fn two_parts_in_one_expression_release_between_them() {
    // Each part releases the GIL again at its own end, not at the end of the
    // statement: the second part can take it back (before, this did not
    // compile: the first part's guard outlived its `match`).
    let gil = MockGil::new();
    let (sum, released_between) = nuwa_core::nogil!(gil => {
        let sum = with_gil! { 1 }.unwrap() + with_gil! { 2 }.unwrap();
        (sum, !gil.is_held())
    });
    assert_eq!((sum, released_between), (3, true));
    let held_in_both = nuwa_core::nogil!(gil => {
        with_gil! { gil.is_held() }.unwrap() && with_gil! { gil.is_held() }.unwrap()
    });
    assert!(held_in_both);
    assert_held_after(&gil, 6, 6, 0);
}

fn return_from_inside(gil: &MockGil) -> u32 {
    nuwa_core::nogil!(gil => {
        let _ = with_gil! {
            return 5;
        };
        6
    })
}

fn question_mark_from_inside(gil: &MockGil, text: &str) -> Result<u32, ParseIntError> {
    nuwa_core::nogil!(gil => {
        let n = with_gil! { text.parse::<u32>()? }.expect("released, so it can take back");
        Ok(n + 1)
    })
}

#[test]
fn every_way_out_of_the_inner_part_releases_again_then_takes_back() {
    let gil = MockGil::new();
    assert_eq!(return_from_inside(&gil), 5);
    assert_held_after(&gil, 2, 2, 0);
    assert_eq!(question_mark_from_inside(&gil, "41"), Ok(42));
    assert!(question_mark_from_inside(&gil, "x").is_err());
    assert_held_after(&gil, 6, 6, 0);
    let mut rounds = 0;
    'outer: loop {
        nuwa_core::nogil!(gil => {
            rounds += 1;
            let _ = with_gil! {
                if rounds == 2 {
                    break 'outer;
                }
            };
        });
    }
    assert_eq!(rounds, 2);
    assert_held_after(&gil, 10, 10, 0);
    let caught = panic::catch_unwind(AssertUnwindSafe(|| {
        nuwa_core::nogil!(gil => {
            let _ = with_gil! { panic!("inner part") };
        })
    }));
    assert!(caught.is_err());
    assert_held_after(&gil, 12, 12, 0);
}

/// Stands for a Python handle.
#[derive(Debug, PartialEq)]
struct Python(u32);

#[test]
fn hidden_names_are_usable_again_inside_with_gil() {
    let gil = MockGil::new();
    let py = Python(7);
    let log = RefCell::new(Vec::new());
    let total = nuwa_core::nogil!(gil, hide(py, log) => {
        let mut total = 0;
        for i in 0..2 {
            total += i;
            // Twice in one part, once nested in a group: the same binding.
            with_gil! {
                log.borrow_mut().push(py.0 + total);
                assert_eq!(*py, Python(7));
            }
            .unwrap();
        }
        total
    });
    assert_eq!(total, 1);
    assert_eq!(*log.borrow(), [7, 8]);
    assert_eq!(py, Python(7));
    assert_held_after(&gil, 3, 3, 0);
}

#[test]
fn with_gil_in_a_nested_block_cannot_take_back_and_does_not_run() {
    let gil = MockGil::new();
    let ran = Cell::new(false);
    let inner = nuwa_core::nogil!(gil => {
        nuwa_core::nogil!(gil => { with_gil! { ran.set(true) } })
    });
    assert_eq!(inner, Err(GilUnavailable::new()));
    assert!(!ran.get());
    assert_held_after(&gil, 1, 1, 1);
}

#[test]
fn with_gil_on_a_thread_that_never_held_the_gil_does_not_run() {
    let gil = ThreadCheckedMock::held_by_nobody();
    let result = nuwa_core::nogil!(gil => { with_gil! { unreachable!() } });
    assert_eq!(result, Err(GilUnavailable::new()));
    assert_eq!(
        result.unwrap_err().to_string(),
        "the GIL cannot be taken back here: this block released nothing and the thread \
         does not hold the GIL (a nested block, or a thread Python does not know)"
    );
}

#[test]
fn a_block_that_kept_the_gil_runs_with_gil_at_once() {
    let gil = MockGil::new();
    let kept = nuwa_core::nogil!(ReleaseIf::new(&gil, false) => { with_gil! { gil.is_held() } });
    assert_eq!(kept, Ok(true));
    assert_held_after(&gil, 0, 0, 0);
    let released = nuwa_core::nogil!(ReleaseIf::new(&gil, true) => { gil.is_held() });
    assert!(!released);
    assert_held_after(&gil, 1, 1, 0);
    // A block that kept the GIL on a thread that does not hold it refuses.
    let never = MockGil::never_held();
    let refused = nuwa_core::nogil!(ReleaseIf::new(&never, false) => { with_gil! { () } });
    assert_eq!(refused, Err(GilUnavailable::new()));
}

#[test]
fn a_move_closure_in_a_block_captures_only_a_reference_to_the_guard() {
    let gil = MockGil::new();
    let mock = &gil;
    nuwa_core::nogil!(gil => {
        // Forgetting a closure that uses `with_gil!` forgets a reference,
        // not the guard: the block still takes the GIL back at its end.
        let keep = move || {
            let _ = with_gil! { () };
        };
        #[allow(
            clippy::forget_non_drop,
            reason = "that the closure holds nothing with a Drop is the point"
        )]
        std::mem::forget(keep);
    });
    assert_held_after(&gil, 1, 1, 0);
    nuwa_core::nogil!(gil => {
        let mut call = move || with_gil! { mock.is_held() };
        assert_eq!(call(), Ok(true));
    });
    nuwa_core::nogil!(gil => {
        let mut handle = move || released!().with_gil(|| mock.is_held());
        assert_eq!(handle(), Ok(true));
    });
    assert_held_after(&gil, 5, 5, 0);
}

#[test]
fn guard_with_gil_by_hand() {
    let gil = MockGil::new();
    // SAFETY: dropped below, on this thread.
    let mut guard = unsafe { release(&gil) };
    assert_eq!(
        Released::new(&mut guard).with_gil(|| gil.is_held()),
        Ok(true)
    );
    assert!(released(&guard), "released again after the part");
    drop(guard);
    assert_held_after(&gil, 2, 2, 0);
}

// ---------------------------------------------------------------------------
// Async: the strict form around a suspension
// ---------------------------------------------------------------------------

/// Pending once, then ready: a suspension point.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: std::pin::Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}

async fn strict_in_async(gil: &ThreadCheckedMock, data: &[u32]) -> u32 {
    let first = gil.nogil(|_| data.iter().sum::<u32>());
    YieldOnce(false).await; // suspended with the GIL held: nothing outstanding
    first + nuwa_core::nogil!(gil => { data.len() as u32 })
}

#[test]
fn an_async_fn_using_the_strict_form_is_balanced_at_each_suspension() {
    let gil = ThreadCheckedMock::new();
    let data = [1, 2, 3];
    let mut future = pin!(strict_in_async(&gil, &data));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(future.as_mut().poll(&mut cx).is_pending());
    // Parked by its executor: the thread holds the GIL, nothing outstanding.
    assert!(gil.is_held_by_current());
    gil.done();
    assert_eq!(future.as_mut().poll(&mut cx), Poll::Ready(9));
    assert_eq!((gil.releases(), gil.reacquires()), (2, 2));
}

// ---------------------------------------------------------------------------
// Panicked is Send + Sync; ThreadCheckedMock checks itself on drop
// ---------------------------------------------------------------------------

fn fallible(gil: &MockGil) -> Result<u32, Box<dyn Error + Send + Sync>> {
    let value = Panicked::catch(|| gil.nogil(|_| -> u32 { panic!("into a boxed error") }))?;
    Ok(value)
}

#[test]
fn panicked_converts_into_a_send_sync_error_with_question_mark() {
    let gil = MockGil::new();
    let err = fallible(&gil).unwrap_err();
    assert_eq!(err.to_string(), "into a boxed error");
    assert!(err.downcast_ref::<Panicked>().is_some());
    assert_held_after(&gil, 1, 1, 0);
    // Shared between threads, its message reads the same.
    let panicked = Panicked::catch(|| gil.nogil(|_| -> () { panic!("shared {}", 1) })).unwrap_err();
    std::thread::scope(|s| {
        let message = s.spawn(|| panicked.message().map(str::to_owned));
        assert_eq!(message.join().unwrap().as_deref(), Some("shared 1"));
    });
}

#[test]
#[should_panic(expected = "ThreadCheckedMock: the GIL is still released (release #1 by thread")]
fn thread_checked_mock_dropped_with_a_release_outstanding_fails_the_test() {
    let gil = ThreadCheckedMock::new();
    // SAFETY: ThreadCheckedMock is memory-safe under any call order; the
    // outstanding release is the breach under test (no `done()` is called).
    let _state = unsafe { gil.release() };
}

// ---------------------------------------------------------------------------
// The mocks check the inner reacquires and releases
// ---------------------------------------------------------------------------

/// Forwards to a `MockGil`, and records which release each reacquire
/// consumes.
struct Recording<'a> {
    mock: &'a MockGil,
    reacquired: RefCell<Vec<usize>>,
}

// SAFETY: every call is forwarded unchanged to the mock.
unsafe impl GilOps for Recording<'_> {
    type State = MockState;
    type Gil = MockGil;

    unsafe fn release(&self) -> Option<MockState> {
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { self.mock.release() }
    }

    unsafe fn reacquire(&self, state: MockState) {
        self.reacquired.borrow_mut().push(state.serial());
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { self.mock.reacquire(state) }
    }

    fn is_held(&self) -> bool {
        self.mock.is_held()
    }
}

#[test]
fn each_inner_part_takes_back_the_state_of_the_release_before_it() {
    for form in ["in place", "strict"] {
        let gil = MockGil::new();
        let ops = Recording {
            mock: &gil,
            reacquired: RefCell::new(Vec::new()),
        };
        let mut parts = 0;
        if form == "in place" {
            nuwa_core::nogil!(ops => {
                for _ in 0..3 {
                    parts += with_gil! { usize::from(gil.is_held()) }.unwrap();
                }
            });
        } else {
            // A strict closure cannot capture the mock (it is not `Sync`):
            // it counts the parts only.
            ops.nogil(|released| {
                for _ in 0..3 {
                    released.with_gil(|| parts += 1).unwrap();
                }
            });
        }
        assert_eq!(parts, 3, "{form}");
        // The block's release is #1; part n takes back release #n and
        // releases #n+1; the block's end takes back #4.
        assert_eq!(*ops.reacquired.borrow(), [1, 2, 3, 4], "{form}");
        assert_held_after(&gil, 4, 4, 0);
    }
}

/// A broken backend: it takes the GIL back twice in a row with the same
/// state (as a `with_gil` that forgot it had already taken the GIL back).
struct ReacquiresTwice<'a, G: GilOps<State = S>, S: Clone>(&'a G);

// SAFETY: not sound on purpose, only for the mocks to catch: `reacquire`
// breaks the contract by reacquiring twice, which the mocks report by
// panicking (they are memory-safe under any call order).
unsafe impl<G: GilOps<State = S>, S: Clone> GilOps for ReacquiresTwice<'_, G, S> {
    type State = S;
    type Gil = G::Gil;

    unsafe fn release(&self) -> Option<S> {
        // SAFETY: passed on unchanged.
        unsafe { self.0.release() }
    }

    unsafe fn reacquire(&self, state: S) {
        // SAFETY: the second call is the breach under test.
        unsafe {
            self.0.reacquire(state.clone());
            self.0.reacquire(state);
        }
    }
}

#[test]
#[should_panic(
    expected = "MockGil: reacquire without a release: the GIL is already held (state of release #1)"
)]
fn mock_gil_catches_an_inner_part_that_takes_the_gil_back_twice() {
    let gil = MockGil::new();
    ReacquiresTwice(&gil).nogil(|released| {
        let _ = released.with_gil(|| ());
    });
}

#[test]
#[should_panic(
    expected = "ThreadCheckedMock: reacquire without a release (state of release #1; nothing is \
                outstanding"
)]
fn thread_checked_mock_catches_an_in_place_part_that_takes_the_gil_back_twice() {
    let gil = ThreadCheckedMock::new();
    let broken = ReacquiresTwice(&gil);
    nuwa_core::nogil!(broken => {
        let _ = with_gil! { () };
    });
}

/// A macro of the caller's named like nuwa's hidden helper is called in its
/// place inside a part. It gets a shared reference to the part, so dropping
/// or forgetting what it gets ends nothing: the part runs with the GIL held,
/// and the block still takes the GIL back once. (When the helper was handed
/// the part itself, `drop` released the GIL before the part's code ran, and
/// `forget` left the part's shutdown cleanup registered on a dead frame.)
#[test]
#[allow(dropping_references)]
fn a_callers_macro_in_place_of_the_unhide_helper_cannot_end_the_part() {
    let gil = MockGil::new();
    let held_in_part = nuwa_core::nogil!(&gil => {
        #[allow(unused_macros)]
        macro_rules! __nuwa_unhide_ident {
            ($r:ident $n:ident trigger) => {
                drop($r);
            };
            ($r:ident $n:ident $o:ident) => {};
        }
        let trigger = ();
        with_gil! {
            let () = trigger;
            gil.is_held()
        }
    });
    assert_eq!(held_in_part, Ok(true));
    assert_eq!((gil.releases(), gil.reacquires()), (2, 2));
    gil.done();
}
