//! nuwa-ffi against a fake CPython library (`fake_python.c`): where no real
//! CPython runs (Windows under wine, musl), this proves the platform's
//! lookup and the calls nuwa makes, in order, for each version family. It
//! proves nothing about CPython itself.
//!
//! Each scenario runs in a child process of its own (nuwa resolves once per
//! process): the child loads one or two fake libraries, gives the main
//! thread a fake thread state holding the fake GIL, and checks what nuwa
//! found and which functions it called. A block proves its release by
//! having another thread take the fake GIL inside it; without a release
//! that thread waits, and after 60 seconds the scenario fails.
//!
//! Windows: `python3XY.dll`, found among the loaded modules by name
//! (`GetModuleHandleExW`, then `GetProcAddress`); `python3.dll` alone (the
//! stable-ABI forwarder) is found without a held check and releases
//! nothing; with both loaded, the versioned DLL is used. Linux (glibc and a
//! dynamic musl build): `libpython3.XY.so.1.0`, loaded `RTLD_LOCAL`, so
//! found by `dl_iterate_phdr`. A static musl program cannot load a library:
//! the test says so and does not run.

use nuwa_ffi::__private::Details;
use std::ffi::{c_char, c_int};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// The versions `build.rs` builds (`MINORS` there).
const MINORS: [u32; 7] = [8, 10, 11, 12, 13, 14, 15];

const SCENARIO_VAR: &str = "NUWA_FAKE_PYTHON_SCENARIO";

#[cfg(nuwa_fake_python)]
const DIR: &str = env!("NUWA_FAKE_PYTHON_DIR");

/// Why the scenarios cannot run on this target, if they cannot.
fn not_run_because() -> Option<&'static str> {
    if !cfg!(nuwa_fake_python) {
        return Some("build.rs built no fake library for this target");
    }
    if cfg!(all(target_env = "musl", target_feature = "crt-static")) {
        return Some("a static musl program cannot load a library (musl's dlopen is a stub there)");
    }
    None
}

