//! `nuwa-c-abi-host LIB [ROUNDS]`: loads the nuwa C ABI example library
//! (`libnuwa_c_abi.so`, by path) into this process, which has no Python in
//! it, and checks what every function returns.
//!
//! First, before any other call, 8 threads behind a barrier make their first
//! call into the freshly loaded library at the same moment, so that they
//! race to resolve CPython's functions (nuwa-ffi's compare-exchange); all must
//! agree that there is no Python. This is repeated on `ROUNDS` (default 16)
//! fresh copies of the library, each a new instance with its own statics.
//! Then each function is called and its result checked: the computations are
//! right, nothing is found, nothing is released, panics come back as a
//! status.
//!
//! Prints one line per check; exits with 0 if all passed, 1 if any failed,
//! 2 if the library could not be loaded.

use std::ffi::{c_char, c_int};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicU8;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use libloading::Library;

// The statuses of `nuwa_c_abi.h`.
const NUWA_OK: c_int = 0;
const NUWA_STOPPED_EARLY: c_int = 1;
const NUWA_ERR_NULL: c_int = -1;
const NUWA_ERR_PANIC: c_int = -2;
const NUWA_ERR_OVERFLOW: c_int = -3;
const NUWA_ERR_ARG: c_int = -6;

/// Threads that race to make the first call.
const RACERS: usize = 8;

/// The library's functions, as declared in `nuwa_c_abi.h`.
#[derive(Clone, Copy)]
struct Api {
    sum_of_squares: unsafe extern "C" fn(*const f64, usize, *mut f64) -> c_int,
    python_found: unsafe extern "C" fn() -> c_int,
    can_release: unsafe extern "C" fn() -> c_int,
    describe: unsafe extern "C" fn(*mut c_char, usize) -> usize,
    counters: unsafe extern "C" fn(*mut u64, *mut u64) -> c_int,
    set_flag: unsafe extern "C" fn(*mut u8) -> c_int,
    waiters: unsafe extern "C" fn() -> u32,
    wait_for_flag: unsafe extern "C" fn(*const u8, u32) -> c_int,
    wait_for_flag_holding: unsafe extern "C" fn(*const u8, u32) -> c_int,
    spin_sum: unsafe extern "C" fn(u64, *mut u64) -> c_int,
    empty_block: unsafe extern "C" fn(u64, *mut u64) -> c_int,
    nested_blocks: unsafe extern "C" fn(u64, *mut u64) -> c_int,
    early_return: unsafe extern "C" fn(u64, u64, *mut u64) -> c_int,
    checked_power: unsafe extern "C" fn(u64, u32, *mut u64) -> c_int,
    panic_in_block: unsafe extern "C" fn(u32, u32) -> c_int,
    blocks_in_rust_thread: unsafe extern "C" fn(u64, c_int, *mut u64) -> c_int,
    probe_release: unsafe extern "C" fn() -> c_int,
    probe_release_after: unsafe extern "C" fn(u32) -> c_int,
    probe_release_in_rust_thread: unsafe extern "C" fn() -> c_int,
    probe_nested: unsafe extern "C" fn() -> c_int,
}

impl Api {
    /// Loads the library at `path` for the rest of the process (it is never
    /// unloaded, as with Python's `ctypes`) and finds its functions.
    ///
    /// # Safety
    ///
    /// `path` is a build of `examples/c_abi`, whose functions have the
    /// signatures above. Loading it runs no initialisation code of its own.
    unsafe fn load(path: &Path) -> Result<Api, String> {
        // SAFETY: the caller's contract.
        let library = unsafe { Library::new(path) }
            .map_err(|e| format!("cannot load {}: {e}", path.display()))?;
        let library: &'static Library = Box::leak(Box::new(library));
        macro_rules! find {
            ($($name:ident),* $(,)?) => {
                Api {
                    $($name: {
                        let symbol = concat!("nuwa_", stringify!($name), "\0");
                        // SAFETY: the caller's contract: the function has the
                        // type of the field; the library is never unloaded.
                        *unsafe { library.get(symbol.as_bytes()) }
                            .map_err(|e| format!("{}: {e}", symbol.trim_end_matches('\0')))?
                    },)*
                }
            };
        }
        Ok(find!(
            sum_of_squares,
            python_found,
            can_release,
            describe,
            counters,
            set_flag,
            waiters,
            wait_for_flag,
            wait_for_flag_holding,
            spin_sum,
            empty_block,
            nested_blocks,
            early_return,
            checked_power,
            panic_in_block,
            blocks_in_rust_thread,
            probe_release,
            probe_release_after,
            probe_release_in_rust_thread,
            probe_nested,
        ))
    }

    // Safe wrappers: each passes valid pointers that outlive the call.

