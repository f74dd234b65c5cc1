//! The std adapter: `nuwa_std::Panicked::catch` (around the strict form) and
//! `nuwa_std::ThreadCheckedMock`.
//!
//! Proves that `Panicked::catch(|| ops.nogil(..))` returns the body's value
//! or the caught panic (with its message for `&str` and `String` payloads,
//! and any payload recoverable or re-raised), with the GIL held again and
//! exact counts; and
//! that `ThreadCheckedMock` releases only for the owning thread, makes blocks
//! on other threads release nothing, and panics, naming the threads or the
//! releases, when the GIL is taken back on the wrong thread or with the wrong
//! state.

use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc;
use std::thread;

use nuwa_core::mock::MockGil;
use nuwa_core::{GilOps, Nogil, nogil};
use nuwa_std::{Panicked, ThreadCheckedMock, ThreadCheckedState};
use nuwa_tests::assert_held_after;

// ---------------------------------------------------------------------------
// Panicked::catch around the strict form
// ---------------------------------------------------------------------------

#[test]
fn ok_returns_the_value_with_the_gil_held() {
    // A strict closure can capture only what is `Sync` by reference: the
    // thread-checked mock, not `MockGil`.
    let gil = ThreadCheckedMock::new();
    let result = Panicked::catch(|| gil.nogil(|_| (6 * 7, gil.is_held_by_current())));
    assert_eq!(result.unwrap(), (42, false));
    assert_owned_after(&gil, 1, 1, 0);
}

#[test]
fn str_payload_gives_its_message() {
    let gil = MockGil::new();
    let err =
        Panicked::catch(|| gil.nogil(|_| -> u32 { panic::panic_any("a static str") })).unwrap_err();
    assert!(gil.is_held(), "the GIL was not taken back before the Err");
    assert_eq!(err.message(), Some("a static str"));
    assert_eq!(err.to_string(), "a static str");
    assert_eq!(
        format!("{err:?}"),
        r#"Panicked { message: Some("a static str"), .. }"#
    );
    let payload = err.into_payload();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"a static str"));
    assert_held_after(&gil, 1, 1, 0);
}

#[test]
fn string_payload_gives_its_message() {
    let gil = MockGil::new();
    let pixel = 7;
    let err =
        Panicked::catch(|| gil.nogil(|_| -> u32 { panic!("bad pixel at {pixel}") })).unwrap_err();
    assert!(gil.is_held());
    assert_eq!(err.message(), Some("bad pixel at 7"));
    assert_eq!(err.to_string(), "bad pixel at 7");
    let payload = err.into_payload();
    assert_eq!(
        payload.downcast_ref::<String>().map(String::as_str),
        Some("bad pixel at 7"),
        "the payload of a formatted panic! is a String"
    );
    assert_held_after(&gil, 1, 1, 0);
}

#[test]
fn non_string_payload_has_no_message_but_can_be_taken_back() {
    let gil = MockGil::new();
    let err = Panicked::catch(|| gil.nogil(|_| -> u32 { panic::panic_any(42u32) })).unwrap_err();
    assert!(gil.is_held());
    assert_eq!(err.message(), None);
    assert_eq!(err.to_string(), "panic with a payload that is not a string");
    assert_eq!(format!("{err:?}"), "Panicked { message: None, .. }");
    let payload = err.into_payload();
    assert_eq!(payload.downcast_ref::<u32>(), Some(&42));
    assert_held_after(&gil, 1, 1, 0);
}

#[test]
fn panicked_is_an_error() {
    let gil = MockGil::new();
    let err: Box<dyn std::error::Error> =
        Box::new(Panicked::catch(|| gil.nogil(|_| panic!("as an error"))).unwrap_err());
    assert_eq!(err.to_string(), "as an error");
    assert!(err.source().is_none());
    assert_held_after(&gil, 1, 1, 0);
}

