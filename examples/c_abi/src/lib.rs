#![doc = include_str!("../README.md")]
#![deny(missing_docs, missing_debug_implementations)]
// The exported functions are declared, and documented for C callers, in
// `nuwa_c_abi.h`; keep the two in step.

use core::ffi::{c_char, c_int};
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::AtomicU8;
use std::time::Duration;

mod counted;
mod work;

/// Success.
pub const NUWA_OK: c_int = 0;
/// `nuwa_early_return` left its block early with `return`.
pub const NUWA_STOPPED_EARLY: c_int = 1;
/// A required pointer was null.
pub const NUWA_ERR_NULL: c_int = -1;
/// A panic was caught (and the GIL is held again, if it was held before).
pub const NUWA_ERR_PANIC: c_int = -2;
/// `nuwa_checked_power` overflowed and left its block with `?`.
pub const NUWA_ERR_OVERFLOW: c_int = -3;
/// A promise of nuwa was broken: a block released the GIL where nothing
/// should have been released, or the GIL was not held again after a panic.
pub const NUWA_ERR_BREACH: c_int = -4;
/// No thread could be started.
pub const NUWA_ERR_THREAD: c_int = -5;
/// An argument is out of range.
pub const NUWA_ERR_ARG: c_int = -6;

/// Runs the body of an exported function: a panic that gets this far is
/// returned as [`NUWA_ERR_PANIC`] instead of unwinding into C.
fn edge(body: impl FnOnce() -> c_int) -> c_int {
    edge_or(NUWA_ERR_PANIC, body)
}

/// [`edge`], for functions that return something else than a status.
fn edge_or<T>(on_panic: T, body: impl FnOnce() -> T) -> T {
    // The payloads of this library's panics are strings, whose `drop` does
    // not panic.
    panic::catch_unwind(AssertUnwindSafe(body)).unwrap_or(on_panic)
}

/// Writes `value` to `out` and returns [`NUWA_OK`], or returns the error.
///
/// # Safety
///
/// `out` is valid for writes of a `T` and aligned.
unsafe fn write_result<T>(out: *mut T, value: Result<T, c_int>) -> c_int {
    match value {
        Ok(value) => {
            // SAFETY: the caller's contract.
            unsafe { out.write(value) };
            NUWA_OK
        }
        Err(status) => status,
    }
}

fn timeout(ms: u32) -> Duration {
    Duration::from_millis(u64::from(ms))
}

/// Sets `*out` to the sum of the squares of `data[0..len]`, added in order,
/// computed with the GIL released.
///
/// Returns `NUWA_OK`, or `NUWA_ERR_NULL` if `out` is null, or `data` is null
/// while `len > 0`.
///
/// # Safety
///
/// `data` points to `len` readable `double`s (or `len` is 0), and `out` to a
/// writable `double`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nuwa_sum_of_squares(data: *const f64, len: usize, out: *mut f64) -> c_int {
    edge(|| {
        if out.is_null() || (data.is_null() && len > 0) {
            return NUWA_ERR_NULL;
        }
        let data: &[f64] = if len == 0 {
            &[]
        } else {
            // SAFETY: the caller's contract; `data` is not null.
            unsafe { std::slice::from_raw_parts(data, len) }
        };
        let total = work::sum_of_squares(data);
        // SAFETY: the caller's contract; `out` is not null.
        unsafe { write_result(out, Ok(total)) }
    })
}

/// Returns 1 if CPython's GIL functions were found in the process, else 0.
#[unsafe(no_mangle)]
pub extern "C" fn nuwa_python_found() -> c_int {
    edge(|| c_int::from(nuwa_ffi::init().python_found()))
}

/// Returns 1 if blocks can release the GIL here (Python found, with a way to
/// tell whether a thread holds the GIL), else 0.
#[unsafe(no_mangle)]
pub extern "C" fn nuwa_can_release() -> c_int {
    edge(|| c_int::from(nuwa_ffi::init().can_release()))
}

/// Writes the one-line description of what `nuwa_ffi::init()` found into
/// `buf`, truncated to `len - 1` bytes and NUL-terminated (as `snprintf`).
///
/// Returns the length of the whole text, without the NUL: if it is `len` or
/// more, the text was truncated. `buf` may be null if `len` is 0.
///
/// # Safety
///
/// `buf` points to `len` writable bytes, or `len` is 0.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nuwa_describe(buf: *mut c_char, len: usize) -> usize {
    edge_or(0, || {
        let text = nuwa_ffi::init().to_string();
        if !buf.is_null() && len > 0 {
            let n = text.len().min(len - 1);
            // SAFETY: the caller's contract: `buf` has room for `len` bytes,
            // and `n + 1 <= len`; the text is a separate allocation.
            unsafe {
                ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
                buf.add(n).write(0);
            }
        }
        text.len()
    })
}

