//! What the exported functions do, in safe Rust: every block is a
//! `nogil!(Counted => { ... })`, so every release and reacquire is counted.
//!
//! The comments say how many times each function releases the GIL when
//! called on a thread that holds it; the tests check those numbers exactly.

use core::ffi::c_int;
use std::hint::black_box;
use std::panic;
use std::sync::Once;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nuwa_ffi::{Nogil, Panicked, nogil};

use crate::counted::{Counted, probe};
use crate::{
    NUWA_ERR_ARG, NUWA_ERR_BREACH, NUWA_ERR_OVERFLOW, NUWA_ERR_PANIC, NUWA_ERR_THREAD, NUWA_OK,
    NUWA_STOPPED_EARLY,
};

/// The message of every panic this library raises on purpose. The panic hook
/// stays quiet for these (thousands of them in the torture test), and only
/// for these.
const DELIBERATE: &str = "nuwa-c-abi: deliberate panic in a block";

/// How often a flag is polled.
const POLL: Duration = Duration::from_micros(100);

/// How many threads are inside a flag wait right now.
static WAITERS: AtomicU32 = AtomicU32::new(0);

/// `sum(i * i for i in range(n))`, wrapping at 2**64, the long way round.
fn spin_sum(n: u64) -> u64 {
    let mut acc = 0u64;
    for i in 0..n {
        // `black_box` keeps the loop a loop: no closed form, real work.
        let i = black_box(i);
        acc = acc.wrapping_add(i.wrapping_mul(i));
    }
    acc
}

/// The sum of the squares, in order (`acc += x * x`). One release.
pub(crate) fn sum_of_squares(data: &[f64]) -> f64 {
    nogil!(Counted => {
        data.iter().map(|x| x * x).sum()
    })
}

/// A long block: [`spin_sum`]. One release.
pub(crate) fn spin_sum_block(n: u64) -> u64 {
    nogil!(Counted => { spin_sum(n) })
}

/// An empty block. One release.
pub(crate) fn empty_block() {
    nogil!(Counted => {});
}

/// Blocks nested three deep; only the outermost releases. One release.
///
/// Returns `spin_sum(n) + 3 n` (wrapping), or [`NUWA_ERR_BREACH`] if a
/// block inside the outer one released anything.
pub(crate) fn nested_blocks(n: u64) -> Result<u64, c_int> {
    nogil!(Counted => {
        if probe() {
            // `return` from inside a block, with the GIL taken back first.
            return Err(NUWA_ERR_BREACH);
        }
        let a = nogil!(Counted => { spin_sum(n) });
        let b = nogil!(Counted => { nogil!(Counted => { n.wrapping_mul(3) }) });
        Ok(a.wrapping_add(b))
    })
}

/// Sums `0..n`, leaving the block with `return` when it reaches `stop`.
/// One release.
///
/// Returns `(NUWA_STOPPED_EARLY, sum(range(stop)))` if `stop < n`, else
/// `(NUWA_OK, sum(range(n)))`.
pub(crate) fn sum_until(n: u64, stop: u64) -> (c_int, u64) {
    nogil!(Counted => {
        let mut acc = 0u64;
        for i in 0..n {
            if i == stop {
                return (NUWA_STOPPED_EARLY, acc);
            }
            acc = acc.wrapping_add(black_box(i));
        }
        (NUWA_OK, acc)
    })
}

/// `base ** exp`, leaving the block with `?` on overflow. One release.
pub(crate) fn checked_power(base: u64, exp: u32) -> Result<u64, c_int> {
    nogil!(Counted => {
        let mut acc: u64 = 1;
        for _ in 0..exp {
            acc = black_box(acc).checked_mul(base).ok_or(NUWA_ERR_OVERFLOW)?;
        }
        Ok(acc)
    })
}

/// Panics inside a block, after sleeping `delay` in it, and catches the
/// panic. Three releases: a probe, the block, and a probe after the catch.
///
/// `site` 0: a `nogil!` block under `catch_unwind`; 1: the strict form
/// under `Panicked::catch`; 2: the inner block of two nested ones.
///
/// Returns [`NUWA_ERR_PANIC`] if the panic was caught and this thread holds
/// the GIL again exactly as before the block (checked with the probes),
/// [`NUWA_ERR_BREACH`] otherwise, [`NUWA_ERR_ARG`] for another `site`.
pub(crate) fn panic_in_block(site: u32, delay: Duration) -> c_int {
    if site > 2 {
        return NUWA_ERR_ARG;
    }
    quiet_deliberate_panics();
    let held_before = probe();
    let caught = match site {
        0 => panic::catch_unwind(|| {
            nogil!(Counted => {
                thread::sleep(delay);
                deliberate_panic()
            })
        })
        .is_err(),
        1 => Panicked::catch(|| {
            Counted.nogil(|_| -> () {
                thread::sleep(delay);
                deliberate_panic()
            })
        })
        .is_err(),
        _ => panic::catch_unwind(|| {
            nogil!(Counted => {
                nogil!(Counted => {
                    thread::sleep(delay);
                    deliberate_panic()
                })
            })
        })
        .is_err(),
    };
    let held_after = probe();
    if caught && held_after == held_before {
        NUWA_ERR_PANIC
    } else {
        NUWA_ERR_BREACH
    }
}

