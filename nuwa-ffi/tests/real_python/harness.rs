//! What every scenario uses: the verdict types, the flags Python and Rust share,
//! the prelude, the embedded interpreter, the release proof, and the child's main.

#![allow(unused_imports)]
use std::env;
use std::ffi::{CStr, CString, c_char, c_int, c_longlong, c_void};
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI64, Ordering::SeqCst};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
use nuwa_ffi::__private::{Details, HeldCheck};
use nuwa_ffi::{CPython, GilHeld, GilOps};

use crate::scenarios::{HELPERS, SCENARIOS};

/// A scenario's verdict, from inside the child.
pub(crate) enum Pass {
    /// Passed, with an optional note for the report.
    Ok(String),
    Skipped(String),
}

pub(crate) type Outcome = Result<Pass, String>;

pub(crate) fn passed() -> Outcome {
    Ok(Pass::Ok(String::new()))
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+).into());
        }
    };
}

/// How long a scenario waits for something that proves a release.
pub(crate) const WAIT: Duration = Duration::from_secs(10);
/// How long the runner lets a child live.
pub(crate) const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

// -----------------------------------------------------------------------
// Shared state: flags that Python and Rust both read and write
// -----------------------------------------------------------------------

pub(crate) const PY_ERRORS: usize = 0;
pub(crate) const ENTERED: usize = 1;
pub(crate) const GO: usize = 2;
pub(crate) const ARRIVED: usize = 3;
pub(crate) const COLLECTED: usize = 4;
pub(crate) const DEL_RAN: usize = 5;
pub(crate) const DEL_FINALIZING: usize = 6;
pub(crate) const IN_BLOCK: usize = 7;
pub(crate) const GIL_CHECK_IN_BLOCK: usize = 8;
pub(crate) const WAIT_RESULT: usize = 9;
pub(crate) const RETURNED: usize = 10;
pub(crate) const UNWOUND: usize = 11;
pub(crate) const CALLS: usize = 12;
pub(crate) const BLOCK_ENDS: usize = 13;
pub(crate) const STOP: usize = 14;
pub(crate) const PROGRESS: usize = 15;
pub(crate) const GC_DONE: usize = 16;
pub(crate) const GC_COUNT: usize = 17;
pub(crate) const IN_PART: usize = 19;
pub(crate) const PART_LEFT: usize = 20;
pub(crate) const DAEMON_TID: usize = 21;

pub(crate) static FLAGS: [AtomicI64; 32] = [const { AtomicI64::new(0) }; 32];

pub(crate) fn flag_at(i: c_int) -> Option<&'static AtomicI64> {
    usize::try_from(i).ok().and_then(|i| FLAGS.get(i))
}

pub(crate) extern "C" fn rp_set(i: c_int, value: c_longlong) {
    if let Some(f) = flag_at(i) {
        f.store(value, SeqCst);
    }
}

pub(crate) extern "C" fn rp_get(i: c_int) -> c_longlong {
    flag_at(i).map_or(-1, |f| f.load(SeqCst))
}

pub(crate) extern "C" fn rp_add(i: c_int, value: c_longlong) -> c_longlong {
    flag_at(i).map_or(-1, |f| f.fetch_add(value, SeqCst) + value)
}

/// Messages from Python: exceptions (through `sys.excepthook` and the
/// threads' wrapper) and notes.
pub(crate) static NOTES: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub(crate) extern "C" fn rp_note(text: *const c_char) {
    if text.is_null() {
        return;
    }
    // SAFETY: ctypes passes the NUL-terminated buffer of a `bytes` object
    // that lives for the duration of the call.
    let text = unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned();
    NOTES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(text);
}

pub(crate) fn notes() -> String {
    NOTES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .join("; ")
}

pub(crate) fn check_python_errors() -> Result<(), String> {
    let errors = FLAGS[PY_ERRORS].load(SeqCst);
    ensure!(
        errors == 0,
        "{errors} Python threads raised: {} (tracebacks on stderr)",
        notes()
    );
    Ok(())
}

