//! Every way out of `nuwa_core::nogil!`, checked with `MockGil`'s counters.
//!
//! Proves that the block's value, `return`, `?`, labelled `break`/`continue`
//! and an unwinding panic each take the GIL back exactly once; that nested
//! blocks and threads that never held the GIL release nothing; that `OPS` is
//! borrowed in all its forms; that `hide(...)` shadows only inside the block;
//! that the macro is warning-free in `unsafe` contexts; and that `Guard` and
//! `MockGil`'s breach checks behave as documented.

use std::any::{type_name, type_name_of_val};
use std::cell::Cell;
use std::num::ParseIntError;
use std::panic::{self, AssertUnwindSafe};

use nuwa_core::__private::{release, released};
use nuwa_core::mock::MockGil;
use nuwa_core::{GilOps, HiddenWhileGilReleased, ReleaseIf, nogil};
use nuwa_tests::assert_held_after;

// ---------------------------------------------------------------------------
// The value of the block
// ---------------------------------------------------------------------------

#[test]
fn macro_evaluates_to_the_block_value() {
    let gil = MockGil::new();
    let (value, held_inside) = nogil!(gil => { (6 * 7, gil.is_held()) });
    assert_eq!(value, 42);
    assert!(!held_inside, "the block ran with the GIL held");
    assert_held_after(&gil, 1, 1, 0);
}

#[test]
fn block_runs_once_and_may_borrow_and_return_owned_data() {
    let gil = MockGil::new();
    let runs = Cell::new(0);
    let words = ["no", "gil"];
    let joined: String = nogil!(gil => {
        runs.set(runs.get() + 1);
        words.join("-")
    });
    assert_eq!(joined, "no-gil");
    assert_eq!(runs.get(), 1);
    assert_held_after(&gil, 1, 1, 0);
}

#[test]
fn consecutive_blocks_each_release_and_reacquire_once() {
    let gil = MockGil::new();
    let mut total = 0;
    for i in 1..=3 {
        total += nogil!(gil => { i * 10 });
        assert!(gil.is_held(), "not held after block {i}");
    }
    assert_eq!(total, 60);
    assert_held_after(&gil, 3, 3, 0);
}

// ---------------------------------------------------------------------------
// `return` and `?`
// ---------------------------------------------------------------------------

fn first_negative(gil: &MockGil, data: &[i32]) -> Option<usize> {
    nogil!(gil => {
        for (i, &x) in data.iter().enumerate() {
            if x < 0 {
                return Some(i);
            }
        }
    });
    assert!(gil.is_held(), "fell through with the GIL released");
    None
}

#[test]
fn return_leaves_the_function_with_the_gil_held() {
    let gil = MockGil::new();
    assert_eq!(first_negative(&gil, &[3, 1, -4, 1]), Some(2));
    assert_held_after(&gil, 1, 1, 0);
    assert_eq!(first_negative(&gil, &[3, 1, 4]), None);
    assert_held_after(&gil, 2, 2, 0);
}

fn parse_sum(gil: &MockGil, items: &[&str]) -> Result<u64, ParseIntError> {
    let sum = nogil!(gil => {
        let mut sum = 0;
        for item in items {
            sum += item.parse::<u64>()?;
        }
        sum
    });
    Ok(sum)
}

#[test]
fn question_mark_propagates_the_error_with_the_gil_held() {
    let gil = MockGil::new();
    let err = parse_sum(&gil, &["1", "x", "3"]).unwrap_err();
    assert_eq!(err, "x".parse::<u64>().unwrap_err());
    assert_held_after(&gil, 1, 1, 0);
    assert_eq!(parse_sum(&gil, &["1", "2", "3"]), Ok(6));
    assert_held_after(&gil, 2, 2, 0);
}

fn second_char(gil: &MockGil, s: &str) -> Option<char> {
    nogil!(gil => {
        let mut chars = s.chars();
        chars.next()?;
        chars.next()
    })
}

#[test]
fn question_mark_on_option_propagates_none_with_the_gil_held() {
    let gil = MockGil::new();
    assert_eq!(second_char(&gil, ""), None);
    assert_held_after(&gil, 1, 1, 0);
    assert_eq!(second_char(&gil, "ab"), Some('b'));
    assert_held_after(&gil, 2, 2, 0);
}

