//! nuwa blocks behind a C ABI, for the embedding scenarios of
//! `nuwa-ffi/tests/real_python` (see `../README.md`).
//!
//! The runner links this static library (a) with `-lpython3.X` into a shared
//! plugin whose `NEEDED` names libpython, loaded by a host that opened
//! libpython `RTLD_LOCAL`, and (b) with `libpython3.X.a` into a host program
//! that exports no Python symbol. Release is proved with two pipes: the
//! block writes to `entered`, and waits (bounded) until `done` is readable,
//! which a Python thread writes to only after it ran `gc.collect()`, so only
//! while this block has released the GIL.

#![deny(missing_docs)]

use core::ffi::{c_char, c_int, c_void};
use std::panic::{self, AssertUnwindSafe};

use nuwa_ffi::__private::{Details, Via};
use nuwa_ffi::CPython;
use nuwa_ffi::embed::{EmbeddedPython, provide};
use nuwa_ffi::nuwa_core::__private::{release, released};

/// The block saw `done` within the timeout.
pub const DONE: c_int = 1;
/// The block released the GIL (its guard reports a release).
pub const RELEASED: c_int = 2;
/// A system call failed, or a panic was caught.
pub const ERROR: c_int = -1;

/// Writes one byte to `entered`, then waits up to `timeout_ms` for `done`
/// to become readable and reads one byte from it.
fn enter_and_wait(entered: c_int, done: c_int, timeout_ms: c_int) -> Result<bool, ()> {
    let byte = *b"e";
    // SAFETY: a one-byte buffer that lives for the call.
    if unsafe { libc::write(entered, byte.as_ptr().cast(), 1) } != 1 {
        return Err(());
    }
    let mut fds = libc::pollfd {
        fd: done,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid `pollfd`.
    let n = unsafe { libc::poll(&mut fds, 1, timeout_ms) };
    if n < 0 {
        return Err(());
    }
    if n == 0 {
        return Ok(false);
    }
    let mut got = [0u8];
    // SAFETY: a one-byte buffer that lives for the call.
    let read = unsafe { libc::read(done, got.as_mut_ptr().cast(), 1) };
    Ok(read == 1)
}

/// Runs a nuwa block (the CPython backend) that writes to `entered` and
/// waits up to `timeout_ms` for `done`. Returns [`DONE`] | [`RELEASED`]
/// bits, or [`ERROR`].
#[unsafe(no_mangle)]
pub extern "C" fn nuwa_testlib_block_wait(entered: c_int, done: c_int, timeout_ms: c_int) -> c_int {
    panic::catch_unwind(|| {
        // SAFETY: the guard is dropped at the end of this closure, on this
        // thread.
        let guard = unsafe { release(CPython) };
        let released = released(&guard);
        let seen = enter_and_wait(entered, done, timeout_ms);
        drop(guard);
        match seen {
            Ok(seen) => c_int::from(seen) * DONE + c_int::from(released) * RELEASED,
            Err(()) => ERROR,
        }
    })
    .unwrap_or(ERROR)
}

/// The control: the same wait without a block (the GIL stays held), so
/// `done` cannot come unless something else released the GIL.
#[unsafe(no_mangle)]
pub extern "C" fn nuwa_testlib_wait_holding(
    entered: c_int,
    done: c_int,
    timeout_ms: c_int,
) -> c_int {
    match enter_and_wait(entered, done, timeout_ms) {
        Ok(seen) => c_int::from(seen) * DONE,
        Err(()) => ERROR,
    }
}

/// Copies `text` into `buf` like `snprintf`; returns its full length.
///
/// # Safety
///
/// `buf` points to `len` writable bytes, or `len` is 0.
unsafe fn write_text(text: &str, buf: *mut c_char, len: usize) -> usize {
    if !buf.is_null() && len > 0 {
        let n = text.len().min(len - 1);
        // SAFETY: the caller's contract; `n + 1 <= len`.
        unsafe {
            core::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), n);
            buf.add(n).write(0);
        }
    }
    text.len()
}

/// Writes the alternate `Display` of `nuwa_ffi::init()` (with where the
/// functions came from) into `buf` (as `snprintf`).
///
/// # Safety
///
/// `buf` points to `len` writable bytes, or `len` is 0.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nuwa_testlib_describe(buf: *mut c_char, len: usize) -> usize {
    let text = format!("{:#}", nuwa_ffi::init());
    // SAFETY: the caller's contract.
    unsafe { write_text(&text, buf, len) }
}

/// How `init()` found Python: 0 nowhere, 1 global scope, 2 own object,
/// 3 a loaded libpython, 4 the embedder, 5 linked into the same object,
/// 9 other.
#[unsafe(no_mangle)]
pub extern "C" fn nuwa_testlib_via() -> c_int {
    match nuwa_ffi::init().via() {
        Via::Nowhere => 0,
        Via::GlobalScope => 1,
        Via::OwnObject => 2,
        Via::LoadedObject => 3,
        Via::Embedder => 4,
        Via::Linked => 5,
        _ => 9,
    }
}

/// `nuwa_ffi::gil_is_held()` as 0 or 1.
#[unsafe(no_mangle)]
pub extern "C" fn nuwa_testlib_gil_is_held() -> c_int {
    c_int::from(nuwa_ffi::gil_is_held())
}

/// Calls `nuwa_ffi::embed::provide` with these addresses (any but the first
/// three may be null). Returns 0, or -1 and the error's `Display` in `err`.
///
/// # Safety
///
/// As for `provide`; `err` points to `err_len` writable bytes, or
/// `err_len` is 0.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments, reason = "a flat C signature")]
pub unsafe extern "C" fn nuwa_testlib_provide(
    major: c_int,
    minor: c_int,
    save: *const c_void,
    restore: *const c_void,
    current: *const c_void,
    gilstate_this_thread: *const c_void,
    is_finalizing: *const c_void,
    err: *mut c_char,
    err_len: usize,
) -> c_int {
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let version = (major as u8, minor as u8);
        let python = EmbeddedPython::new(version, save, restore, current)
            .with_gilstate_this_thread(gilstate_this_thread)
            .with_is_finalizing(is_finalizing);
        // SAFETY: the caller's contract.
        unsafe { provide(python) }.map_err(|e| e.to_string())
    }));
    match result {
        Ok(Ok(())) => 0,
        Ok(Err(text)) => {
            // SAFETY: the caller's contract.
            unsafe { write_text(&text, err, err_len) };
            -1
        }
        Err(_) => {
            // SAFETY: the caller's contract.
            unsafe { write_text("panic", err, err_len) };
            -1
        }
    }
}
