//! Proves that `nuwa-core` (the `nogil!` macro, `Guard` and `MockGil`) builds
//! and links into a `#![no_std]` crate with its own panic handler: nothing in
//! it needs std.

#![no_std]

use core::panic::PanicInfo;

use nuwa_core::mock::MockGil;
use nuwa_core::nogil;

/// What [`nuwa_no_std_check`] computed, and the mock's counters afterwards.
#[repr(C)]
#[derive(Debug)]
pub struct CheckResult {
    /// The value of the `nogil!` block.
    pub value: u32,
    /// Releases counted by the mock.
    pub releases: usize,
    /// Reacquires counted by the mock.
    pub reacquires: usize,
    /// Nested releases that released nothing.
    pub skipped: usize,
    /// Whether the mock held the GIL again at the end.
    pub held: bool,
}

/// Runs a `nogil!` block (with a nested one) over `MockGil` and returns the
/// block's value and the counters, so that the code is really compiled in.
#[unsafe(no_mangle)]
pub extern "C" fn nuwa_no_std_check(x: u32) -> CheckResult {
    let gil = MockGil::new();
    let value = nogil!(gil => {
        let doubled = nogil!(gil => { x.wrapping_mul(2) });
        doubled.wrapping_add(1)
    });
    gil.done();
    CheckResult {
        value,
        releases: gil.releases(),
        reacquires: gil.reacquires(),
        skipped: gil.skipped(),
        held: gil.is_held(),
    }
}

#[panic_handler]
fn panic(_info: &PanicInfo<'_>) -> ! {
    loop {}
}