    fn python_found(&self) -> c_int {
        // SAFETY: no arguments.
        unsafe { (self.python_found)() }
    }

    fn can_release(&self) -> c_int {
        // SAFETY: no arguments.
        unsafe { (self.can_release)() }
    }

    fn probe_release(&self) -> c_int {
        // SAFETY: no arguments.
        unsafe { (self.probe_release)() }
    }

    fn waiters(&self) -> u32 {
        // SAFETY: no arguments.
        unsafe { (self.waiters)() }
    }

    fn describe(&self) -> String {
        // SAFETY: a null buffer of length 0 asks for the length only.
        let len = unsafe { (self.describe)(std::ptr::null_mut(), 0) };
        let mut buf = vec![0u8; len + 1];
        // SAFETY: `buf` has `buf.len()` writable bytes.
        let written = unsafe { (self.describe)(buf.as_mut_ptr().cast(), buf.len()) };
        assert_eq!(written, len, "the text changed between two calls");
        buf.truncate(len);
        String::from_utf8_lossy(&buf).into_owned()
    }

    fn counters(&self) -> (u64, u64) {
        let (mut releases, mut reacquires) = (u64::MAX, u64::MAX);
        // SAFETY: two writable `u64`s.
        unsafe { (self.counters)(&mut releases, &mut reacquires) };
        (releases, reacquires)
    }

    fn call_u64(&self, f: impl FnOnce(*mut u64) -> c_int) -> (c_int, u64) {
        let mut out = u64::MAX;
        let status = f(&mut out);
        (status, out)
    }
}

/// Keeps the score.
struct Checks {
    passed: usize,
    failed: usize,
}

impl Checks {
    fn check(&mut self, what: &str, ok: bool, detail: impl std::fmt::Display) {
        if ok {
            self.passed += 1;
            println!("ok    {what}");
        } else {
            self.failed += 1;
            println!("FAIL  {what}: {detail}");
        }
    }

    fn equal<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, got: T, expected: T) {
        let ok = got == expected;
        self.check(what, ok, format_args!("got {got:?}, expected {expected:?}"));
    }
}

/// `sum(i * i for i in range(n)) mod 2**64`, by the closed form.
fn spin_sum_expected(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let n = u128::from(n);
    ((n - 1) * n * (2 * n - 1) / 6) as u64
}

/// `sum(range(n))`.
fn triangle(n: u64) -> u64 {
    n * n.saturating_sub(1) / 2
}

/// What one racing thread saw.
#[derive(Debug, PartialEq)]
struct FirstCall {
    first: &'static str,
    first_result: i64,
    describe: String,
    python_found: c_int,
}

/// `RACERS` threads make their first call into `api` at the same moment.
fn race_first_calls(api: Api) -> Vec<FirstCall> {
    let barrier = Arc::new(Barrier::new(RACERS));
    let handles: Vec<_> = (0..RACERS)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                let (first, first_result) = match i % 4 {
                    0 => ("describe", api.describe().len() as i64),
                    1 => ("python_found", i64::from(api.python_found())),
                    2 => ("probe_release", i64::from(api.probe_release())),
                    _ => ("can_release", i64::from(api.can_release())),
                };
                FirstCall {
                    first,
                    first_result,
                    describe: api.describe(),
                    python_found: api.python_found(),
                }
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("a racing thread panicked"))
        .collect()
}

fn check_race(checks: &mut Checks, label: &str, api: Api) {
    let seen = race_first_calls(api);
    let text = &seen[0].describe;
    let agree = seen
        .iter()
        .all(|s| &s.describe == text && s.python_found == 0);
    checks.check(
        &format!("{label}: {RACERS} racing first calls agree"),
        agree,
        format_args!("{seen:#?}"),
    );
    let first_ok = seen.iter().all(|s| match s.first {
        "describe" => s.first_result == text.len() as i64,
        _ => s.first_result == 0,
    });
    checks.check(
        &format!("{label}: first calls found nothing, released nothing"),
        first_ok,
        format_args!("{seen:#?}"),
    );
    checks.check(
        &format!("{label}: describe says no Python"),
        text.starts_with("no Python found"),
        format_args!("{text:?}"),
    );
    checks.equal(&format!("{label}: counters"), api.counters(), (0, 0));
}

/// Copies the library to a new file, which `dlopen` loads as a new instance.
fn fresh_copy(path: &Path, dir: &Path, round: usize) -> Result<PathBuf, String> {
    let copy = dir.join(format!("libnuwa_c_abi_copy{round}.so"));
    std::fs::copy(path, &copy).map_err(|e| format!("cannot copy to {}: {e}", copy.display()))?;
    Ok(copy)
}

