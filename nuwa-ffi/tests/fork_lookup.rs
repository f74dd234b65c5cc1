//! A process forked while another thread is inside nuwa's first lookup of
//! CPython: the child must run its blocks, not wait for a thread that does
//! not exist in it.
//!
//! Deterministic: this binary's global allocator stops a thread that armed
//! it at its next allocation, which, right after the thread calls
//! `nuwa_ffi::init()` for the first time in the process, is inside the
//! lookup. The main thread waits (through a pipe) until that thread is
//! stopped there, forks, and gives the child a bounded time to run
//! `init()` and a block and report through another pipe. A child that
//! waits for the lookup to end spins until it is killed: the test fails.
//!
//! A `harness = false` test: no other thread of libtest's runs meanwhile.

#![cfg_attr(not(unix), allow(unused))]

#[cfg(not(unix))]
fn main() {
    println!("fork_lookup: SKIPPED (no fork here)");
}

#[cfg(unix)]
fn main() -> std::process::ExitCode {
    unix::main()
}

#[cfg(unix)]
mod unix {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use std::ffi::c_int;
    use std::process::ExitCode;
    use std::sync::atomic::{AtomicI32, Ordering};
    use std::thread;

    /// The child has this long to report (it needs well under a second).
    const CHILD_MS: c_int = 10_000;

    /// Written by the stopped thread once it is stopped.
    static STOPPED_W: AtomicI32 = AtomicI32::new(-1);
    /// Read by the stopped thread: one byte lets it go on.
    static GO_R: AtomicI32 = AtomicI32::new(-1);

    thread_local! {
        /// Stop at this thread's next allocation (once).
        static STOP_HERE: Cell<bool> = const { Cell::new(false) };
    }

    /// The system allocator, which can stop one thread at one allocation.
    struct Stopping;

    // SAFETY: every allocation is the system allocator's; the stop only blocks
    // the calling thread on a pipe before it allocates.
    unsafe impl GlobalAlloc for Stopping {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if STOP_HERE.try_with(|s| s.replace(false)).unwrap_or(false) {
                let mut byte = [0u8; 1];
                // SAFETY: plain writes and reads of one byte on pipes this
                // program created; nothing here allocates.
                unsafe {
                    libc::write(STOPPED_W.load(Ordering::SeqCst), b"s".as_ptr().cast(), 1);
                    libc::read(GO_R.load(Ordering::SeqCst), byte.as_mut_ptr().cast(), 1);
                }
            }
            // SAFETY: the caller's contract, passed on.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: the caller's contract, passed on; `alloc` is System's.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: Stopping = Stopping;

    fn pipe() -> [c_int; 2] {
        let mut fds = [-1; 2];
        // SAFETY: `fds` has room for the two descriptors.
        let rc = unsafe { libc::pipe(fds.as_mut_ptr()) };
        assert_eq!(rc, 0, "pipe()");
        fds
    }

    /// Waits up to `ms` for a byte on `fd`; the byte, if one came.
    fn read_within(fd: c_int, ms: c_int) -> Option<u8> {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid `pollfd`.
        if unsafe { libc::poll(&mut pfd, 1, ms) } != 1 {
            return None;
        }
        let mut byte = [0u8; 1];
        // SAFETY: reads one byte into `byte`.
        (unsafe { libc::read(fd, byte.as_mut_ptr().cast(), 1) } == 1).then_some(byte[0])
    }

    pub(crate) fn main() -> ExitCode {
        let stopped = pipe();
        let go = pipe();
        let report = pipe();
        STOPPED_W.store(stopped[1], Ordering::SeqCst);
        GO_R.store(go[0], Ordering::SeqCst);

        let looker = thread::spawn(|| {
            STOP_HERE.with(|s| s.set(true));
            // The first lookup in this process: stopped at its first allocation.
            nuwa_ffi::init().to_string()
        });
        if read_within(stopped[0], CHILD_MS).is_none() {
            println!("fork_lookup: FAILED: the looking thread never stopped inside the lookup");
            return ExitCode::FAILURE;
        }

        // SAFETY: the child only calls nuwa, writes to a pipe and `_exit`s; the
        // stopped thread holds no lock of the C library (it stopped before
        // calling `malloc`).
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork()");
        if pid == 0 {
            let found = nuwa_ffi::init();
            let value = nuwa_ffi::nogil! { 6 * 7 };
            let ok = value == 42 && !found.can_release();
            // SAFETY: one byte to the parent, then the child ends without
            // running the parent's exit handlers.
            unsafe {
                libc::write(report[1], if ok { b"y" } else { b"n" }.as_ptr().cast(), 1);
                libc::_exit(0);
            }
        }
        let reported = read_within(report[0], CHILD_MS);
        if reported.is_none() {
            // SAFETY: the child this process forked.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let mut status = 0;
        // SAFETY: reaps that child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        // SAFETY: lets the stopped thread go on.
        unsafe { libc::write(go[1], b"g".as_ptr().cast(), 1) };
        let parent_found = looker.join().expect("the looking thread panicked");

        if reported.is_none() {
            println!(
                "fork_lookup: FAILED: a child forked while another thread was inside nuwa's \
             first lookup did not run init() and a block within {CHILD_MS} ms (killed)"
            );
            return ExitCode::FAILURE;
        }
        if reported != Some(b'y') || status != 0 {
            println!(
                "fork_lookup: FAILED: the child's block or init() went wrong (report {reported:?}, \
             wait status {status})"
            );
            return ExitCode::FAILURE;
        }
        println!("fork_lookup: ok (the child ran its block; the parent found: {parent_found})");
        ExitCode::SUCCESS
    }
}