// ---------------------------------------------------------------------------
// Labelled `break` and `continue`
// ---------------------------------------------------------------------------

#[test]
fn labelled_break_with_a_value_leaves_the_loop_with_the_gil_held() {
    let gil = MockGil::new();
    let mut round = 0;
    let found = 'outer: loop {
        round += 1;
        nogil!(gil => {
            if round == 3 {
                break 'outer round * 10;
            }
        });
        assert!(gil.is_held());
    };
    assert_eq!(found, 30);
    assert_held_after(&gil, 3, 3, 0);
}

#[test]
fn labelled_break_from_an_inner_loop_inside_the_block() {
    let gil = MockGil::new();
    let grid = [[1, 2, 3], [4, 5, 6], [7, 8, 9]];
    let mut rows = 0;
    let hit = 'rows: loop {
        for row in &grid {
            rows += 1;
            nogil!(gil => {
                for &cell in row {
                    if cell == 5 {
                        break 'rows (rows, cell);
                    }
                }
            });
        }
        assert!(rows < 10, "5 not found");
    };
    assert_eq!(hit, (2, 5));
    assert_held_after(&gil, 2, 2, 0);
}

#[test]
fn break_out_of_a_labelled_block_with_a_value() {
    let gil = MockGil::new();
    let value = 'done: {
        nogil!(gil => {
            if gil.releases() == 1 {
                break 'done 5;
            }
        });
        0
    };
    assert_eq!(value, 5);
    assert_held_after(&gil, 1, 1, 0);
}

#[test]
fn labelled_continue_goes_to_the_next_outer_iteration() {
    let gil = MockGil::new();
    let mut kept = Vec::new();
    'outer: for i in 0..6 {
        nogil!(gil => {
            for j in 0..i {
                if j == 2 {
                    continue 'outer;
                }
            }
        });
        assert!(gil.is_held());
        kept.push(i);
    }
    assert_eq!(kept, [0, 1, 2]);
    assert_held_after(&gil, 6, 6, 0);
}

#[test]
fn unlabelled_break_and_continue_reach_the_enclosing_loop() {
    let gil = MockGil::new();
    let mut seen = Vec::new();
    let mut i = 0;
    loop {
        i += 1;
        nogil!(gil => {
            if i % 2 == 0 {
                continue;
            }
            if i > 5 {
                break;
            }
        });
        seen.push(i);
    }
    assert_eq!(seen, [1, 3, 5]);
    assert_eq!(i, 7);
    assert_held_after(&gil, 7, 7, 0);
}

// ---------------------------------------------------------------------------
// Panics
// ---------------------------------------------------------------------------

fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

#[test]
fn panic_is_caught_outside_with_the_gil_held_and_one_reacquire() {
    let gil = MockGil::new();
    let result = panic::catch_unwind(AssertUnwindSafe(|| -> u32 {
        nogil!(gil => {
            if gil.releases() == 1 {
                panic!("boom in block {}", gil.releases());
            }
            0
        })
    }));
    let payload = result.unwrap_err();
    assert_eq!(panic_message(&*payload), Some("boom in block 1"));
    assert_held_after(&gil, 1, 1, 0);
}

#[test]
fn panic_in_a_nested_block_reacquires_once() {
    let gil = MockGil::new();
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        nogil!(gil => {
            nogil!(gil => {
                assert!(gil.is_held(), "inner boom");
            });
        });
    }));
    assert_eq!(panic_message(&*result.unwrap_err()), Some("inner boom"));
    assert_held_after(&gil, 1, 1, 1);
}

// ---------------------------------------------------------------------------
// Nesting and threads that never held the GIL
// ---------------------------------------------------------------------------

#[test]
fn nested_block_releases_and_reacquires_nothing() {
    let gil = MockGil::new();
    let (inner, after_inner) = nogil!(gil => {
        let inner = nogil!(gil => {
            (gil.is_held(), gil.releases(), gil.skipped(), "inner value")
        });
        // The inner block must not have taken back the outer block's GIL.
        (inner, (gil.is_held(), gil.reacquires()))
    });
    assert_eq!(inner, (false, 1, 1, "inner value"));
    assert_eq!(after_inner, (false, 0));
    assert_held_after(&gil, 1, 1, 1);
}

#[test]
fn three_levels_of_nesting_release_once() {
    let gil = MockGil::new();
    let depth = nogil!(gil => { nogil!(gil => { nogil!(gil => { 3 }) }) });
    assert_eq!(depth, 3);
    assert_held_after(&gil, 1, 1, 2);
}