/// Writes the process-wide counts of GIL releases made by this library's
/// blocks and of the reacquires that completed. Either pointer may be null.
///
/// When no block is running, the two are equal. Returns `NUWA_OK`.
///
/// # Safety
///
/// Each pointer is null or points to a writable `uint64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nuwa_counters(releases: *mut u64, reacquires: *mut u64) -> c_int {
    edge(|| {
        let (r, a) = counted::counters();
        // SAFETY: the caller's contract; null pointers are skipped.
        unsafe {
            if !releases.is_null() {
                releases.write(r);
            }
            if !reacquires.is_null() {
                reacquires.write(a);
            }
        }
        NUWA_OK
    })
}

/// Sets `*flag` to 1 with an atomic store, for a thread in
/// `nuwa_wait_for_flag` to see. Returns `NUWA_OK` or `NUWA_ERR_NULL`.
///
/// # Safety
///
/// `flag` is null or points to a writable byte that, while any call of this
/// library uses it, is read and written only through this library.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nuwa_set_flag(flag: *mut u8) -> c_int {
    edge(|| {
        if flag.is_null() {
            return NUWA_ERR_NULL;
        }
        // SAFETY: the caller's contract: valid, and accessed atomically while
        // shared (`u8` has no alignment requirement).
        let flag = unsafe { AtomicU8::from_ptr(flag) };
        flag.store(1, std::sync::atomic::Ordering::Release);
        NUWA_OK
    })
}

/// Returns how many threads are inside `nuwa_wait_for_flag` (counted once
/// its block has released the GIL) or `nuwa_wait_for_flag_holding`.
#[unsafe(no_mangle)]
pub extern "C" fn nuwa_waiters() -> u32 {
    edge_or(u32::MAX, work::waiters)
}

/// Waits inside a block, with the GIL released, until `*flag` is not zero
/// or `timeout_ms` milliseconds have passed. One release.
///
/// Returns 1 if the flag was seen, 0 on timeout, `NUWA_ERR_NULL`.
///
/// # Safety
///
/// `flag` is null or points to a byte that stays valid during the call and
/// is written only with `nuwa_set_flag` (or another atomic store) meanwhile.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nuwa_wait_for_flag(flag: *const u8, timeout_ms: u32) -> c_int {
    edge(|| {
        if flag.is_null() {
            return NUWA_ERR_NULL;
        }
        // SAFETY: the caller's contract; only loads are made through it.
        let flag = unsafe { AtomicU8::from_ptr(flag.cast_mut()) };
        c_int::from(work::wait_for_flag(flag, timeout(timeout_ms)))
    })
}

/// `nuwa_wait_for_flag` without a block: the GIL stays held, so no other
/// Python thread can run meanwhile. The negative control of the GIL tests.
///
/// # Safety
///
/// As for `nuwa_wait_for_flag`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nuwa_wait_for_flag_holding(flag: *const u8, timeout_ms: u32) -> c_int {
    edge(|| {
        if flag.is_null() {
            return NUWA_ERR_NULL;
        }
        // SAFETY: the caller's contract; only loads are made through it.
        let flag = unsafe { AtomicU8::from_ptr(flag.cast_mut()) };
        c_int::from(work::wait_for_flag_holding(flag, timeout(timeout_ms)))
    })
}

/// A long block: `*out = sum(i * i for i in range(n)) mod 2**64`, computed
/// by a loop with the GIL released. One release. Returns `NUWA_OK` or
/// `NUWA_ERR_NULL`.
///
/// # Safety
///
/// `out` is null or points to a writable `uint64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nuwa_spin_sum(n: u64, out: *mut u64) -> c_int {
    edge(|| {
        if out.is_null() {
            return NUWA_ERR_NULL;
        }
        // SAFETY: the caller's contract; `out` is not null.
        unsafe { write_result(out, Ok(work::spin_sum_block(n))) }
    })
}

/// An empty block, then `*out = x`. One release.
///
/// # Safety
///
/// `out` is null or points to a writable `uint64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nuwa_empty_block(x: u64, out: *mut u64) -> c_int {
    edge(|| {
        if out.is_null() {
            return NUWA_ERR_NULL;
        }
        work::empty_block();
        // SAFETY: the caller's contract; `out` is not null.
        unsafe { write_result(out, Ok(x)) }
    })
}

/// Blocks nested three deep: `*out = spin_sum(n) + 3 n mod 2**64`. Only the
/// outer block releases: one release. `NUWA_ERR_BREACH` if an inner one did.
///
/// # Safety
///
/// `out` is null or points to a writable `uint64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nuwa_nested_blocks(n: u64, out: *mut u64) -> c_int {
    edge(|| {
        if out.is_null() {
            return NUWA_ERR_NULL;
        }
        // SAFETY: the caller's contract; `out` is not null.
        unsafe { write_result(out, work::nested_blocks(n)) }
    })
}