fn check_functions(checks: &mut Checks, api: Api) {
    // SAFETY: every call in this block passes pointers to live locals of the
    // types the header names, or null where the header allows it.
    unsafe {
        checks.equal("python_found", api.python_found(), 0);
        checks.equal("can_release", api.can_release(), 0);
        let text = api.describe();
        checks.check(
            "describe: no Python found",
            text.starts_with("no Python found in the process")
                && text.contains("blocks run without releasing anything"),
            format_args!("{text:?}"),
        );
        let mut small = [0xffu8; 8];
        let len = (api.describe)(small.as_mut_ptr().cast(), small.len());
        checks.check(
            "describe truncates like snprintf",
            len == text.len() && small[..7] == text.as_bytes()[..7] && small[7] == 0,
            format_args!("len {len}, buffer {small:?}"),
        );

        let data = [1.0, 2.0, 3.0, -0.5, 1e-3];
        let mut out = f64::NAN;
        let status = (api.sum_of_squares)(data.as_ptr(), data.len(), &mut out);
        let expected = data.iter().fold(0.0, |acc, x| acc + x * x);
        checks.equal("sum_of_squares", (status, out), (NUWA_OK, expected));
        let status = (api.sum_of_squares)(std::ptr::null(), 0, &mut out);
        checks.equal("sum_of_squares of nothing", (status, out), (NUWA_OK, 0.0));
        checks.equal(
            "sum_of_squares(NULL, 3)",
            (api.sum_of_squares)(std::ptr::null(), 3, &mut out),
            NUWA_ERR_NULL,
        );
        checks.equal(
            "sum_of_squares(.., NULL)",
            (api.sum_of_squares)(data.as_ptr(), 1, std::ptr::null_mut()),
            NUWA_ERR_NULL,
        );

        for n in [0, 1, 2, 1000, 123_457] {
            let got = api.call_u64(|out| (api.spin_sum)(n, out));
            checks.equal(
                &format!("spin_sum({n})"),
                got,
                (NUWA_OK, spin_sum_expected(n)),
            );
            let got = api.call_u64(|out| (api.nested_blocks)(n, out));
            let expected = spin_sum_expected(n).wrapping_add(n.wrapping_mul(3));
            checks.equal(&format!("nested_blocks({n})"), got, (NUWA_OK, expected));
        }
        let got = api.call_u64(|out| (api.empty_block)(0xdead_beef, out));
        checks.equal("empty_block", got, (NUWA_OK, 0xdead_beef));
        for (n, stop) in [(10, 4), (10, 10), (10, 99), (0, 0), (5000, 1)] {
            let got = api.call_u64(|out| (api.early_return)(n, stop, out));
            let expected = if stop < n {
                (NUWA_STOPPED_EARLY, triangle(stop))
            } else {
                (NUWA_OK, triangle(n))
            };
            checks.equal(&format!("early_return({n}, {stop})"), got, expected);
        }
        for (base, exp) in [(2, 63), (2, 64), (3, 40), (3, 41), (0, 100), (7, 0)] {
            let (status, out) = api.call_u64(|out| (api.checked_power)(base, exp, out));
            let expected = match base.checked_pow(exp) {
                Some(v) => (NUWA_OK, v),
                None => (NUWA_ERR_OVERFLOW, u64::MAX),
            };
            checks.equal(
                &format!("checked_power({base}, {exp})"),
                (status, out),
                expected,
            );
        }
        for site in 0..3 {
            checks.equal(
                &format!("panic_in_block(site {site})"),
                (api.panic_in_block)(site, 1),
                NUWA_ERR_PANIC,
            );
        }
        checks.equal(
            "panic_in_block(site 3)",
            (api.panic_in_block)(3, 0),
            NUWA_ERR_ARG,
        );
        let n = 10_001;
        let expected = spin_sum_expected(n)
            .wrapping_add(n)
            .wrapping_add(triangle(n / 2));
        let got = api.call_u64(|out| (api.blocks_in_rust_thread)(n, 0, out));
        checks.equal("blocks_in_rust_thread", got, (NUWA_OK, expected));
        let (status, _) = api.call_u64(|out| (api.blocks_in_rust_thread)(n, 1, out));
        checks.equal("blocks_in_rust_thread, panicking", status, NUWA_ERR_PANIC);

        checks.equal("probe_release", api.probe_release(), 0);
        checks.equal("probe_release_after", (api.probe_release_after)(1), 0);
        checks.equal(
            "probe_release_in_rust_thread",
            (api.probe_release_in_rust_thread)(),
            0,
        );
        checks.equal("probe_nested", (api.probe_nested)(), 0);
    }
    check_flag_waits(checks, api);
    checks.equal("counters: nothing released", api.counters(), (0, 0));
}