fn main() -> ExitCode {
    if let Ok(scenario) = std::env::var(SCENARIO_VAR) {
        run(&scenario);
        println!("scenario {scenario}: ok");
        return ExitCode::SUCCESS;
    }
    if let Some(why) = not_run_because() {
        println!("fake_python: NOT RUN on this target: {why}");
        return ExitCode::SUCCESS;
    }
    let mut scenarios: Vec<String> = Vec::new();
    for minor in MINORS {
        scenarios.push(format!("release-3.{minor}"));
        scenarios.push(format!("no-state-3.{minor}"));
    }
    if cfg!(windows) {
        scenarios.push("forwarder-only".into());
        scenarios.push("forwarder-and-versioned".into());
    }
    if cfg!(nuwa_fake_many_segments) {
        scenarios.push("many-segments-3.12".into());
    }
    if cfg!(all(target_os = "linux", not(target_feature = "crt-static"))) {
        scenarios.push("first-use-while-walking-3.11".into());
        scenarios.push("first-use-while-walking-3.12".into());
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut failed = Vec::new();
    for scenario in &scenarios {
        let out = Command::new(&exe)
            .env(SCENARIO_VAR, scenario)
            .output()
            .expect("start the scenario's child");
        if out.status.success() {
            println!("fake_python {scenario} ... ok");
        } else {
            println!(
                "fake_python {scenario} ... FAILED ({})\n--- stdout\n{}--- stderr\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            failed.push(scenario.clone());
        }
    }
    println!(
        "fake_python: {} passed, {} failed {failed:?}",
        scenarios.len() - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The test functions of one loaded fake library.
struct Fake {
    file: String,
    attach: unsafe extern "C" fn(),
    holds: unsafe extern "C" fn() -> c_int,
    take_and_give_back: unsafe extern "C" fn(c_int) -> c_int,
    take_log: unsafe extern "C" fn(*mut c_char, usize) -> usize,
}

impl Fake {
    /// Loads the fake library `file` (kept loaded for good).
    fn load(file: &str) -> Fake {
        let path = lib_dir().join(file);
        // SAFETY: the fake's initialisers only set up its own static data;
        // the signatures are the ones of `fake_python.c`.
        unsafe {
            let lib = libloading::Library::new(&path)
                .unwrap_or_else(|e| panic!("load {}: {e}", path.display()));
            let lib: &'static libloading::Library = Box::leak(Box::new(lib));
            Fake {
                file: file.into(),
                attach: *lib.get(b"fake_attach_new_state\0").unwrap(),
                holds: *lib.get(b"fake_holds_gil\0").unwrap(),
                take_and_give_back: *lib.get(b"fake_take_and_give_back\0").unwrap(),
                take_log: *lib.get(b"fake_take_log\0").unwrap(),
            }
        }
    }

    fn attach(&self) {
        // SAFETY: called once per thread, on a thread without a fake state.
        unsafe { (self.attach)() }
    }

    fn holds(&self) -> bool {
        // SAFETY: reads the calling thread's own fake state.
        unsafe { (self.holds)() != 0 }
    }

    /// Whether another thread can take the fake GIL now (it waits at most
    /// 60 seconds for it).
    fn other_thread_takes_gil(&self) -> bool {
        let f = self.take_and_give_back;
        // SAFETY: the fake's own GIL, taken and given back at once.
        std::thread::spawn(move || unsafe { f(60_000) } != 0)
            .join()
            .unwrap()
    }

    /// The calls logged since the last `log`, in order.
    fn log(&self) -> String {
        let mut buf = [0u8; 4096];
        // SAFETY: `buf` is writable for its length (`c_char` is `i8` or
        // `u8`, by target: the same size).
        let n = unsafe { (self.take_log)(buf.as_mut_ptr().cast::<c_char>(), buf.len()) };
        buf[..n].iter().map(|&c| char::from(c)).collect()
    }
}

fn lib_dir() -> PathBuf {
    #[cfg(nuwa_fake_python)]
    let dir = DIR;
    #[cfg(not(nuwa_fake_python))]
    let dir = "";
    // Under wine the build's path is a Unix one: drive Z: is the root.
    if cfg!(windows) && dir.starts_with('/') {
        return PathBuf::from(format!("Z:{}", dir.replace('/', "\\")));
    }
    PathBuf::from(dir)
}

fn file_for(minor: u32) -> String {
    if cfg!(windows) {
        format!("python3{minor}.dll")
    } else {
        format!("libpython3.{minor}.so.1.0")
    }
}

/// The calls nuwa makes on `minor`, on this target, for (a block's release,
/// its reacquire, a block on a thread without a state). The letters are
/// those of `fake_python.c`.
fn expected(minor: u32) -> (&'static str, &'static str, &'static str) {
    // Windows: PyEval_RestoreThread always (it keeps GetLastError()), no
    // finalization check (the thread exit does not unwind).
    // Linux, glibc: 3.13 takes the GIL back with PyThreadState_Swap; 3.14+
    // with the getter and PyEval_RestoreThread, as Windows does.
    // musl: pthread_exit does not unwind, so on 3.13 and older a block
    // checks Py_IsFinalizing after its release and before its reacquire.
    let musl = cfg!(target_env = "musl");
    match minor {
        ..=11 if cfg!(windows) => ("UTS", "UR", "UT"),
        ..=11 if musl => ("UTSF", "UFR", "UT"),
        ..=11 => ("UTS", "UR", "UT"),
        12 if musl => ("WF", "UFR", "W"),
        12 => ("W", "UR", "W"),
        13 if cfg!(windows) => ("W", "GR", "W"),
        13 if musl => ("WF", "Fw", "W"),
        13 => ("W", "w", "W"),
        _ => ("GS", "GR", "G"),
    }
}

fn run(scenario: &str) {
    if let Some(minor) = scenario.strip_prefix("release-3.") {
        release(minor.parse().unwrap());
    } else if let Some(minor) = scenario.strip_prefix("no-state-3.") {
        no_state(minor.parse().unwrap());
    } else if let Some(minor) = scenario.strip_prefix("first-use-while-walking-3.") {
        first_use_while_walking(minor.parse().unwrap());
    } else if scenario == "many-segments-3.12" {
        many_segments();
    } else if scenario == "forwarder-only" {
        forwarder_only();
    } else if scenario == "forwarder-and-versioned" {
        forwarder_and_versioned();
    } else {
        panic!("unknown scenario {scenario}");
    }
}

/// Checks what `nuwa_ffi::init()` found: the fake of `minor`, in `fake`.
fn check_found(fake: &Fake, minor: u32) {
    let r = nuwa_ffi::init();
    println!("{r:#}");
    assert!(r.can_release(), "{r:#}");
    assert_eq!(r.version(), Some((3, minor as u8)), "{r:#}");
    assert_eq!(r.via(), nuwa_ffi::__private::Via::LoadedObject, "{r:#}");
    assert!(r.source().ends_with(&fake.file), "{r:#}");
    let shown = format!("{r:#}");
    if cfg!(windows) {
        assert!(
            !shown.contains("libpython"),
            "a Windows report names a libpython: {shown}"
        );
    }
    // 3.11 and later: the version is read from Py_Version, not asked for.
    let resolved = fake.log();
    assert_eq!(
        resolved.contains('V'),
        minor <= 10,
        "resolution calls: {resolved}"
    );
}

/// A block on the thread that holds the fake GIL releases it, with the
/// calls of its version family in order, and takes it back.
fn release(minor: u32) {
    let fake = Fake::load(&file_for(minor));
    fake.attach();
    check_found(&fake, minor);
    assert!(nuwa_ffi::gil_is_held());
    fake.log();
    let (release, reacquire, _) = expected(minor);
    let (inside, taken) = nuwa_ffi::nogil! {
        (fake.log(), fake.other_thread_takes_gil())
    };
    assert!(
        taken,
        "another thread could not take the GIL inside the block"
    );
    assert_eq!(inside, release, "the release's calls");
    assert_eq!(fake.log(), reacquire, "the reacquire's calls");
    assert!(fake.holds(), "the GIL was not taken back");
}

/// A block on a thread without a thread state releases nothing, and the
/// thread that holds the GIL keeps it.
fn no_state(minor: u32) {
    let fake = Fake::load(&file_for(minor));
    fake.attach();
    check_found(&fake, minor);
    let (_, _, check) = expected(minor);
    let log = std::thread::scope(|s| {
        s.spawn(|| {
            assert!(!nuwa_ffi::gil_is_held());
            fake.log();
            let ran = nuwa_ffi::nogil! { true };
            assert!(ran);
            fake.log()
        })
        .join()
        .unwrap()
    });
    assert_eq!(
        log, check,
        "the calls of a block on a thread without a state"
    );
    assert!(fake.holds(), "the main thread lost the GIL");
    assert!(!fake.other_thread_takes_gil_quickly());
}

impl Fake {
    /// Whether another thread takes the fake GIL at once (it does not wait).
    fn other_thread_takes_gil_quickly(&self) -> bool {
        let f = self.take_and_give_back;
        // SAFETY: as in `other_thread_takes_gil`.
        std::thread::spawn(move || unsafe { f(0) } != 0)
            .join()
            .unwrap()
    }
}

/// Windows: `python3.dll` alone has no current-state getter: found, no
/// held check, nothing released, nothing called.
fn forwarder_only() {
    let fake = Fake::load("python3.dll");
    fake.attach();
    let r = nuwa_ffi::init();
    println!("{r:#}");
    assert_eq!(
        r.status(),
        nuwa_ffi::__private::Status::FoundWithoutHeldCheck,
        "{r:#}"
    );
    assert!(!r.can_release());
    assert!(r.source().ends_with("python3.dll"), "{r:#}");
    fake.log();
    let released = nuwa_ffi::nogil! { !fake.holds() };
    assert!(!released, "a block released through python3.dll");
    assert_eq!(fake.log(), "", "calls into python3.dll");
    assert!(fake.holds());
}

/// Windows: with `python3.dll` loaded first and `python313.dll` after, the
/// versioned DLL is used, and the forwarder is never called.
fn forwarder_and_versioned() {
    let forwarder = Fake::load("python3.dll");
    let fake = Fake::load("python313.dll");
    fake.attach();
    check_found(&fake, 13);
    let (inside, taken) = nuwa_ffi::nogil! {
        (fake.log(), fake.other_thread_takes_gil())
    };
    assert!(taken);
    assert_eq!(inside, expected(13).0);
    assert_eq!(fake.log(), expected(13).1);
    assert_eq!(forwarder.log(), "", "calls into python3.dll");
}

/// How long the walking thread waits for the fake GIL before it calls the
/// scenario a deadlock and gives up (it needs microseconds once released).
#[cfg(all(target_os = "linux", not(target_feature = "crt-static")))]
const WALKER_WAIT_MS: i32 = 10_000;

/// A libpython in the global scope (loaded `RTLD_GLOBAL`, as an interpreter
/// that exports its symbols), and another thread inside `dl_iterate_phdr`
/// whose callback waits for the GIL (as `threadpoolctl`'s does: its
/// callback is Python code, run through `ctypes`). The first block on the
/// thread that holds the GIL must still release it: finding CPython in the
/// global scope takes no lock that the walking thread holds, and the block
/// waits, with the GIL released, until the walker has taken it and given it
/// back. A lookup that walks the loaded objects waits for the walker, which
/// waits for the GIL: both stop until the walker gives up after
/// `WALKER_WAIT_MS` and the scenario fails.
#[cfg(all(target_os = "linux", not(target_feature = "crt-static")))]
fn first_use_while_walking(minor: u32) {
    use std::ffi::c_void;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::mpsc::{Sender, channel};

    /// `fake_take_and_give_back` of the fake loaded, for the callback.
    static TAKE: AtomicUsize = AtomicUsize::new(0);
    static FIRST: AtomicBool = AtomicBool::new(true);
    /// Told when the callback runs (the walker holds the loader's lock),
    /// then whether it took the GIL.
    static TELL: Mutex<Option<Sender<bool>>> = Mutex::new(None);

    unsafe extern "C" {
        fn dl_iterate_phdr(
            callback: unsafe extern "C" fn(*mut c_void, usize, *mut c_void) -> c_int,
            data: *mut c_void,
        ) -> c_int;
    }

    unsafe extern "C" fn visit(_: *mut c_void, _: usize, _: *mut c_void) -> c_int {
        if FIRST.swap(false, Ordering::SeqCst) {
            let tell = TELL.lock().unwrap().take().unwrap();
            let _ = tell.send(true);
            // SAFETY: the address of `fake_take_and_give_back`, stored below.
            let take: unsafe extern "C" fn(c_int) -> c_int =
                unsafe { std::mem::transmute(TAKE.load(Ordering::SeqCst)) };
            // SAFETY: the fake's own GIL, taken and given back at once.
            let _ = tell.send(unsafe { take(WALKER_WAIT_MS) } != 0);
        }
        0
    }

    // SAFETY: only looks the name up in the program's global scope.
    let this = libloading::os::unix::Library::this();
    // SAFETY: the address is only compared with null.
    let lock_free = unsafe { this.get::<*const c_void>(b"_dl_find_object\0") }.is_ok();
    if cfg!(target_env = "gnu") && !lock_free {
        // Known: before glibc 2.35 the first lookup walks the loaded objects
        // and deadlocks here (until the walker gives up).
        println!("first-use-while-walking: NOT RUN: glibc before 2.35 (no _dl_find_object)");
        return;
    }
    let path = lib_dir().join(file_for(minor));
    // SAFETY: as in `Fake::load`, but `RTLD_GLOBAL`: the fake's symbols are
    // in the global scope, where nuwa looks first.
    let fake = unsafe {
        use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
        let lib = Library::open(Some(&path), RTLD_NOW | RTLD_GLOBAL)
            .unwrap_or_else(|e| panic!("load {}: {e}", path.display()));
        let lib: &'static Library = Box::leak(Box::new(lib));
        Fake {
            file: file_for(minor),
            attach: *lib.get(b"fake_attach_new_state\0").unwrap(),
            holds: *lib.get(b"fake_holds_gil\0").unwrap(),
            take_and_give_back: *lib.get(b"fake_take_and_give_back\0").unwrap(),
            take_log: *lib.get(b"fake_take_log\0").unwrap(),
        }
    };
    TAKE.store(fake.take_and_give_back as usize, Ordering::SeqCst);
    fake.attach();
    let (tell, told) = channel();
    *TELL.lock().unwrap() = Some(tell);
    // SAFETY: `visit` matches the callback's C signature and never unwinds.
    let walker = std::thread::spawn(|| unsafe { dl_iterate_phdr(visit, std::ptr::null_mut()) });
    // The walker is inside `dl_iterate_phdr`, holding the loader's lock, and
    // is about to wait for the GIL this thread holds.
    assert!(told.recv().expect("the walker's callback ran"));
    let took = nuwa_ffi::nogil! { told.recv().expect("the walker's answer") };
    walker.join().expect("the walker panicked");
    let found = nuwa_ffi::init();
    assert!(
        took,
        "the walking thread never got the GIL: the first block waited for the \
         loader's lock it held instead of releasing ({found:#})"
    );
    assert_eq!(
        found.via(),
        nuwa_ffi::__private::Via::GlobalScope,
        "{found:#}"
    );
    assert!(fake.holds());
}

/// Not on this target (`dl_iterate_phdr`, `RTLD_GLOBAL`: Linux only here).
#[cfg(not(all(target_os = "linux", not(target_feature = "crt-static"))))]
fn first_use_while_walking(_: u32) {}

/// A libpython with more `PT_LOAD` segments than nuwa's segment walk keeps
/// (20, `PyEval_SaveThread` in the 19th; built by `build.rs` with
/// `many_segments.ld`) is found and releases, as it was when each symbol
/// was checked with `dladdr`.
fn many_segments() {
    let fake = Fake::load("many_segments/libpython3.12.so.1.0");
    fake.attach();
    check_found(&fake, 12);
    let (inside, taken) = nuwa_ffi::nogil! {
        (fake.log(), fake.other_thread_takes_gil())
    };
    assert!(
        taken,
        "another thread could not take the GIL inside the block"
    );
    assert_eq!(inside, expected(12).0, "the release's calls");
    assert_eq!(fake.log(), expected(12).1, "the reacquire's calls");
}