#[test]
fn resume_re_raises_the_same_payload() {
    let gil = MockGil::new();
    let err = Panicked::catch(|| gil.nogil(|_| panic::panic_any(7u8))).unwrap_err();
    assert!(gil.is_held());
    let again = panic::catch_unwind(AssertUnwindSafe(|| err.resume())).unwrap_err();
    assert_eq!(again.downcast_ref::<u8>(), Some(&7));
    // Re-raising happens with the GIL held and does not touch the mock.
    assert_held_after(&gil, 1, 1, 0);
}

#[test]
fn err_then_ok_on_the_same_mock() {
    let gil = MockGil::new();
    let first: Result<u32, Panicked> = Panicked::catch(|| gil.nogil(|_| panic!("first")));
    assert_eq!(first.unwrap_err().message(), Some("first"));
    assert_held_after(&gil, 1, 1, 0);
    assert_eq!(Panicked::catch(|| gil.nogil(|_| 2)).unwrap(), 2);
    assert_held_after(&gil, 2, 2, 0);
}

#[test]
fn nested_in_nogil_it_releases_nothing() {
    let gil = MockGil::new();
    let inner = nogil!(gil => {
        let err = Panicked::catch(|| gil.nogil(|_| -> u32 { panic!("inner") })).unwrap_err();
        // The catch must not have taken back the outer block's GIL.
        (err.to_string(), gil.is_held(), gil.reacquires())
    });
    assert_eq!(inner, (String::from("inner"), false, 0));
    assert_held_after(&gil, 1, 1, 1);
}

#[test]
fn never_held_releases_nothing_on_ok_and_err() {
    let gil = MockGil::never_held();
    assert_eq!(Panicked::catch(|| gil.nogil(|_| 1)).unwrap(), 1);
    assert!(Panicked::catch(|| gil.nogil(|_| -> u32 { panic!("never held") })).is_err());
    assert_eq!((gil.releases(), gil.reacquires(), gil.skipped()), (0, 0, 2));
    assert!(!gil.is_held());
    gil.done();
}

// ---------------------------------------------------------------------------
// ThreadCheckedMock
// ---------------------------------------------------------------------------

#[track_caller]
fn assert_owned_after(gil: &ThreadCheckedMock, releases: usize, reacquires: usize, skipped: usize) {
    assert!(gil.is_held_by_current(), "not held by this thread: {gil:?}");
    gil.done();
    assert_eq!(
        (gil.releases(), gil.reacquires(), gil.skipped()),
        (releases, reacquires, skipped),
        "(releases, reacquires, skipped) of {gil:?}"
    );
}

#[test]
fn owner_releases_and_takes_the_gil_back() {
    let gil = ThreadCheckedMock::new();
    assert_eq!(gil.owner(), Some(thread::current().id()));
    let owner_inside = nogil!(gil => { gil.owner() });
    assert_eq!(owner_inside, None);
    assert_owned_after(&gil, 1, 1, 0);
}

#[test]
fn a_spawned_thread_releases_nothing() {
    let gil = ThreadCheckedMock::new();
    let seen = thread::scope(|s| {
        s.spawn(|| nogil!(gil => { (gil.is_held_by_current(), gil.owner()) }))
            .join()
            .unwrap()
    });
    // The spawned thread saw the GIL still owned by the main thread.
    assert_eq!(seen, (false, Some(thread::current().id())));
    assert_owned_after(&gil, 0, 0, 1);
}

#[test]
fn catch_with_a_thread_checked_mock() {
    let gil = ThreadCheckedMock::new();
    let err = Panicked::catch(|| gil.nogil(|_| -> u32 { panic!("checked") })).unwrap_err();
    assert_eq!(err.message(), Some("checked"));
    assert_eq!(
        Panicked::catch(|| gil.nogil(|_| gil.owner())).unwrap(),
        None
    );
    assert_owned_after(&gil, 2, 2, 0);
}