fn check_flag_waits(checks: &mut Checks, api: Api) {
    type Wait = unsafe extern "C" fn(*const u8, u32) -> c_int;
    let waits: [(&str, Wait); 2] = [
        ("wait_for_flag", api.wait_for_flag),
        ("wait_for_flag_holding", api.wait_for_flag_holding),
    ];
    for (name, wait) in waits {
        // Set by another thread once this one is waiting: seen.
        let flag = Arc::new(AtomicU8::new(0));
        let setter = {
            let flag = Arc::clone(&flag);
            thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(10);
                while api.waiters() == 0 && Instant::now() < deadline {
                    thread::sleep(Duration::from_micros(200));
                }
                // Set before the wait started, the flag would prove nothing.
                let saw_waiter = api.waiters() > 0;
                // SAFETY: the flag outlives the call and is shared atomically.
                (saw_waiter, unsafe { (api.set_flag)(flag.as_ptr()) })
            })
        };
        let start = Instant::now();
        // SAFETY: the flag outlives the call; the setter stores atomically.
        let seen = unsafe { wait(flag.as_ptr(), 10_000) };
        let elapsed = start.elapsed();
        let (saw_waiter, set) = setter.join().expect("the setter panicked");
        // Bounded by the wait's own 10 s: no clock in the verdict.
        checks.check(
            &format!("{name}: sees a flag set by another thread"),
            seen == 1 && set == NUWA_OK && saw_waiter,
            format_args!(
                "returned {seen}, set_flag {set}, setter saw the waiter: {saw_waiter}, \
                 after {elapsed:?}"
            ),
        );

        // Never set: times out, not before 50 ms; the upper bound only
        // catches a unit mistake (50 s), however loaded the machine.
        let unset = AtomicU8::new(0);
        let start = Instant::now();
        // SAFETY: as above.
        let seen = unsafe { wait(unset.as_ptr(), 50) };
        let elapsed = start.elapsed();
        checks.check(
            &format!("{name}: times out after 50 ms"),
            seen == 0 && elapsed >= Duration::from_millis(50) && elapsed < Duration::from_secs(30),
            format_args!("returned {seen} after {elapsed:?}"),
        );
        // SAFETY: null is allowed.
        let status = unsafe { wait(std::ptr::null(), 1) };
        checks.equal(&format!("{name}(NULL)"), status, NUWA_ERR_NULL);
    }
    checks.equal("no waiters left", api.waiters(), 0);
}

fn run(path: &Path, rounds: usize) -> Result<Checks, String> {
    let mut checks = Checks {
        passed: 0,
        failed: 0,
    };
    // SAFETY: the caller names a build of examples/c_abi.
    let api = unsafe { Api::load(path)? };
    check_race(&mut checks, "first load", api);

    let dir = std::env::temp_dir().join(format!("nuwa-c-abi-host-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let copies = (1..=rounds).try_for_each(|round| {
        let copy = fresh_copy(path, &dir, round)?;
        // SAFETY: a byte-for-byte copy of the library named by the caller.
        let fresh = unsafe { Api::load(&copy)? };
        check_race(&mut checks, &format!("fresh copy {round}"), fresh);
        Ok::<(), String>(())
    });
    // The copies stay loaded; their files are no longer needed.
    let _ = std::fs::remove_dir_all(&dir);
    copies?;

    check_functions(&mut checks, api);
    Ok(checks)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (path, rounds) = match args.as_slice() {
        [_, path] => (path, 16),
        [_, path, rounds] => match rounds.parse() {
            Ok(rounds) => (path, rounds),
            Err(_) => {
                eprintln!("ROUNDS must be a number, not {rounds:?}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("usage: nuwa-c-abi-host path/to/libnuwa_c_abi.so [ROUNDS]");
            return ExitCode::from(2);
        }
    };
    match run(Path::new(path), rounds) {
        Ok(checks) if checks.failed == 0 => {
            println!("all {} checks passed", checks.passed);
            ExitCode::SUCCESS
        }
        Ok(checks) => {
            println!(
                "{} of {} checks FAILED",
                checks.failed,
                checks.passed + checks.failed
            );
            ExitCode::from(1)
        }
        Err(error) => {
            eprintln!("nuwa-c-abi-host: {error}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_forms_match_the_loops() {
        for n in 0..300u64 {
            assert_eq!(spin_sum_expected(n), (0..n).map(|i| i * i).sum::<u64>());
            assert_eq!(triangle(n), (0..n).sum::<u64>());
        }
        // Past 2**64: the library's sum wraps, and so must the closed form.
        let n = 5_000_000u64;
        let wrapped = (0..n).fold(0u64, |acc, i| acc.wrapping_add(i.wrapping_mul(i)));
        assert_eq!(spin_sum_expected(n), wrapped);
    }
}