fn return_from_inner_block(gil: &MockGil, early: bool) -> &'static str {
    nogil!(gil => {
        nogil!(gil => {
            if early {
                return "from inner";
            }
        });
    });
    "fell through"
}

#[test]
fn return_from_a_nested_block_reacquires_once() {
    let gil = MockGil::new();
    assert_eq!(return_from_inner_block(&gil, true), "from inner");
    assert_held_after(&gil, 1, 1, 1);
    assert_eq!(return_from_inner_block(&gil, false), "fell through");
    assert_held_after(&gil, 2, 2, 2);
}

#[test]
fn never_held_mock_releases_and_reacquires_nothing() {
    let gil = MockGil::never_held();
    let seen_held = nogil!(gil => { gil.is_held() });
    assert!(!seen_held);
    assert_eq!((gil.releases(), gil.reacquires(), gil.skipped()), (0, 0, 1));
    assert!(!gil.is_held(), "a never-held mock became held");
    gil.done();
}

#[test]
fn never_held_mock_survives_panic_and_early_exits() {
    let gil = MockGil::never_held();
    let caught = panic::catch_unwind(AssertUnwindSafe(|| {
        nogil!(gil => { panic!("never held") });
    }));
    assert_eq!(panic_message(&*caught.unwrap_err()), Some("never held"));
    assert_eq!(first_negative_never_held(&gil), Some(0));
    assert_eq!((gil.releases(), gil.reacquires(), gil.skipped()), (0, 0, 2));
    assert!(!gil.is_held());
    gil.done();
}

fn first_negative_never_held(gil: &MockGil) -> Option<usize> {
    nogil!(gil => {
        if gil.skipped() > 0 {
            return Some(0);
        }
    });
    None
}

// ---------------------------------------------------------------------------
// Forms of OPS: it is borrowed, never moved
// ---------------------------------------------------------------------------

/// An owned backend value that forwards to a `MockGil`, so that a temporary
/// in OPS position can still be checked. It records whether the GIL was held
/// again when the temporary was dropped.
struct Forward<'a> {
    gil: &'a MockGil,
    dropped_while_held: &'a Cell<Option<bool>>,
}

// SAFETY: every call is forwarded unchanged to a `MockGil`.
unsafe impl GilOps for Forward<'_> {
    type State = <MockGil as GilOps>::State;
    type Gil = MockGil;

    unsafe fn release(&self) -> Option<Self::State> {
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { self.gil.release() }
    }

    unsafe fn reacquire(&self, state: Self::State) {
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { self.gil.reacquire(state) }
    }
}

impl Drop for Forward<'_> {
    fn drop(&mut self) {
        self.dropped_while_held.set(Some(self.gil.is_held()));
    }
}

#[test]
fn ops_as_a_value_place_is_borrowed_not_moved() {
    let gil = MockGil::new();
    let v = nogil!(gil => { 1 });
    // `gil` is still ours: it was borrowed, not moved into the guard.
    let w = nogil!(gil => { 2 });
    assert_eq!(v + w, 3);
    assert_held_after(&gil, 2, 2, 0);
}

#[test]
fn ops_as_a_reference_and_a_double_reference() {
    let gil = MockGil::new();
    let by_ref = &gil;
    let a = nogil!(by_ref => { gil.is_held() });
    let b = nogil!(&gil => { gil.is_held() });
    let c = nogil!(&&gil => { gil.is_held() });
    assert_eq!((a, b, c), (false, false, false));
    assert_held_after(by_ref, 3, 3, 0);
}

#[test]
fn ops_as_a_field_and_a_method_call() {
    struct Holder {
        gil: MockGil,
    }
    impl Holder {
        fn gil(&self) -> &MockGil {
            &self.gil
        }
    }
    let holder = Holder {
        gil: MockGil::new(),
    };
    let a = nogil!(holder.gil => { 1 });
    let b = nogil!(holder.gil() => { 2 });
    assert_eq!(a + b, 3);
    assert_held_after(&holder.gil, 2, 2, 0);
}