/// Waits, bounded, for `FLAGS[i] >= value`.
pub(crate) fn wait_flag(i: usize, value: i64, deadline: Instant) -> bool {
    loop {
        if FLAGS[i].load(SeqCst) >= value {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_micros(100));
    }
}

/// Helpers every scenario's Python code can use.
pub(crate) fn prelude() -> String {
    format!(
        r#"
import ctypes, gc, sys, threading, time, traceback
_nuwa_set = ctypes.PYFUNCTYPE(None, ctypes.c_int, ctypes.c_longlong)({set})
_nuwa_get = ctypes.PYFUNCTYPE(ctypes.c_longlong, ctypes.c_int)({get})
_nuwa_add = ctypes.PYFUNCTYPE(ctypes.c_longlong, ctypes.c_int, ctypes.c_longlong)({add})
_nuwa_note = ctypes.PYFUNCTYPE(None, ctypes.c_char_p)({note})

def nuwa_note(text):
    _nuwa_note(str(text).encode("utf-8", "replace"))

def _nuwa_excepthook(kind, value, tb):
    nuwa_note("".join(traceback.format_exception_only(kind, value)).strip())
    sys.__excepthook__(kind, value, tb)
sys.excepthook = _nuwa_excepthook

def nuwa_fn(address, restype=None):
    return ctypes.PYFUNCTYPE(restype)(address)

def nuwa_wait(flag, value=1, timeout={wait}):
    deadline = time.monotonic() + timeout
    while _nuwa_get(flag) < value:
        if time.monotonic() > deadline:
            raise TimeoutError("flag %d stayed below %d for %s s" % (flag, value, timeout))
        time.sleep(0.001)

def nuwa_thread(target, *args):
    def run():
        try:
            target(*args)
        except BaseException:
            kind, value = sys.exc_info()[:2]
            nuwa_note("%s: %s" % (threading.current_thread().name,
                "".join(traceback.format_exception_only(kind, value)).strip()))
            traceback.print_exc()
            _nuwa_add({errors}, 1)
    t = threading.Thread(target=run)
    t.start()
    return t

def nuwa_join(t, timeout={join}):
    t.join(timeout)
    if t.is_alive():
        raise TimeoutError("thread %s still running after %s s" % (t.name, timeout))
"#,
        set = rp_set as *const () as usize,
        get = rp_get as *const () as usize,
        add = rp_add as *const () as usize,
        note = rp_note as *const () as usize,
        errors = PY_ERRORS,
        wait = WAIT.as_secs(),
        join = 3 * WAIT.as_secs(),
    )
}

// -----------------------------------------------------------------------
// The embedded interpreter
// -----------------------------------------------------------------------

/// The interpreter the runner chose, as the child learns it.
pub(crate) struct Target {
    pub(crate) lib: String,
    pub(crate) version: (u8, u8, u8),
    pub(crate) free_threaded: bool,
    pub(crate) debug: bool,
    /// The plugin that links libpython (see `hosts.rs`), or why it is missing.
    pub(crate) plugin: Result<String, String>,
    /// The host with a static libpython, or why it is missing.
    pub(crate) static_host: Result<String, String>,
}

impl Target {
    pub(crate) fn from_env() -> Result<Target, String> {
        let var = |name: &str| env::var(name).map_err(|_| format!("{name} is not set"));
        let lib = var("NUWA_RP_LIBPYTHON")?;
        let version = var("NUWA_RP_VERSION")?;
        let mut parts = version.split('.').map(|p| p.parse::<u8>());
        let (Some(Ok(major)), Some(Ok(minor)), Some(Ok(micro))) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("NUWA_RP_VERSION={version} is not X.Y.Z"));
        };
        Ok(Target {
            lib,
            version: (major, minor, micro),
            free_threaded: var("NUWA_RP_FREE_THREADED")? == "1",
            debug: var("NUWA_RP_DEBUG")? == "1",
            plugin: built(var("NUWA_RP_PLUGIN")?),
            static_host: built(var("NUWA_RP_STATIC_HOST")?),
        })
    }
}

/// A host path from the runner, or `error: why`.
fn built(value: String) -> Result<String, String> {
    match value.strip_prefix("error: ") {
        Some(why) => Err(why.to_string()),
        None => Ok(value),
    }
}

