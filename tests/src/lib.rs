//! Cross-crate tests of nuwa. The tests live in `tests/tests/` and `tests/ui/`;
//! this library holds their shared helpers, and compiles the examples of the
//! repository's README as doctests (below).
#![doc = ""]
#![doc = include_str!("../../README.md")]

use nuwa_core::mock::MockGil;

/// Asserts that `gil` holds the GIL again, is balanced (its
/// [`done`](MockGil::done) check passes), and has exactly these counters.
///
/// # Panics
///
/// If any of those checks fails; the message names the counter and the place
/// of the call.
#[track_caller]
pub fn assert_held_after(gil: &MockGil, releases: usize, reacquires: usize, skipped: usize) {
    assert!(gil.is_held(), "the GIL is not held again: {gil:?}");
    gil.done();
    assert_eq!(
        (gil.releases(), gil.reacquires(), gil.skipped()),
        (releases, reacquires, skipped),
        "(releases, reacquires, skipped) of {gil:?}"
    );
}
