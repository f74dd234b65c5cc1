//! This test binary's own `pause()`: it notes which threads entered it, so
//! that a scenario can tell that a thread is parked at shutdown without
//! asking the kernel what the thread is doing.
//!
//! A thread that CPython ends or hangs at shutdown is parked by `pause()` in
//! a loop, called from nuwa's C frame (`src/restore_shim.c`, CPython 3.13
//! and older) or from libpython (`PyThread_hang_thread`, 3.14 and later).
//! Both calls bind to the definition below: the C frame is linked into this
//! executable, and `build.rs` exports the symbol from the test executables
//! (`--export-dynamic-symbol=pause`), so that the dynamic loader binds
//! libpython's reference to it (the executable comes first in the global
//! scope, however libpython was opened). Asking `/proc/self/task/TID/syscall`
//! instead does not work under `qemu-user`, where it shows the system calls
//! qemu makes on the host, not the guest's.
//!
//! Linux with glibc only (where the real-interpreter suite runs; `build.rs`
//! exports the symbol there). Elsewhere no thread is ever seen in `pause()`.

use std::sync::atomic::{AtomicI64, Ordering::SeqCst};

/// The kernel ids of the threads that have entered `pause()`, each once, in
/// the order they came; 0 is a free slot. Slots are never freed: a thread
/// parked this way never leaves.
static PAUSED_TIDS: [AtomicI64; 64] = [const { AtomicI64::new(0) }; 64];

/// Notes that thread `tid` entered `pause()`: no allocation, no lock, so it
/// may run anywhere `pause()` may (in a signal handler too). With all slots
/// taken, the thread is not noted.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
fn note_paused(tid: i64) {
    for slot in &PAUSED_TIDS {
        // Slots fill from the front and are never freed, so `tid` is either
        // in front of the first free slot or not noted yet.
        match slot.compare_exchange(0, tid, SeqCst, SeqCst) {
            Ok(_) => return,
            Err(seen) if seen == tid => return,
            Err(_) => {}
        }
    }
}

/// Whether thread `tid` (0: none) has entered this binary's `pause()`.
pub(crate) fn entered_pause(tid: i64) -> bool {
    tid != 0 && PAUSED_TIDS.iter().any(|slot| slot.load(SeqCst) == tid)
}

/// `pause(2)` as glibc has it on every architecture (aarch64 has no `pause`
/// system call): waits, with the thread's signal mask unchanged, until a
/// signal handler has run, then returns -1 with `errno` `EINTR`. It first
/// notes the calling thread (see [`entered_pause`]); the note is made before
/// the thread blocks, so whatever the thread did before calling `pause()` is
/// visible to a thread that sees the note.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[unsafe(no_mangle)]
pub(crate) extern "C" fn pause() -> std::ffi::c_int {
    note_paused(crate::scenarios::shutdown::this_tid());
    let mut mask = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `mask` has room for a sigset_t. sigemptyset initialises it (so
    // it is initialised even if pthread_sigmask failed, which it cannot with
    // these arguments); with a null new set, pthread_sigmask only writes the
    // calling thread's mask into it. Both are async-signal-safe.
    unsafe {
        libc::sigemptyset(mask.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), mask.as_mut_ptr());
    }
    // SAFETY: `mask` was initialised above. sigsuspend blocks with the same
    // mask until a signal handler has run (or the process ends), and then
    // returns -1 with errno EINTR, as pause does; it is async-signal-safe
    // and, like pause, a cancellation point.
    unsafe { libc::sigsuspend(mask.as_ptr()) }
}