pub(crate) type InitializeExFn = unsafe extern "C" fn(c_int);
pub(crate) type IntFn = unsafe extern "C" fn() -> c_int;
pub(crate) type RunStringFlagsFn = unsafe extern "C" fn(*const c_char, *mut c_void) -> c_int;
pub(crate) type GilStateReleaseFn = unsafe extern "C" fn(c_int);

/// The C API functions this test calls itself.
pub(crate) struct Py {
    pub(crate) initialize_ex: InitializeExFn,
    pub(crate) finalize_ex: IntFn,
    pub(crate) is_initialized: IntFn,
    pub(crate) run_simple_string_flags: RunStringFlagsFn,
    pub(crate) gilstate_check: IntFn,
    /// Returns a `PyGILState_STATE`, a C enum.
    pub(crate) gilstate_ensure: IntFn,
    pub(crate) gilstate_release: GilStateReleaseFn,
}

pub(crate) static PY: OnceLock<Py> = OnceLock::new();

/// Copies the symbol `name` out of `lib`.
///
/// # Safety
///
/// `T` is the type of the symbol `name`.
pub(crate) unsafe fn symbol<T: Copy>(lib: &'static Library, name: &str) -> Result<T, String> {
    // SAFETY: the caller's contract; `lib` is never unloaded.
    unsafe { lib.get::<T>(name) }
        .map(|s| *s)
        .map_err(|e| format!("{name}: {e}"))
}

/// Loads libpython with `RTLD_NOW | RTLD_GLOBAL`, so that nuwa-ffi's
/// `dlsym` and the interpreter's extension modules see its symbols.
pub(crate) fn load(target: &Target) -> Result<&'static Py, String> {
    // SAFETY: libpython's initialisers only set up its own static data,
    // and the handle is leaked below, so it is never unloaded.
    let lib = unsafe { Library::open(Some(&target.lib), RTLD_NOW | RTLD_GLOBAL) }
        .map_err(|e| format!("dlopen({}): {e}", target.lib))?;
    let lib: &'static Library = Box::leak(Box::new(lib));
    ensure!(LIB.set(lib).is_ok(), "libpython loaded twice");
    // SAFETY: each field's type is the C signature of the function of
    // that name in CPython 3.8 and later (PyGILState_STATE is an int).
    let py = unsafe {
        Py {
            initialize_ex: symbol(lib, "Py_InitializeEx")?,
            finalize_ex: symbol(lib, "Py_FinalizeEx")?,
            is_initialized: symbol(lib, "Py_IsInitialized")?,
            run_simple_string_flags: symbol(lib, "PyRun_SimpleStringFlags")?,
            gilstate_check: symbol(lib, "PyGILState_Check")?,
            gilstate_ensure: symbol(lib, "PyGILState_Ensure")?,
            gilstate_release: symbol(lib, "PyGILState_Release")?,
        }
    };
    ensure!(PY.set(py).is_ok(), "libpython loaded twice");
    PY.get().ok_or_else(|| "unreachable".to_string())
}

static LIB: OnceLock<&'static Library> = OnceLock::new();

/// Another C API function of the libpython [`load`] opened.
///
/// # Safety
///
/// `T` is the type of the symbol `name`.
pub(crate) unsafe fn api<T: Copy>(name: &str) -> Result<T, String> {
    let lib = LIB.get().ok_or("libpython is not loaded")?;
    // SAFETY: the caller's contract.
    unsafe { symbol(lib, name) }
}

/// Loads and initialises the interpreter, and runs the prelude.
pub(crate) fn start(target: &Target) -> Result<&'static Py, String> {
    let py = load(target)?;
    py.initialize()?;
    Ok(py)
}

impl Py {
    pub(crate) fn is_initialized(&self) -> bool {
        // SAFETY: Py_IsInitialized may be called at any time.
        unsafe { (self.is_initialized)() != 0 }
    }

    /// `PyGILState_Check()`: 1 if this thread holds the GIL.
    pub(crate) fn gil_check(&self) -> c_int {
        // SAFETY: PyGILState_Check may be called at any time, on any
        // thread, with or without the GIL.
        unsafe { (self.gilstate_check)() }
    }

