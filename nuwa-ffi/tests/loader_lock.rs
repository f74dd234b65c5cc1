//! A block without Python must not wait for the dynamic loader's lock.
//!
//! A library's constructor runs while `dlopen` holds the loader's lock. A
//! constructor that hands work to another thread and waits for it (a pool
//! warming up) deadlocks if that work waits for the same lock. Since nuwa
//! looks for Python again at the first block after a library was loaded,
//! a block in that thread calls `dlopen(NULL)` (and `dladdr`, `dlsym`),
//! which wait for the lock the constructor's `dlopen` holds.
//!
//! Deterministic and bounded: the constructor (C, compiled here with `cc`)
//! starts a thread that runs one nuwa block and waits at most 10 s for it;
//! the block needs no time. The constructor records whether the block ended
//! in time, detaches the thread and returns (which lets the block go on).
//! A `harness = false` test (no other threads).

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn main() {
    println!("loader_lock: SKIPPED (glibc only)");
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn main() -> std::process::ExitCode {
    glibc::main()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::ffi::{CString, c_int};
    use std::path::Path;
    use std::process::{Command, ExitCode};

    const CONSTRUCTOR: &str = r#"
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t c = PTHREAD_COND_INITIALIZER;
static int done, result = -1;
static void *worker(void *f) {
    ((void (*)(void))f)();
    pthread_mutex_lock(&m); done = 1; pthread_cond_signal(&c); pthread_mutex_unlock(&m);
    return 0;
}
/* 1: the block ended while the constructor waited; 0: not within 10 s. */
int loader_lock_result(void) { return result; }
__attribute__((constructor)) static void start(void) {
    const char *s = getenv("NUWA_LOADER_LOCK_BLOCK");
    if (!s) return;
    pthread_t t;
    if (pthread_create(&t, 0, worker, (void *)strtoull(s, 0, 16)) != 0) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    int rc = 0;
    pthread_mutex_lock(&m);
    while (!done && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&c, &m, &ts);
    result = done;
    pthread_mutex_unlock(&m);
    pthread_detach(t);
}
"#;

    extern "C" fn run_block() {
        let _ = nuwa_ffi::nogil! { 6 * 7 };
    }

    pub(crate) fn main() -> ExitCode {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("loader_lock");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let source = dir.join("constructor.c");
        let lib = dir.join("libconstructor.so");
        std::fs::write(&source, CONSTRUCTOR).expect("write the C source");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let status = Command::new(cc)
            .args(["-shared", "-fPIC", "-pthread", "-o"])
            .arg(&lib)
            .arg(&source)
            .status()
            .expect("run cc");
        assert!(status.success(), "cc failed");

        // No Python in this process: the resolution says so, and a block
        // after the `dlopen` below looks again.
        let found = nuwa_ffi::init();
        assert!(!found.python_found(), "{found}");
        // SAFETY: no other thread reads the environment now.
        unsafe {
            std::env::set_var(
                "NUWA_LOADER_LOCK_BLOCK",
                format!("{:x}", run_block as extern "C" fn() as usize),
            );
        }
        let path = CString::new(lib.to_str().expect("utf-8 path")).expect("no NUL");
        // SAFETY: loads the library built above, whose constructor runs a
        // block of this program on another thread.
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) };
        assert!(!handle.is_null(), "dlopen failed");
        // SAFETY: the function the library defines, `int (void)`.
        let result = unsafe {
            let f = libc::dlsym(handle, c"loader_lock_result".as_ptr());
            assert!(!f.is_null(), "no loader_lock_result");
            core::mem::transmute::<*mut libc::c_void, extern "C" fn() -> c_int>(f)()
        };
        match result {
            1 => {
                println!("loader_lock: ok (the block ran while a constructor waited for it)");
                ExitCode::SUCCESS
            }
            _ => {
                println!(
                    "loader_lock: FAILED: a block without Python, on a thread a library's \
                     constructor waits for, did not end within 10 s (it waits for the loader's \
                     lock that the constructor's dlopen holds: a constructor that waited for \
                     good would deadlock)"
                );
                ExitCode::FAILURE
            }
        }
    }
}