#[test]
fn ops_as_a_temporary_lives_until_the_gil_is_back() {
    let gil = MockGil::new();
    let dropped_while_held = Cell::new(None);
    let value = nogil!(Forward { gil: &gil, dropped_while_held: &dropped_while_held } => {
        // The temporary must still be alive inside the block.
        assert_eq!(dropped_while_held.get(), None);
        gil.is_held()
    });
    assert!(!value);
    assert_eq!(dropped_while_held.get(), Some(true));
    assert_held_after(&gil, 1, 1, 0);
}

#[test]
fn ops_as_an_owned_temporary_mock() {
    // Nothing can inspect this mock afterwards; the value proves the block ran.
    let value = nogil!(MockGil::new() => { String::from("temporary") });
    assert_eq!(value, "temporary");
    let gil = MockGil::new();
    let via_fn = nogil!(std::convert::identity(&gil) => { 7 });
    assert_eq!(via_fn, 7);
    assert_held_after(&gil, 1, 1, 0);
}

fn generic_by_value<G: GilOps>(ops: G, x: u32) -> u32 {
    nogil!(ops => { x + 1 })
}

fn generic_by_ref<G: GilOps + ?Sized>(ops: &G, x: u32) -> u32 {
    nogil!(ops => { x * 2 })
}

#[test]
fn ops_in_generic_code() {
    let gil = MockGil::new();
    assert_eq!(generic_by_value(&gil, 1), 2);
    let by_ref = &gil;
    assert_eq!(generic_by_value(by_ref, 2), 3);
    assert_eq!(generic_by_ref(&gil, 3), 6);
    assert_held_after(&gil, 3, 3, 0);
}

// ---------------------------------------------------------------------------
// hide(...)
// ---------------------------------------------------------------------------

/// Stands for a Python token.
#[derive(Debug, PartialEq)]
struct Python(u32);

#[test]
fn hide_shadows_inside_the_block_only() {
    let gil = MockGil::new();
    let py = Python(7);
    let obj = String::from("object");
    let (value, inside) = nogil!(gil, hide(py, obj) => {
        (6 * 7, [type_name_of_val(&py), type_name_of_val(&obj)])
    });
    assert_eq!(value, 42);
    assert_eq!(
        inside,
        [
            type_name::<HiddenWhileGilReleased<'_, Python>>(),
            type_name::<HiddenWhileGilReleased<'_, String>>()
        ]
    );
    // Usable again, with their own types and values.
    assert_eq!(py, Python(7));
    assert_eq!(obj, "object");
    assert_held_after(&gil, 1, 1, 0);
}