    /// `Py_InitializeEx(0)` on this (the main) thread, then the prelude.
    pub(crate) fn initialize(&self) -> Result<(), String> {
        ensure!(!self.is_initialized(), "already initialised");
        // SAFETY: called once, before the interpreter exists; PYTHONHOME
        // was set by the runner.
        unsafe { (self.initialize_ex)(0) };
        ensure!(self.is_initialized(), "Py_InitializeEx(0) failed");
        self.run(&prelude())
    }

    /// Runs Python code in `__main__` with `PyRun_SimpleString`.
    pub(crate) fn run(&self, code: &str) -> Result<(), String> {
        ensure!(
            self.is_initialized() && self.gil_check() == 1,
            "cannot run Python code: the interpreter is not initialised or this \
             thread does not hold the GIL"
        );
        // SAFETY: checked just above.
        unsafe { self.run_unchecked(code) }
    }

    /// [`run`](Self::run) without its check, for a thread that holds the GIL
    /// through a state `PyGILState_Check` does not know.
    ///
    /// # Safety
    ///
    /// The interpreter is initialised and this thread holds the GIL.
    pub(crate) unsafe fn run_unchecked(&self, code: &str) -> Result<(), String> {
        let code = CString::new(code).map_err(|e| e.to_string())?;
        // SAFETY: the interpreter is initialised and this thread holds its
        // GIL (the caller's contract); `code` is NUL-terminated; a null
        // `PyCompilerFlags*` is allowed.
        let rc = unsafe { (self.run_simple_string_flags)(code.as_ptr(), std::ptr::null_mut()) };
        ensure!(
            rc == 0,
            "Python raised: {} (traceback on stderr)",
            NOTES
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .last()
                .map_or("?", String::as_str)
        );
        Ok(())
    }

    /// `Py_FinalizeEx()` on the main thread, which holds the GIL.
    pub(crate) fn finalize(&self) -> Result<(), String> {
        ensure!(
            self.is_initialized() && self.gil_check() == 1,
            "cannot finalize: the interpreter is not initialised or the main thread \
             does not hold the GIL"
        );
        // SAFETY: called on the thread that initialised the interpreter,
        // which holds the GIL (checked above).
        let rc = unsafe { (self.finalize_ex)() };
        ensure!(rc == 0, "Py_FinalizeEx() returned {rc}");
        Ok(())
    }

    /// `PyGILState_Ensure()`, on a thread of an initialised interpreter.
    pub(crate) fn gilstate_ensure(&self) -> c_int {
        // SAFETY: the scenarios call this only while the interpreter is
        // initialised, on threads that do not hold the GIL.
        unsafe { (self.gilstate_ensure)() }
    }

    /// `PyGILState_Release(state)`, with the state `gilstate_ensure`
    /// returned on this thread.
    pub(crate) fn gilstate_release(&self, state: c_int) {
        // SAFETY: the scenarios pass the state returned by
        // PyGILState_Ensure on this thread, once, with the thread attached.
        unsafe { (self.gilstate_release)(state) }
    }
}

// -----------------------------------------------------------------------
// The child: runs one scenario
// -----------------------------------------------------------------------

pub(crate) const RESULT_MARK: &str = "real_python-result:";

