//! A process forked while another thread is inside a `dl_iterate_phdr` that
//! nuwa called: the child must still run its blocks.
//!
//! nuwa calls `dl_iterate_phdr` inside its lookup (the loaded objects named
//! like libpython) and, while no Python is found, at *every* block (the
//! loader's load/unload counters). glibc holds a lock of the dynamic loader
//! for the whole walk and does not reset it in a forked child, so a child
//! whose parent had a thread inside that walk waits for good at its first
//! `dl_iterate_phdr`: in nuwa's case, at its first block.
//!
//! Deterministic: this binary defines `dl_iterate_phdr` itself (the
//! executable's definition is the one nuwa's reference binds to) and passes
//! every call on to the C library's, except that a thread that armed it stops
//! inside the walk, before the first callback, with the loader's lock held
//! (for 5 s at most, so that a fix which waits for nuwa's own walks before a
//! fork can go on). The main thread waits (through a pipe) until that thread
//! is stopped there, forks at once, and gives the child a bounded time to
//! run `init()` and a block and report through another pipe. A child that
//! waits for the lock is killed and the case fails. (Only a main thread
//! stalled for over 5 s between the stop and the fork could let it pass.)
//!
//! Each case runs in its own process forked from the untouched main process
//! (the resolution is process-wide). A `harness = false` test.