#[test]
fn reacquire_on_another_thread_panics_naming_both_threads() {
    let gil = ThreadCheckedMock::new();
    let main_id = thread::current().id();
    // SAFETY: ThreadCheckedMock is memory-safe under any call order: a breach
    // panics under its lock and changes nothing. The state is taken back on
    // this thread below.
    let state = unsafe { gil.release() }.expect("the owner releases");
    assert_eq!((state.serial(), state.thread()), (1, main_id));

    let (other_id, result) = thread::scope(|s| {
        let handle = s.spawn({
            let state = state.clone();
            let gil = &gil;
            // SAFETY: as above; this is the breach under test.
            move || unsafe { gil.reacquire(state) }
        });
        let other_id = handle.thread().id();
        (other_id, handle.join())
    });
    let payload = result.expect_err("reacquire on another thread did not panic");
    let message = payload
        .downcast_ref::<String>()
        .expect("a formatted message");
    assert_eq!(
        *message,
        format!(
            "ThreadCheckedMock: GIL reacquired on thread {other_id:?}, but release #1 was made \
             on thread {main_id:?}: the GIL must be taken back by the thread that released it"
        )
    );
    assert_ne!(other_id, main_id);

    // The failed reacquire changed nothing: the release is still outstanding
    // and the right thread can take the GIL back.
    assert_eq!((gil.owner(), gil.reacquires()), (None, 0));
    // SAFETY: `state` is the outstanding release, made on this thread.
    unsafe { gil.reacquire(state) };
    assert_owned_after(&gil, 1, 1, 0);
}

#[test]
fn a_state_sent_over_a_channel_is_caught_too() {
    let gil = ThreadCheckedMock::new();
    let (tx, rx) = mpsc::channel::<ThreadCheckedState>();
    let result = thread::scope(|s| {
        let gil = &gil;
        let handle = s.spawn(move || {
            let state = rx.recv().unwrap();
            // SAFETY: ThreadCheckedMock is memory-safe under any call order;
            // this is the breach under test.
            unsafe { gil.reacquire(state) }
        });
        // SAFETY: as above; the release stays outstanding until the end.
        tx.send(unsafe { gil.release() }.unwrap()).unwrap();
        handle.join()
    });

    let payload = result.unwrap_err();
    let message = payload.downcast_ref::<String>().unwrap();
    assert!(
        message.contains("must be taken back by the thread that released it"),
        "{message}"
    );
    assert_eq!((gil.releases(), gil.reacquires(), gil.skipped()), (1, 0, 0));
    // The release is still outstanding (its state was used up by the breach),
    // so the mock's drop check would fail the test: forget the mock instead.
    std::mem::forget(gil);
}

#[test]
#[should_panic(
    expected = "ThreadCheckedMock: reacquire with a wrong state: it is from release #1, \
                           but release #2 is the one outstanding"
)]
fn thread_checked_rejects_a_stale_state() {
    let gil = ThreadCheckedMock::new();
    // SAFETY: ThreadCheckedMock is memory-safe under any call order; the
    // last reacquire is the breach under test.
    unsafe {
        let first = gil.release().unwrap();
        gil.reacquire(first.clone());
        let _second = gil.release().unwrap();
        gil.reacquire(first);
    }
}

#[test]
#[should_panic(
    expected = "ThreadCheckedMock: reacquire with a wrong state: it comes from another \
                           mock (release #1 there)"
)]
fn thread_checked_rejects_a_state_from_another_mock() {
    let (a, b) = (ThreadCheckedMock::new(), ThreadCheckedMock::new());
    // SAFETY: ThreadCheckedMock is memory-safe under any call order; the
    // reacquire is the breach under test.
    unsafe {
        let _from_a = a.release().unwrap();
        let from_b = b.release().unwrap();
        a.reacquire(from_b);
    }
}

#[test]
#[should_panic(
    expected = "ThreadCheckedMock: reacquire without a release (state of release #1; \
                           nothing is outstanding"
)]
fn thread_checked_rejects_a_reacquire_without_a_release() {
    let gil = ThreadCheckedMock::new();
    // SAFETY: ThreadCheckedMock is memory-safe under any call order; the
    // second reacquire is the breach under test.
    unsafe {
        let state = gil.release().unwrap();
        gil.reacquire(state.clone());
        gil.reacquire(state);
    }
}