pub(crate) fn child(name: &str) -> ExitCode {
    let outcome = match SCENARIOS.iter().chain(HELPERS).find(|s| s.name == name) {
        Some(scenario) => Target::from_env().and_then(|target| (scenario.run)(&target)),
        None => Err(format!("unknown scenario {name:?}")),
    };
    let (line, code) = match outcome {
        Ok(Pass::Ok(note)) => (format!("ok {note}"), ExitCode::SUCCESS),
        Ok(Pass::Skipped(why)) => (format!("skip {why}"), ExitCode::SUCCESS),
        Err(why) => (
            format!("fail {}", why.replace('\n', " | ")),
            ExitCode::FAILURE,
        ),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{RESULT_MARK} {line}");
    let _ = out.flush();
    code
}

/// What `nuwa_ffi::init` must report for this interpreter.
pub(crate) fn check_resolution(target: &Target) -> Result<String, String> {
    let found = nuwa_ffi::init();
    ensure!(
        found.python_found() && found.can_release(),
        "nuwa_ffi::init(): {found}"
    );
    ensure!(found.missing().is_empty(), "nuwa_ffi::init(): {found:?}");
    let (major, minor, _) = target.version;
    ensure!(
        found.version() == Some((major, minor)),
        "nuwa_ffi::init() reports version {:?}, the interpreter is {major}.{minor}",
        found.version()
    );
    let expected = if (major, minor) >= (3, 13) {
        HeldCheck::ThreadLocal {
            symbol: "PyThreadState_GetUnchecked",
        }
    } else if (major, minor) == (3, 12) {
        HeldCheck::ThreadLocal {
            symbol: "_PyThreadState_UncheckedGet",
        }
    } else {
        // 3.8-3.11: the pointer comparison only (nothing tells safely which
        // thread uses a state).
        HeldCheck::CompareWithThisThread {
            symbol: "_PyThreadState_UncheckedGet",
        }
    };
    ensure!(
        found.held_check() == expected,
        "nuwa_ffi::init() held check {:?}, expected {expected:?}",
        found.held_check()
    );
    Ok(found.to_string())
}

/// Proves that a block through `ops` on this thread (which holds the GIL)
/// releases it: a Python thread waits until the block has started, runs
/// `gc.collect()` (which needs the GIL, or on a free-threaded build every
/// thread detached) and sets a flag, which the block waits for, bounded.
pub(crate) fn prove_release<G: GilOps>(py: &Py, ops: &G, what: &str) -> Result<(), String> {
    FLAGS[ENTERED].store(0, SeqCst);
    FLAGS[GO].store(0, SeqCst);
    py.run(&format!(
        "nuwa_proof = nuwa_thread(lambda: (nuwa_wait({ENTERED}), gc.collect(), _nuwa_set({GO}, 1)))"
    ))?;
    let deadline = Instant::now() + WAIT;
    let (went, inside) = nuwa_ffi::nogil!(ops => {
        FLAGS[ENTERED].store(1, SeqCst);
        let inside = py.gil_check();
        (wait_flag(GO, 1, deadline), inside)
    });
    ensure!(
        went,
        "{what}: a Python thread could not run gc.collect() and set a flag within {WAIT:?} \
         while the block waited for it: the block did not release the GIL"
    );
    ensure!(
        inside == 0,
        "{what}: PyGILState_Check() was {inside} inside the block, expected 0"
    );
    ensure!(
        py.gil_check() == 1,
        "{what}: PyGILState_Check() is not 1 after the block: the GIL was not taken back"
    );
    py.run("nuwa_join(nuwa_proof)")?;
    check_python_errors()
}

// ---------------------------------------------------------------------------
// Pipes: a release proof that needs no ctypes (no extension module)
// ---------------------------------------------------------------------------

/// A pipe: the block writes to `entered.1`; a Python thread reads
/// `entered.0`, runs `gc.collect()`, and writes to `done.1`, which the block
/// waits for on `done.0`.
#[derive(Clone, Copy)]
pub(crate) struct Pipes {
    pub(crate) entered: (c_int, c_int),
    pub(crate) done: (c_int, c_int),
}

fn pipe() -> Result<(c_int, c_int), String> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: `fds` has room for the two descriptors.
    let rc = unsafe { libc::pipe(fds.as_mut_ptr()) };
    ensure!(rc == 0, "pipe() failed");
    Ok((fds[0], fds[1]))
}

impl Pipes {
    pub(crate) fn new() -> Result<Pipes, String> {
        Ok(Pipes {
            entered: pipe()?,
            done: pipe()?,
        })
    }

    /// Python code (no extension module: `os`, `gc` and `_thread` are
    /// built in) that starts the helper thread.
    pub(crate) fn helper_code(&self, name: &str) -> String {
        format!(
            "import os, gc, _thread\n\
             def {name}():\n    os.read({}, 1)\n    gc.collect()\n    os.write({}, b'd')\n\
             _thread.start_new_thread({name}, ())\n",
            self.entered.0, self.done.1
        )
    }