#[test]
fn hide_accepts_a_trailing_comma_and_mutable_bindings() {
    let gil = MockGil::new();
    let mut py = Python(1);
    let inside = nogil!(gil, hide(py,) => { type_name_of_val(&py) });
    assert_eq!(inside, type_name::<HiddenWhileGilReleased<'_, Python>>());
    py.0 += 1;
    assert_eq!(py, Python(2));
    assert_held_after(&gil, 1, 1, 0);
}

#[test]
fn hide_may_name_the_backend_itself() {
    // As with a `py` token that is also the backend: it is borrowed first.
    let gil = MockGil::new();
    let inside = nogil!(gil, hide(gil) => { type_name_of_val(&gil) });
    assert_eq!(inside, type_name::<HiddenWhileGilReleased<'_, MockGil>>());
    assert_held_after(&gil, 1, 1, 0);
}

fn hidden_parse(gil: &MockGil, py: &Python, text: &str) -> Result<u32, ParseIntError> {
    let n = nogil!(gil, hide(py) => { text.parse::<u32>()? });
    Ok(n + py.0)
}

#[test]
fn hide_keeps_every_exit_path() {
    let gil = MockGil::new();
    let py = Python(100);
    assert_eq!(hidden_parse(&gil, &py, "5"), Ok(105));
    assert!(hidden_parse(&gil, &py, "five").is_err());
    let caught = panic::catch_unwind(AssertUnwindSafe(|| {
        nogil!(gil, hide(py) => { panic!("hidden boom") });
    }));
    assert_eq!(panic_message(&*caught.unwrap_err()), Some("hidden boom"));
    assert_eq!(py, Python(100));
    assert_held_after(&gil, 3, 3, 0);
}

// ---------------------------------------------------------------------------
// In unsafe contexts: no warning (the lints are denied here so that a
// regression fails to compile instead of only warning)
// ---------------------------------------------------------------------------

/// Adds one; `unsafe` only so that there is a real unsafe operation to call.
///
/// # Safety
///
/// None: any `x` below `u32::MAX` is fine.
unsafe fn add_one(x: u32) -> u32 {
    x + 1
}

/// Runs a `nogil!` block in the body of an `unsafe fn`.
///
/// # Safety
///
/// None; `unsafe` only to put the macro inside an `unsafe fn`.
#[deny(warnings, unsafe_op_in_unsafe_fn, unused_unsafe)]
unsafe fn block_in_unsafe_fn(gil: &MockGil) -> u32 {
    nogil!(gil => { 41 }) + 1
}

#[test]
#[deny(warnings, unused_unsafe)]
fn nogil_in_an_unsafe_fn_compiles_cleanly() {
    let gil = MockGil::new();
    // SAFETY: `block_in_unsafe_fn` has no precondition.
    let value = unsafe { block_in_unsafe_fn(&gil) };
    assert_eq!(value, 42);
    assert_held_after(&gil, 1, 1, 0);
}

#[test]
#[deny(warnings, unused_unsafe)]
fn nogil_in_an_unsafe_block_compiles_cleanly() {
    let gil = MockGil::new();
    // SAFETY: `add_one` has no precondition below `u32::MAX`.
    let value = unsafe { add_one(nogil!(gil => { add_one(40) })) };
    assert_eq!(value, 42);
    // Hidden names work there too.
    let py = Python(2);
    // SAFETY: as above.
    let hidden =
        unsafe { nogil!(gil, hide(py) => { add_one(type_name_of_val(&py).len() as u32) }) };
    assert_eq!(
        hidden,
        type_name::<HiddenWhileGilReleased<'_, Python>>().len() as u32 + 1
    );
    assert_eq!(py, Python(2));
    assert_held_after(&gil, 2, 2, 0);
}

// ---------------------------------------------------------------------------
// Guard, used directly
// ---------------------------------------------------------------------------

#[test]
fn guard_releases_on_creation_and_reacquires_on_drop() {
    let gil = MockGil::new();
    // SAFETY: the guard is dropped below, on this thread.
    let guard = unsafe { release(&gil) };
    assert!(released(&guard));
    assert!(!gil.is_held());
    assert_eq!(format!("{guard:?}"), "Guard { released: true }");
    assert_eq!((gil.releases(), gil.reacquires()), (1, 0));
    drop(guard);
    assert_held_after(&gil, 1, 1, 0);
}

#[test]
fn nested_guard_releases_nothing_and_its_drop_reacquires_nothing() {
    let gil = MockGil::new();
    let by_ref = &gil;
    // SAFETY: both guards are dropped below, on this thread.
    let outer = unsafe { release(&gil) };
    // SAFETY: as above.
    let inner = unsafe { release(&by_ref) };
    assert!(released(&outer));
    assert!(!released(&inner));
    assert_eq!(format!("{inner:?}"), "Guard { released: false }");
    drop(inner);
    assert!(!gil.is_held(), "the inner guard took the GIL back");
    assert_eq!(gil.reacquires(), 0);
    drop(outer);
    assert_held_after(&gil, 1, 1, 1);
}

#[test]
fn guard_on_a_never_held_mock_released_nothing() {
    let gil = MockGil::never_held();
    // SAFETY: the guard is dropped below, on this thread.
    let guard = unsafe { release(&gil) };
    assert!(!released(&guard));
    drop(guard);
    assert_eq!((gil.releases(), gil.reacquires(), gil.skipped()), (0, 0, 1));
    assert!(!gil.is_held());
    gil.done();
}

#[test]
fn guard_may_own_its_backend() {
    let gil = MockGil::new();
    let dropped_while_held = Cell::new(None);
    let forward = Forward {
        gil: &gil,
        dropped_while_held: &dropped_while_held,
    };
    // SAFETY: the guard is dropped below, on this thread.
    let guard = unsafe { release(forward) };
    assert!(released(&guard));
    drop(guard);
    // The guard reacquired before it dropped the backend it owned.
    assert_eq!(dropped_while_held.get(), Some(true));
    assert_held_after(&gil, 1, 1, 0);
}

// ---------------------------------------------------------------------------
// MockGil, used through GilOps by hand
//
// MockGil's methods are memory-safe whatever the order of calls: a breach of
// the protocol panics and touches nothing else. That is the SAFETY argument
// for the unsafe blocks below, which break the protocol on purpose.
// ---------------------------------------------------------------------------

#[test]
fn manual_protocol_counts_and_numbers_releases() {
    let gil = MockGil::new();
    assert_eq!(
        format!("{gil:?}"),
        "MockGil { held: true, releases: 0, reacquires: 0, skipped: 0, signal_checks: 0 }"
    );
    // SAFETY: MockGil is memory-safe under any call order (see above).
    unsafe {
        let first = gil.release().expect("held, so the first release releases");
        assert_eq!(first.serial(), 1);
        assert!(gil.release().is_none(), "a second release released again");
        gil.reacquire(first);
        let second = gil.release().expect("held again, so this releases");
        assert_eq!(second.serial(), 2);
        gil.reacquire(second);
    }
    assert_eq!(
        format!("{gil:?}"),
        "MockGil { held: true, releases: 2, reacquires: 2, skipped: 1, signal_checks: 0 }"
    );
    assert_held_after(&gil, 2, 2, 1);
}

#[test]
#[should_panic(
    expected = "MockGil: reacquire without a release: the GIL is already held (state of release #1)"
)]
fn mock_rejects_a_reacquire_without_a_release() {
    let gil = MockGil::new();
    // SAFETY: MockGil is memory-safe under any call order (see above).
    unsafe {
        let state = gil.release().unwrap();
        gil.reacquire(state.clone());
        assert_eq!((gil.releases(), gil.reacquires()), (1, 1));
        gil.reacquire(state);
    }
}