/// Runs blocks on a new Rust thread (no Python thread state) and joins it,
/// inside a block on the calling thread. One release, on the calling thread.
///
/// Returns `spin_sum(n) + n + sum(range(n // 2))` (wrapping), computed on
/// the new thread; [`NUWA_ERR_PANIC`] if `panic_in_thread` (the new
/// thread's block panics); [`NUWA_ERR_BREACH`] if a block on the new thread
/// released anything; [`NUWA_ERR_THREAD`] if no thread could be started.
pub(crate) fn blocks_in_rust_thread(n: u64, panic_in_thread: bool) -> Result<u64, c_int> {
    if panic_in_thread {
        quiet_deliberate_panics();
    }
    let joined = nogil!(Counted => {
        let spawned = thread::Builder::new()
            .name("nuwa-c-abi-worker".into())
            .spawn(move || -> Result<u64, c_int> {
                // This thread has no Python thread state: none of these
                // blocks may release anything.
                if probe() {
                    return Err(NUWA_ERR_BREACH);
                }
                let a = spin_sum_block(n);
                let b = nogil!(Counted => { nogil!(Counted => { n }) });
                let (_, c) = sum_until(n, n / 2);
                if panic_in_thread {
                    nogil!(Counted => { deliberate_panic() })
                }
                Ok(a.wrapping_add(b).wrapping_add(c))
            });
        match spawned {
            Ok(handle) => handle.join(),
            Err(_) => return Err(NUWA_ERR_THREAD),
        }
    });
    joined.unwrap_or(Err(NUWA_ERR_PANIC))
}

/// Whether a block on a new Rust thread (no Python thread state) releases
/// anything. No release if nuwa keeps its promise.
pub(crate) fn probe_in_rust_thread() -> Result<bool, c_int> {
    match thread::Builder::new().spawn(probe) {
        Ok(handle) => handle.join().map_err(|_| NUWA_ERR_PANIC),
        Err(_) => Err(NUWA_ERR_THREAD),
    }
}

/// Whether an outer block released (`.0`) and a block nested in it
/// released (`.1`). One release on a thread that holds the GIL.
pub(crate) fn probe_nested() -> (bool, bool) {
    // SAFETY: the guard lives until the end of this function and is dropped
    // there, on this thread.
    let outer = unsafe { nuwa_ffi::nuwa_core::__private::release(Counted) };
    let inner = probe();
    (nuwa_ffi::nuwa_core::__private::released(&outer), inner)
}

/// Waits, inside a block, until `flag` is not zero or `timeout` has passed.
/// One release. Returns whether the flag was seen.
pub(crate) fn wait_for_flag(flag: &AtomicU8, timeout: Duration) -> bool {
    nogil!(Counted => { poll_flag(flag, timeout) })
}

/// [`wait_for_flag`] without the block: the thread keeps the GIL. No release.
pub(crate) fn wait_for_flag_holding(flag: &AtomicU8, timeout: Duration) -> bool {
    poll_flag(flag, timeout)
}

/// How many threads are inside [`wait_for_flag`] or
/// [`wait_for_flag_holding`] (counted from after the block's release).
pub(crate) fn waiters() -> u32 {
    WAITERS.load(Ordering::SeqCst)
}

/// One thread in [`WAITERS`] for as long as it lives.
struct Waiting;

impl Waiting {
    fn enter() -> Self {
        WAITERS.fetch_add(1, Ordering::SeqCst);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITERS.fetch_sub(1, Ordering::SeqCst);
    }
}

fn poll_flag(flag: &AtomicU8, timeout: Duration) -> bool {
    let _waiting = Waiting::enter();
    let start = Instant::now();
    loop {
        if flag.load(Ordering::Acquire) != 0 {
            return true;
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return false;
        }
        thread::sleep((timeout - elapsed).min(POLL));
    }
}

fn deliberate_panic() -> ! {
    panic!("nuwa-c-abi: deliberate panic in a block")
}

/// Installs (once) a panic hook that prints nothing for the deliberate
/// panics and hands every other panic to the hook it replaces.
///
/// The hook belongs to this library's copy of the standard library, so the
/// host program's own panics are not affected.
fn quiet_deliberate_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
            if message != Some(DELIBERATE) {
                previous(info);
            }
        }));
    });
}