/// Sums `0, 1, ..., n - 1` in a block and leaves it with `return` on
/// reaching `stop`. One release.
///
/// Returns `NUWA_STOPPED_EARLY` with `*out = sum(range(stop))` if
/// `stop < n`, else `NUWA_OK` with `*out = sum(range(n))`.
///
/// # Safety
///
/// `out` is null or points to a writable `uint64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nuwa_early_return(n: u64, stop: u64, out: *mut u64) -> c_int {
    edge(|| {
        if out.is_null() {
            return NUWA_ERR_NULL;
        }
        let (status, sum) = work::sum_until(n, stop);
        // SAFETY: the caller's contract; `out` is not null.
        unsafe { out.write(sum) };
        status
    })
}

/// `*out = base ** exp`, computed in a block that it leaves with `?` on
/// overflow. One release. Returns `NUWA_OK` or `NUWA_ERR_OVERFLOW` (`*out`
/// untouched).
///
/// # Safety
///
/// `out` is null or points to a writable `uint64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nuwa_checked_power(base: u64, exp: u32, out: *mut u64) -> c_int {
    edge(|| {
        if out.is_null() {
            return NUWA_ERR_NULL;
        }
        // SAFETY: the caller's contract; `out` is not null.
        unsafe { write_result(out, work::checked_power(base, exp)) }
    })
}

/// Panics inside a block, after sleeping `delay_ms` in it, and catches the
/// panic; `site` 0: a `nogil!` block, 1: the strict form under
/// `Panicked::catch`, 2: the inner one of two nested blocks. Three releases
/// (a probe before, the block, a probe after).
///
/// Returns `NUWA_ERR_PANIC` if the panic was caught and the GIL is held
/// again as before, `NUWA_ERR_BREACH` if not, `NUWA_ERR_ARG` if `site > 2`.
#[unsafe(no_mangle)]
pub extern "C" fn nuwa_panic_in_block(site: u32, delay_ms: u32) -> c_int {
    edge(|| work::panic_in_block(site, timeout(delay_ms)))
}

/// Starts a Rust thread (no Python thread state), which runs blocks (long,
/// nested, early `return`, and, if `panic_in_thread`, one that panics), and
/// joins it inside a block. One release, on the calling thread.
///
/// Returns `NUWA_OK` with `*out = spin_sum(n) + n + sum(range(n // 2))`
/// mod 2**64, or `NUWA_ERR_PANIC`, `NUWA_ERR_BREACH` (a block on the new
/// thread released something), `NUWA_ERR_THREAD`.
///
/// # Safety
///
/// `out` is null or points to a writable `uint64_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nuwa_blocks_in_rust_thread(
    n: u64,
    panic_in_thread: c_int,
    out: *mut u64,
) -> c_int {
    edge(|| {
        if out.is_null() {
            return NUWA_ERR_NULL;
        }
        let value = work::blocks_in_rust_thread(n, panic_in_thread != 0);
        // SAFETY: the caller's contract; `out` is not null.
        unsafe { write_result(out, value) }
    })
}

/// Starts (and ends) a block; returns 1 if it released the GIL, else 0.
/// One release if this thread holds the GIL.
#[unsafe(no_mangle)]
pub extern "C" fn nuwa_probe_release() -> c_int {
    edge(|| c_int::from(counted::probe()))
}

/// Sleeps `delay_ms` milliseconds (not in a block), then does what
/// `nuwa_probe_release` does.
///
/// Called through `ctypes.CDLL`, which releases the GIL around the call, the
/// sleep lets another Python thread take the GIL, so the probe runs on a
/// Python thread that does not hold the GIL while another one does.
#[unsafe(no_mangle)]
pub extern "C" fn nuwa_probe_release_after(delay_ms: u32) -> c_int {
    edge(|| {
        std::thread::sleep(timeout(delay_ms));
        c_int::from(counted::probe())
    })
}

/// `nuwa_probe_release` on a new Rust thread, joined: 0 unless nuwa
/// releases a GIL that thread does not hold. `NUWA_ERR_THREAD` if no thread
/// could be started.
#[unsafe(no_mangle)]
pub extern "C" fn nuwa_probe_release_in_rust_thread() -> c_int {
    edge(|| work::probe_in_rust_thread().map_or_else(|status| status, c_int::from))
}

/// Starts a block and one nested in it; returns bit 0 set if the outer one
/// released the GIL, bit 1 set if the inner one did (never, if nuwa keeps its
/// promise). One release if this thread holds the GIL.
#[unsafe(no_mangle)]
pub extern "C" fn nuwa_probe_nested() -> c_int {
    edge(|| {
        let (outer, inner) = work::probe_nested();
        c_int::from(outer) | (c_int::from(inner) << 1)
    })
}