#[test]
#[should_panic(
    expected = "MockGil: reacquire with a wrong state: it comes from another MockGil \
                           (release #1 there; release #1 is outstanding here)"
)]
fn mock_rejects_a_state_from_another_mock() {
    let (a, b) = (MockGil::new(), MockGil::new());
    // SAFETY: MockGil is memory-safe under any call order (see above).
    unsafe {
        let _from_a = a.release().unwrap();
        let from_b = b.release().unwrap();
        a.reacquire(from_b);
    }
}

#[test]
#[should_panic(
    expected = "MockGil: reacquire with a wrong state: it is from release #1, \
                           but release #2 is the one outstanding"
)]
fn mock_rejects_a_stale_state() {
    let gil = MockGil::new();
    // SAFETY: MockGil is memory-safe under any call order (see above).
    unsafe {
        let first = gil.release().unwrap();
        gil.reacquire(first.clone());
        let _second = gil.release().unwrap();
        gil.reacquire(first);
    }
}

#[test]
#[should_panic(
    expected = "MockGil: reacquire without a release: this thread never held the GIL \
                           (state of release #1)"
)]
fn mock_rejects_a_reacquire_on_a_never_held_mock() {
    let (held, never) = (MockGil::new(), MockGil::never_held());
    // SAFETY: MockGil is memory-safe under any call order (see above).
    unsafe {
        assert!(never.release().is_none());
        let state = held.release().unwrap();
        never.reacquire(state);
    }
}

#[test]
#[should_panic(
    expected = "MockGil: the GIL is still released (release #1 was never reacquired; \
                           1 releases, 0 reacquires)"
)]
fn mock_done_rejects_an_outstanding_release() {
    let gil = MockGil::new();
    // SAFETY: MockGil is memory-safe under any call order (see above).
    let _state = unsafe { gil.release() }.unwrap();
    gil.done();
}

/// Naming a binding in `hide` counts as using it: a handle that is used
/// nowhere else draws no `unused_variables` warning (CI denies warnings).
#[test]
#[deny(unused_variables)]
fn hide_counts_as_a_use_of_the_binding() {
    let gil = MockGil::new();
    let py = "a handle used nowhere else";
    let value = nogil!(gil, hide(py) => { 7 });
    assert_eq!(value, 7);
    assert_held_after(&gil, 1, 1, 0);
}

/// `ReleaseIf` releases only when asked to: the run-time choice behind a
/// `release=False` keyword.
#[test]
fn a_release_if_backend_releases_only_when_asked() {
    let gil = MockGil::new();
    for release in [true, false, true] {
        let ops = ReleaseIf::new(&gil, release);
        let inside = nogil!(ops => { gil.is_held() });
        assert_eq!(inside, !release, "release={release}");
    }
    assert_held_after(&gil, 2, 2, 0);
}