    /// In a block: says "entered", and waits (bounded) for the helper.
    pub(crate) fn enter_and_wait(&self, timeout: Duration) -> bool {
        let byte = *b"e";
        // SAFETY: a one-byte buffer that lives for the call.
        if unsafe { libc::write(self.entered.1, byte.as_ptr().cast(), 1) } != 1 {
            return false;
        }
        let mut fds = libc::pollfd {
            fd: self.done.0,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = c_int::try_from(timeout.as_millis()).unwrap_or(c_int::MAX);
        // SAFETY: one valid `pollfd`.
        unsafe { libc::poll(&mut fds, 1, ms) == 1 }
    }
}

/// Runs `cmd` to its end, killed after `limit`: its status, stdout and
/// stderr (read while it runs), or why it did not end.
pub(crate) fn run_bounded(
    cmd: &mut Command,
    limit: Duration,
) -> Result<(ExitStatus, String, String), String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    match status {
        Some(status) => Ok((status, out, err)),
        None => Err(format!(
            "killed after {} s (it hung); stderr: {}",
            limit.as_secs(),
            err.replace('\n', " | ")
        )),
    }
}

// ---------------------------------------------------------------------------
// Calling Rust from Python code
// ---------------------------------------------------------------------------

thread_local! {
    /// The closure [`call_from_python`] runs, while it runs.
    static FROM_PYTHON: std::cell::Cell<Option<*mut (dyn FnMut() + 'static)>> =
        const { std::cell::Cell::new(None) };
}

extern "C" fn from_python_trampoline() {
    if let Some(f) = FROM_PYTHON.with(|slot| slot.take()) {
        // SAFETY: `call_from_python` stored a pointer to a closure on its
        // own stack, which it keeps alive until `py.run` returns.
        unsafe { (*f)() }
    }
}

/// Runs `f` on this thread from Python code (`ctypes` calls it, the GIL
/// held) in the interpreter of the current thread state, so that Python
/// frames of that state are on the stack below it, as for an extension
/// function. A panic in `f` is resumed after Python returns.
pub(crate) fn call_from_python<R>(py: &Py, f: impl FnOnce() -> R) -> Result<R, String> {
    ensure!(
        py.is_initialized() && py.gil_check() == 1,
        "cannot run Python code: the interpreter is not initialised or this thread does \
         not hold the GIL"
    );
    // SAFETY: checked just above.
    unsafe { call_from_python_unchecked(py, f) }
}

/// [`call_from_python`] on a thread that holds the GIL through a state that
/// `PyGILState_Check` does not know (one made by another thread).
///
/// # Safety
///
/// The interpreter is initialised and this thread holds the GIL.
pub(crate) unsafe fn call_from_python_unchecked<R>(
    py: &Py,
    f: impl FnOnce() -> R,
) -> Result<R, String> {
    let mut f = Some(f);
    let mut out = None;
    let mut call = || {
        if let Some(f) = f.take() {
            out = Some(panic::catch_unwind(AssertUnwindSafe(f)));
        }
    };
    let call: &mut dyn FnMut() = &mut call;
    // SAFETY: only the lifetime is erased; the pointer is taken (and so
    // used) only while `py.run` below runs, and cleared after it.
    let call: *mut (dyn FnMut() + 'static) = unsafe { std::mem::transmute(call) };
    FROM_PYTHON.with(|slot| slot.set(Some(call)));
    // SAFETY: the caller's contract.
    let ran = unsafe {
        py.run_unchecked(&format!(
            "import ctypes as _nuwa_ctypes\n_nuwa_ctypes.PYFUNCTYPE(None)({})()\n",
            from_python_trampoline as *const () as usize
        ))
    };
    FROM_PYTHON.with(|slot| slot.set(None));
    ran?;
    match out {
        Some(Ok(value)) => Ok(value),
        Some(Err(payload)) => panic::resume_unwind(payload),
        None => Err("Python never called the Rust function".into()),
    }
}