#[test]
#[should_panic(expected = "ThreadCheckedMock: the GIL is still released (release #1 by thread")]
fn thread_checked_done_rejects_an_outstanding_release() {
    let gil = ThreadCheckedMock::new();
    // SAFETY: ThreadCheckedMock is memory-safe under any call order.
    let _state = unsafe { gil.release() }.unwrap();
    gil.done();
}

#[test]
fn held_by_nobody_releases_nothing() {
    let gil = ThreadCheckedMock::held_by_nobody();
    assert_eq!(gil.owner(), None);
    let value = nogil!(gil => { 5 });
    assert_eq!(value, 5);
    // SAFETY: a `None` release has nothing to take back.
    assert!(unsafe { gil.release() }.is_none());
    assert_eq!((gil.releases(), gil.reacquires(), gil.skipped()), (0, 0, 2));
    assert_eq!(gil.owner(), None);
    assert!(!gil.is_held_by_current());
    gil.done();
}

#[test]
fn eight_threads_of_a_thousand_blocks_on_an_unowned_mock_release_nothing() {
    const THREADS: usize = 8;
    const BLOCKS: usize = 1000;
    let gil = ThreadCheckedMock::held_by_nobody();
    let sums: Vec<usize> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let gil = &gil;
                s.spawn(move || {
                    let mut sum = 0;
                    for i in 0..BLOCKS {
                        sum += nogil!(gil => { t * BLOCKS + i });
                    }
                    sum
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let expected: Vec<usize> = (0..THREADS)
        .map(|t| (0..BLOCKS).map(|i| t * BLOCKS + i).sum())
        .collect();
    assert_eq!(sums, expected);
    assert_eq!(
        (gil.releases(), gil.reacquires(), gil.skipped()),
        (0, 0, THREADS * BLOCKS)
    );
    assert_eq!(gil.owner(), None);
    gil.done();
}

#[test]
fn threads_spawned_inside_a_released_block_release_nothing() {
    const THREADS: usize = 4;
    let gil = ThreadCheckedMock::new();
    let main_id = thread::current().id();
    let seen = nogil!(gil => {
        thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let gil = &gil;
                    s.spawn(move || nogil!(gil => { (t, gil.owner(), gil.releases()) }))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        })
    });
    // Every thread saw the GIL owned by nobody and released once (by main).
    let expected: Vec<_> = (0..THREADS).map(|t| (t, None, 1)).collect();
    assert_eq!(seen, expected);
    assert_eq!(gil.owner(), Some(main_id));
    assert_owned_after(&gil, 1, 1, THREADS);
}

/// A payload caught by hand reads the same way through `Panicked::from`.
#[test]
fn a_hand_caught_payload_converts_to_panicked() {
    let payload = std::panic::catch_unwind(|| panic!("by {}", "hand")).unwrap_err();
    let panicked = nuwa_std::Panicked::from(payload);
    assert_eq!(panicked.message(), Some("by hand"));
}

/// A signal check on a thread that does not hold the mock's GIL panics, and
/// its message reads as one sentence (it had a run of spaces in the middle).
#[test]
fn thread_checked_mock_signal_check_without_the_gil_says_so() {
    let gil = ThreadCheckedMock::new();
    let outcome = thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: the mock is memory-safe under any call order; the
            // broken contract (no GIL held here) is what is checked.
            unsafe { gil.check_signals() }
        })
        .join()
    });
    let payload = outcome.expect_err("a check without the GIL must panic");
    let message = payload
        .downcast_ref::<String>()
        .expect("a formatted message");
    assert!(
        message.contains("without the GIL (owner Some(ThreadId(")
            && message.ends_with("); it must run in a part of the block"),
        "{message}"
    );
    assert!(!message.contains("  "), "{message:?}");
    assert_eq!(gil.signal_checks(), 0);
    gil.done();
}