#![cfg_attr(not(unix), allow(unused))]

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn main() {
    println!("fork_in_loader: SKIPPED (glibc only)");
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn main() -> std::process::ExitCode {
    glibc::main()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::cell::Cell;
    use std::ffi::{c_int, c_void};
    use std::process::ExitCode;
    use std::sync::atomic::{AtomicI32, Ordering};
    use std::thread;

    /// The child has this long to report (it needs well under a second).
    const CHILD_MS: c_int = 10_000;
    /// The stopped thread stays inside the walk this long at most.
    const STOP_MS: c_int = 5_000;
    /// A case process has this long in all.
    const CASE_MS: u64 = 60_000;

    static STOPPED_W: AtomicI32 = AtomicI32::new(-1);
    static GO_R: AtomicI32 = AtomicI32::new(-1);

    thread_local! {
        /// Stop inside this thread's next `dl_iterate_phdr` (once).
        static ARMED: Cell<bool> = const { Cell::new(false) };
    }

    type Callback = unsafe extern "C" fn(*mut libc::dl_phdr_info, usize, *mut c_void) -> c_int;
    type Iterate = unsafe extern "C" fn(Option<Callback>, *mut c_void) -> c_int;

    struct Passed {
        callback: Callback,
        data: *mut c_void,
        stop: bool,
    }

    unsafe extern "C" fn relay(
        info: *mut libc::dl_phdr_info,
        size: usize,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: `data` is the `Passed` below, borrowed for the walk.
        let passed = unsafe { &mut *data.cast::<Passed>() };
        if core::mem::take(&mut passed.stop) {
            // SAFETY: one byte on a pipe this program created.
            unsafe { libc::write(STOPPED_W.load(Ordering::SeqCst), b"s".as_ptr().cast(), 1) };
            // Nobody sends "go" (the parent forks right after "s"); the
            // bound only lets a fix that waits, before the fork, for nuwa's
            // own walks to end (a pthread_atfork prepare handler) go on.
            let _ = read_within(GO_R.load(Ordering::SeqCst), STOP_MS);
        }
        // SAFETY: the caller's callback, with the caller's data.
        unsafe { (passed.callback)(info, size, passed.data) }
    }

    /// The C library's `dl_iterate_phdr`, with a stop inside the walk for an
    /// armed thread.
    ///
    /// # Safety
    ///
    /// As for the C library's.
    #[unsafe(no_mangle)]
    pub(crate) unsafe extern "C" fn dl_iterate_phdr(
        callback: Option<Callback>,
        data: *mut c_void,
    ) -> c_int {
        // SAFETY: looks up the next definition of the name, the C library's.
        let real = unsafe { libc::dlsym(libc::RTLD_NEXT, c"dl_iterate_phdr".as_ptr()) };
        assert!(!real.is_null(), "no dl_iterate_phdr after this one");
        // SAFETY: the C library's `dl_iterate_phdr` has this signature.
        let real: Iterate = unsafe { core::mem::transmute(real) };
        let Some(callback) = callback else {
            // SAFETY: passed on.
            return unsafe { real(None, data) };
        };
        let stop = ARMED.try_with(|a| a.replace(false)).unwrap_or(false);
        let mut passed = Passed {
            callback,
            data,
            stop,
        };
        // SAFETY: `relay` forwards to `callback` with `data`.
        unsafe { real(Some(relay), (&raw mut passed).cast()) }
    }

    fn pipe() -> [c_int; 2] {
        let mut fds = [-1; 2];
        // SAFETY: `fds` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe()");
        fds
    }

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

    /// In a fresh process: `before` on the main thread, then a thread that
    /// runs `stopped_in` and is stopped inside its first `dl_iterate_phdr`;
    /// then fork, and the child runs `init()` and a block. Exit 0: the
    /// child reported; 1: it did not (killed); 2: the thread never stopped.
    fn case(before: fn(), stopped_in: fn()) -> ! {
        let stopped = pipe();
        let go = pipe();
        let report = pipe();
        STOPPED_W.store(stopped[1], Ordering::SeqCst);
        GO_R.store(go[0], Ordering::SeqCst);
        before();
        let _looker = thread::spawn(move || {
            ARMED.with(|a| a.set(true));
            stopped_in();
        });
        if read_within(stopped[0], CHILD_MS).is_none() {
            // SAFETY: ends this case's process.
            unsafe { libc::_exit(2) };
        }
        // SAFETY: the child only calls nuwa, writes to a pipe and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork()");
        if pid == 0 {
            let _ = nuwa_ffi::init();
            let value = nuwa_ffi::nogil! { 6 * 7 };
            // SAFETY: one byte to the parent, then the child ends.
            unsafe {
                libc::write(
                    report[1],
                    if value == 42 { b"y" } else { b"n" }.as_ptr().cast(),
                    1,
                );
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
        // SAFETY: ends this case's process without joining the stopped thread.
        unsafe { libc::_exit(if reported == Some(b'y') { 0 } else { 1 }) }
    }

    fn run(name: &str, before: fn(), stopped_in: fn()) -> bool {
        // SAFETY: the main process is single-threaded here; the case's
        // process runs `case` and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork()");
        if pid == 0 {
            case(before, stopped_in);
        }
        let mut status = 0;
        let mut waited = 0;
        // SAFETY: polls for that process, and kills it if it overruns.
        unsafe {
            while libc::waitpid(pid, &mut status, libc::WNOHANG) == 0 {
                if waited >= CASE_MS {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
                waited += 10;
            }
        }
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        };
        match code {
            0 => {
                println!("fork_in_loader: {name}: ok (the child ran its block)");
                true
            }
            1 => {
                println!(
                    "fork_in_loader: {name}: FAILED: the child did not run init() and a block \
                     within {CHILD_MS} ms (killed): it waits for the loader's lock that the \
                     parent's stopped thread held at the fork"
                );
                false
            }
            2 => {
                println!("fork_in_loader: {name}: FAILED: the thread never called dl_iterate_phdr");
                false
            }
            other => {
                println!("fork_in_loader: {name}: FAILED: case process status {other} ({status})");
                false
            }
        }
    }

    fn nothing() {}

    fn first_lookup() {
        let _ = nuwa_ffi::init();
    }

    fn block() {
        let _ = nuwa_ffi::nogil! { 6 * 7 };
    }

    pub(crate) fn main() -> ExitCode {
        let mut ok = true;
        // A thread in nuwa's first lookup (the first `dl_iterate_phdr` it makes).
        ok &= run("fork during the first lookup", nothing, first_lookup);
        // No Python found already; a thread in an ordinary block, which reads
        // the loader's counters.
        ok &= run("fork during a block without Python", first_lookup, block);
        if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}
