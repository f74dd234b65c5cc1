//! Scenarios from the review of the 3.10/3.11 frame-chain held check
//! (issue 22, item 2): each reports what nuwa said where a wrong "held"
//! would release another thread's GIL, or where a wrong "not held" made the
//! token's debug check panic in legitimate use. They are regular scenarios;
//! two that only measure or need a debugger (`breaker_subinterp_cost`,
//! `breaker_signal_in_first_check`) run only with `NUWA_BREAKER=1`. Set
//! `NUWA_BREAKER_CRASH=1` to let a wrong answer act (a block that
//! releases), to see the consequence.

use std::ffi::c_void;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nuwa_ffi::nuwa_core::__private::{release, released};
use nuwa_ffi::{CPython, GilHeld};

use crate::harness::*;

type StateFn = unsafe extern "C" fn() -> *mut c_void;
type EndFn = unsafe extern "C" fn(*mut c_void);
type NewStateFn = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
type InterpFn = unsafe extern "C" fn() -> *mut c_void;

const WAIT: Duration = Duration::from_secs(10);

/// The measuring and debugger-driven scenarios run only with
/// `NUWA_BREAKER=1`.
fn gated() -> Option<Outcome> {
    std::env::var_os("NUWA_BREAKER").is_none().then(|| {
        Ok(Pass::Skipped(
            "breaker reproducer: set NUWA_BREAKER=1".into(),
        ))
    })
}

fn crash_mode() -> bool {
    std::env::var_os("NUWA_BREAKER_CRASH").is_some()
}

/// CPython 3.12+ debug builds assert against attaching a state on a thread
/// other than the one it is bound to: the edge these scenarios build.
fn skip_on_debug_3_12(target: &Target) -> Option<Outcome> {
    (target.debug && target.version >= (3, 12, 0)).then(|| {
        Ok(Pass::Skipped(
            "CPython 3.12+ debug build: it asserts against attaching a state on another \
             thread"
                .into(),
        ))
    })
}

#[derive(Clone, Copy)]
struct Api {
    interp: usize,
    new_state: NewStateFn,
    restore: EndFn,
    save: StateFn,
}

fn load_api() -> Result<Api, String> {
    // SAFETY: the C signatures of these CPython 3.8+ functions.
    unsafe {
        let interp_main = api::<InterpFn>("PyInterpreterState_Main")?;
        Ok(Api {
            interp: interp_main() as usize,
            new_state: api::<NewStateFn>("PyThreadState_New")?,
            restore: api::<EndFn>("PyEval_RestoreThread")?,
            save: api::<StateFn>("PyEval_SaveThread")?,
        })
    }
}

/// On a thread that does not hold the GIL: what nuwa says. In crash mode a
/// wrong "held" is acted on by a block.
fn view() -> (bool, bool) {
    let held = nuwa_ffi::gil_is_held();
    if held && !crash_mode() {
        return (held, false);
    }
    // SAFETY: dropped at the end of this block, on this thread.
    let guard = unsafe { release(CPython) };
    let released = released(&guard);
    if released {
        // While "released": let the real holder run Python code.
        if let Some(hook) = HOOK.lock().unwrap().take() {
            hook();
        }
    }
    drop(guard);
    (held, released)
}

type Hook = Box<dyn FnOnce() + Send>;
static HOOK: std::sync::Mutex<Option<Hook>> = std::sync::Mutex::new(None);

/// Python thread A makes state X (so X.thread_id is A's), attaches it and
/// runs Python code on it (ctypes calls back into Rust: X's C frames are on
/// A's stack). There A detaches X (`PyEval_SaveThread`, as
/// `Py_BEGIN_ALLOW_THREADS` does) and hands it to thread B, which attaches it
/// (`PyEval_RestoreThread`) and holds the GIL in C. One thread at a time
/// uses X. On A, which holds nothing: what does nuwa say?
pub(crate) fn breaker_migrated_state(target: &Target) -> Outcome {
    if let Some(skip) = skip_on_debug_3_12(target) {
        return skip;
    }
    migrated(target, false)
}

/// As [`breaker_migrated_state`], but the state A hands over is its own
/// GIL-state state (no `PyThreadState_New`): the pointer comparison. On
/// 3.8-3.11 A's check says "held", as `PyGILState_Check` does: the state that
/// holds the GIL is the one the GIL-state API names as A's, and nothing safe
/// tells that another thread uses it (a documented limit; a block on A would
/// release B's GIL). So there it runs only with `NUWA_BREAKER=1`.
pub(crate) fn breaker_migrated_own_state(target: &Target) -> Outcome {
    if let Some(skip) = skip_on_debug_3_12(target) {
        return skip;
    }
    if target.version < (3, 12, 0)
        && let Some(skip) = gated()
    {
        return skip;
    }
    migrated(target, true)
}

fn migrated(target: &Target, own_state: bool) -> Outcome {
    let py = start(target)?;
    let api = load_api()?;
    let (to_b, from_a) = mpsc::channel::<usize>();
    let (b_holds_tx, b_holds_rx) = mpsc::channel::<()>();
    let (a_done_tx, a_done_rx) = mpsc::channel::<()>();
    let (b_gone_tx, b_gone_rx) = mpsc::channel::<()>();
    let outcome = nuwa_ffi::nogil! {
        let a = thread::spawn(move || -> Result<_, String> {
            let gil = py.gilstate_ensure();
            // SAFETY: a valid interpreter.
            let x = if own_state { std::ptr::null_mut() } else { unsafe { (api.new_state)(api.interp as *mut c_void) } };
            // SAFETY: A holds the GIL through its own state.
            let own = if own_state { std::ptr::null_mut() } else { unsafe { (api.save)() } };
            // SAFETY: X is fresh, attached by no thread.
            if !own_state { unsafe { (api.restore)(x) } };
            // SAFETY: A holds the GIL through X.
            let inside = unsafe {
                call_from_python_unchecked(py, || {
                    let held_on_x = nuwa_ffi::gil_is_held();
                    let saved = (api.save)() as usize;
                    let _ = to_b.send(saved);
                    let seen = b_holds_rx.recv_timeout(WAIT).map(|()| view());
                    let _ = a_done_tx.send(());
                    let _ = b_gone_rx.recv_timeout(WAIT);
                    (api.restore)(saved as *mut c_void);
                    (held_on_x, seen)
                })
            };
            if !own_state {
                // SAFETY: A holds the GIL through X.
                unsafe { (api.save)() };
                // SAFETY: A's own state.
                unsafe { (api.restore)(own) };
            }
            py.gilstate_release(gil);
            inside
        });
        let b = thread::spawn(move || -> Result<bool, String> {
            let x = from_a.recv_timeout(WAIT).map_err(|e| e.to_string())?;
            // SAFETY: X is detached (A saved it).
            unsafe { (api.restore)(x as *mut c_void) };
            let (go_tx, go_rx) = mpsc::channel::<()>();
            let (ran_tx, ran_rx) = mpsc::channel::<()>();
            *HOOK.lock().unwrap() = Some(Box::new(move || {
                let _ = go_tx.send(());
                let _ = ran_rx.recv_timeout(WAIT);
            }));
            let _ = b_holds_tx.send(());
            if go_rx.recv_timeout(Duration::from_millis(0)).is_err() {
                // Wait for A: either its block released (go) or it answered.
                loop {
                    if go_rx.try_recv().is_ok() {
                        eprintln!("B: A's block released; B runs Python code now");
                        // SAFETY: B believes it holds the GIL through X.
                        let r = unsafe { py.run_unchecked("nuwa_b = [i for i in range(100000)]") };
                        eprintln!("B: ran: {r:?}");
                        let _ = ran_tx.send(());
                    }
                    if a_done_rx.recv_timeout(Duration::from_millis(10)).is_ok() {
                        break;
                    }
                }
            }
            // B still holds the GIL? (PyGILState_Check is not about X, so
            // ask Python: run code.)
            // SAFETY: B holds the GIL through X (unless A released it).
            let ok = unsafe { py.run_unchecked("nuwa_b = 1") }.is_ok();
            // SAFETY: B holds the GIL through X.
            unsafe { (api.save)() };
            let _ = b_gone_tx.send(());
            Ok(ok)
        });
        let b = b.join().map_err(|_| "B panicked".to_string());
        let a = a.join().map_err(|_| "A panicked".to_string());
        (a, b)
    };
    let (held_on_x, seen) = outcome.0??;
    let b_ok = outcome.1??;
    let (a_held, a_released) = seen.map_err(|e| format!("B never held: {e}"))?;
    py.finalize()?;
    ensure!(
        !a_held && !a_released,
        "WRONG: while B held the GIL on X (detached by A with A's Python frames on it), \
         A saw gil_is_held {a_held}, block released {a_released}; B ran code after: {b_ok}; \
         (A held on X before: {held_on_x})"
    );
    Ok(Pass::Ok(format!(
        "A saw nothing held (held on X before {held_on_x}); B ok {b_ok}"
    )))
}

/// A stack for B inside A's frames.
#[repr(C, align(4096))]
struct StackBuf([u8; 2 << 20]);

struct BArgs {
    api: Api,
    x: usize,
    holds: mpsc::Sender<()>,
    answered: mpsc::Receiver<()>,
}

extern "C" fn b_main(arg: *mut c_void) -> *mut c_void {
    // SAFETY: `arg` is the boxed `BArgs` A passed.
    let args = unsafe { Box::from_raw(arg.cast::<BArgs>()) };
    let py = PY.get().expect("loaded");
    // SAFETY: X is fresh, attached by no thread.
    unsafe { (args.api.restore)(args.x as *mut c_void) };
    // SAFETY: B holds the GIL through X.
    let r = unsafe {
        call_from_python_unchecked(py, || {
            let (go_tx, go_rx) = mpsc::channel::<()>();
            let (ran_tx, ran_rx) = mpsc::channel::<()>();
            *HOOK.lock().unwrap() = Some(Box::new(move || {
                let _ = go_tx.send(());
                let _ = ran_rx.recv_timeout(WAIT);
            }));
            let _ = args.holds.send(());
            loop {
                if go_rx.try_recv().is_ok() {
                    eprintln!("B: A's block released; B runs Python code now");
                    let r = py.run_unchecked("nuwa_b = [i for i in range(100000)]");
                    eprintln!("B: ran: {r:?}");
                    let _ = ran_tx.send(());
                }
                if args
                    .answered
                    .recv_timeout(Duration::from_millis(10))
                    .is_ok()
                {
                    break true;
                }
            }
        })
    };
    // SAFETY: B holds the GIL through X.
    unsafe { (args.api.save)() };
    Box::into_raw(Box::new(r.unwrap_or(false))).cast()
}

/// Python thread A makes X for thread B; B's stack is a buffer in A's own
/// frame (`pthread_attr_setstack`, legal C). B runs Python code on X. On A,
/// which does not hold the GIL: what does nuwa say?
pub(crate) fn breaker_stack_inside_callers(target: &Target) -> Outcome {
    if let Some(skip) = skip_on_debug_3_12(target) {
        return skip;
    }
    let py = start(target)?;
    let api = load_api()?;
    let outcome = nuwa_ffi::nogil! {
        thread::Builder::new()
            .stack_size(16 << 20)
            .spawn(move || -> Result<(bool, bool), String> {
                let gil = py.gilstate_ensure();
                // SAFETY: a valid interpreter.
                let x = unsafe { (api.new_state)(api.interp as *mut c_void) } as usize;
                // SAFETY: A holds the GIL through its own state.
                let own = unsafe { (api.save)() };
                let r = run_b_on_my_stack(api, x);
                // SAFETY: A's own state.
                unsafe { (api.restore)(own) };
                py.gilstate_release(gil);
                r
            })
            .map_err(|e| e.to_string())?
            .join()
            .map_err(|_| "A panicked".to_string())?
    };
    let (held, released) = outcome?;
    py.finalize()?;
    ensure!(
        !held && !released,
        "WRONG: while B (its stack inside A's frame) ran Python code on X, A saw \
         gil_is_held {held}, block released {released}"
    );
    passed()
}

#[inline(never)]
fn run_b_on_my_stack(api: Api, x: usize) -> Result<(bool, bool), String> {
    let mut buf = Box::new(std::mem::MaybeUninit::<StackBuf>::uninit());
    let _ = &mut buf;
    // The stack must be in A's frame: a local.
    let mut local = std::mem::MaybeUninit::<StackBuf>::uninit();
    let stack = core::hint::black_box(local.as_mut_ptr());
    let (holds_tx, holds_rx) = mpsc::channel();
    let (ans_tx, ans_rx) = mpsc::channel();
    let args = Box::into_raw(Box::new(BArgs {
        api,
        x,
        holds: holds_tx,
        answered: ans_rx,
    }));
    // SAFETY: `pthread_t` is an integer (glibc) or a pointer (musl, macOS):
    // zero is a valid value of either, overwritten by `pthread_create`.
    let mut tid: libc::pthread_t = unsafe { std::mem::zeroed() };
    // SAFETY: attr initialised before use and destroyed after; the stack
    // outlives B (joined below).
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        #[cfg(target_os = "linux")]
        let rc =
            libc::pthread_attr_setstack(&mut attr, stack.cast(), std::mem::size_of::<StackBuf>());
        // The libc crate binds pthread_attr_setstack on Linux only (this
        // breaker scenario runs on Linux only).
        #[cfg(not(target_os = "linux"))]
        let rc = {
            let _ = stack;
            libc::ENOSYS
        };
        if rc != 0 {
            return Err(format!("setstack {rc}"));
        }
        let rc = libc::pthread_create(&mut tid, &attr, b_main, args.cast());
        libc::pthread_attr_destroy(&mut attr);
        if rc != 0 {
            return Err(format!("create {rc}"));
        }
    }
    let seen = holds_rx.recv_timeout(WAIT).map(|()| view());
    let _ = ans_tx.send(());
    let mut ret: *mut c_void = std::ptr::null_mut();
    // SAFETY: joined once.
    unsafe { libc::pthread_join(tid, &mut ret) };
    let _ = core::hint::black_box(&mut local);
    seen.map_err(|e| format!("B never held: {e}"))
}

/// A `GilHeld` token used as documented (made in a function Python code
/// called, which holds the GIL) in a legacy subinterpreter, called from
/// Python code and straight from C: in debug builds its check must not
/// panic there (on 3.8-3.11 the held check cannot tell who holds the GIL,
/// and the token's check is quiet where it cannot tell), and the block
/// releases the GIL (the token skips the held check), proven each time by a
/// main-interpreter Python thread that runs `gc.collect()` meanwhile. (The
/// other side, a token block where the check is sure that the GIL is not
/// held, panics: `gil_held_token`.)
pub(crate) fn breaker_token_in_subinterpreter(target: &Target) -> Outcome {
    let py = start(target)?;
    // SAFETY: the C signatures of these CPython 3.8+ functions.
    let (new_interpreter, end_interpreter, get, swap) = unsafe {
        (
            api::<StateFn>("Py_NewInterpreter")?,
            api::<EndFn>("Py_EndInterpreter")?,
            api::<StateFn>("PyThreadState_Get")?,
            api::<unsafe extern "C" fn(*mut c_void) -> *mut c_void>("PyThreadState_Swap")?,
        )
    };
    let (from_python_pipes, from_c_pipes) = (Pipes::new()?, Pipes::new()?);
    // The helpers belong to the main interpreter.
    py.run(&from_python_pipes.helper_code("nuwa_main_helper"))?;
    py.run(&from_c_pipes.helper_code("nuwa_main_helper_2"))?;
    // SAFETY: this thread holds the GIL.
    let main_state = unsafe { get() };
    // SAFETY: as in legacy_subinterpreter.
    let sub = unsafe { new_interpreter() };
    ensure!(!sub.is_null(), "Py_NewInterpreter failed");
    let token_block = |pipes: &Pipes| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(|info| eprintln!("(unexpected) {info}")));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: this thread holds the GIL (through the
            // subinterpreter's state), and the token stays in this call.
            let mut gil = unsafe { GilHeld::new() };
            nuwa_ffi::nogil!(&mut gil => { pipes.enter_and_wait(WAIT) })
        }))
        .map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        });
        std::panic::set_hook(previous);
        r
    };
    let from_python = call_from_python(py, || token_block(&from_python_pipes));
    let from_c = token_block(&from_c_pipes);
    py.run("nuwa_in_sub = 1")?;
    // SAFETY: as in legacy_subinterpreter.
    unsafe {
        end_interpreter(sub);
        swap(main_state);
    }
    py.finalize()?;
    for (how, r) in [("from Python code", from_python?), ("from C", from_c)] {
        match r {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!(
                    "{how}: the token block did not let the main interpreter's thread run \
                     within {WAIT:?}"
                ));
            }
            Err(msg) => {
                return Err(format!(
                    "WRONG: {how}, the token panicked in a legacy subinterpreter: {msg}"
                ));
            }
        }
    }
    Ok(Pass::Ok(
        "token blocks released, from Python code and from C, without a panic".into(),
    ))
}

// --- cost and signal stacks --------------------------------------------

static CALLBACK: std::sync::Mutex<Option<Box<dyn FnMut() + Send>>> = std::sync::Mutex::new(None);

extern "C" fn breaker_trampoline() {
    let f = CALLBACK.lock().unwrap().take();
    if let Some(mut f) = f {
        f();
    }
}

/// Runs `f` from Python code in the current (sub)interpreter, `depth`
/// Python calls deep.
fn at_depth(py: &Py, depth: u32, f: impl FnMut() + Send + 'static) -> Result<(), String> {
    *CALLBACK.lock().unwrap() = Some(Box::new(f));
    let code = format!(
        "import ctypes, sys\nsys.setrecursionlimit(100000)\n\
         _cb = ctypes.PYFUNCTYPE(None)({})\n\
         def _f(n):\n    if n == 0:\n        _cb()\n    else:\n        _f(n - 1)\n_f({depth})\n",
        breaker_trampoline as *const () as usize
    );
    // SAFETY: this thread holds the GIL (through the subinterpreter's state).
    unsafe { py.run_unchecked(&code) }
}

static ALT_RESULTS: std::sync::Mutex<Vec<bool>> = std::sync::Mutex::new(Vec::new());

extern "C" fn on_usr1(_: libc::c_int) {
    // Not async-signal-safe itself (a Mutex), but uncontended here; the
    // point is what gil_is_held does.
    let held = nuwa_ffi::gil_is_held();
    if let Ok(mut v) = ALT_RESULTS.try_lock() {
        v.push(held);
    }
}

/// In a legacy subinterpreter (3.10/3.11), from Python code: the cost of
/// the held check at several Python call depths, and the check called from
/// a signal handler on an alternate stack (see `strace -f -e openat`).
pub(crate) fn breaker_subinterp_cost(target: &Target) -> Outcome {
    if let Some(skip) = gated() {
        return skip;
    }
    let py = start(target)?;
    // SAFETY: the C signatures of these CPython 3.8+ functions.
    let (new_interpreter, end_interpreter, get, swap) = unsafe {
        (
            api::<StateFn>("Py_NewInterpreter")?,
            api::<EndFn>("Py_EndInterpreter")?,
            api::<StateFn>("PyThreadState_Get")?,
            api::<unsafe extern "C" fn(*mut c_void) -> *mut c_void>("PyThreadState_Swap")?,
        )
    };
    let mut report = Vec::new();
    {
        const N: u32 = 20_000;
        let start = std::time::Instant::now();
        let mut held = 0;
        for _ in 0..N {
            held += u32::from(core::hint::black_box(nuwa_ffi::gil_is_held()));
        }
        let ns = start.elapsed().as_nanos() / u128::from(N);
        report.push(format!(
            "main interpreter (fast path): {ns} ns/check (held {})",
            held == N
        ));
    }
    // SAFETY: this thread holds the GIL.
    let main_state = unsafe { get() };
    // SAFETY: as in legacy_subinterpreter.
    let sub = unsafe { new_interpreter() };
    ensure!(!sub.is_null(), "Py_NewInterpreter failed");
    let times = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    for depth in [1u32, 100, 1000, 3000] {
        let t = times.clone();
        at_depth(py, depth, move || {
            const N: u32 = 20_000;
            let start = std::time::Instant::now();
            let mut held = 0;
            for _ in 0..N {
                held += u32::from(core::hint::black_box(nuwa_ffi::gil_is_held()));
            }
            let ns = start.elapsed().as_nanos() / u128::from(N);
            t.lock().unwrap().push((depth, ns, held == N));
        })?;
    }
    for (depth, ns, held) in times.lock().unwrap().iter() {
        report.push(format!("depth {depth}: {ns} ns/check (held {held})"));
    }
    // The check from a signal handler on an alternate stack, 50 times.
    at_depth(py, 1, || {
        // SAFETY: a fresh alternate stack (leaked), and a handler that only
        // calls gil_is_held and records it.
        unsafe {
            let size = 1 << 16;
            let mem = Box::leak(vec![0u8; size].into_boxed_slice());
            let ss = libc::stack_t {
                ss_sp: mem.as_mut_ptr().cast(),
                ss_flags: 0,
                ss_size: size,
            };
            libc::sigaltstack(&ss, std::ptr::null_mut());
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_usr1 as *const () as usize;
            sa.sa_flags = libc::SA_ONSTACK;
            libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
            eprintln!("breaker: raising SIGUSR1 50 times (alternate stack)");
            for _ in 0..50 {
                libc::raise(libc::SIGUSR1);
            }
            eprintln!("breaker: done raising");
            let ss_off = libc::stack_t {
                ss_sp: std::ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            libc::sigaltstack(&ss_off, std::ptr::null_mut());
        }
    })?;
    let alt = ALT_RESULTS.lock().unwrap().clone();
    report.push(format!(
        "on the alternate stack: {} checks, held {}",
        alt.len(),
        alt.iter().filter(|h| **h).count()
    ));
    // SAFETY: as in legacy_subinterpreter.
    unsafe {
        end_interpreter(sub);
        swap(main_state);
    }
    py.finalize()?;
    Ok(Pass::Ok(report.join("; ")))
}

/// Python thread A makes 300 states (its thread id in each) and hands them
/// to B, which attaches each, runs Python code on it, and deletes it while
/// holding the GIL (`PyThreadState_Clear` + `PyThreadState_DeleteCurrent`).
/// Meanwhile A, without the GIL, calls the held check in a loop: never
/// "held", never a crash.
pub(crate) fn breaker_states_freed_under_the_check(target: &Target) -> Outcome {
    if let Some(skip) = skip_on_debug_3_12(target) {
        return skip;
    }
    let py = start(target)?;
    // SAFETY: the C signatures of these CPython 3.8+ functions.
    let (clear, delete_current) = unsafe {
        (
            api::<EndFn>("PyThreadState_Clear")?,
            api::<unsafe extern "C" fn()>("PyThreadState_DeleteCurrent")?,
        )
    };
    let api = load_api()?;
    const N: usize = 300;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let outcome = nuwa_ffi::nogil! {
        let (to_b, from_a) = mpsc::channel::<Vec<usize>>();
        let stop_a = stop.clone();
        let a = thread::spawn(move || {
            let gil = py.gilstate_ensure();
            let states: Vec<usize> = (0..N)
                // SAFETY: a valid interpreter.
                .map(|_| unsafe { (api.new_state)(api.interp as *mut c_void) } as usize)
                .collect();
            // SAFETY: A holds the GIL through its own state.
            let own = unsafe { (api.save)() };
            let _ = to_b.send(states);
            let (mut checks, mut held) = (0u64, 0u64);
            while !stop_a.load(std::sync::atomic::Ordering::Acquire) {
                checks += 1;
                held += u64::from(nuwa_ffi::gil_is_held());
            }
            // SAFETY: A's own state.
            unsafe { (api.restore)(own) };
            py.gilstate_release(gil);
            (checks, held)
        });
        let b = thread::spawn(move || -> Result<(), String> {
            let states = from_a.recv_timeout(WAIT).map_err(|e| e.to_string())?;
            for (i, x) in states.into_iter().enumerate() {
                // SAFETY: a fresh state, attached by no thread.
                unsafe { (api.restore)(x as *mut c_void) };
                if i % 3 == 0 {
                    // SAFETY: B holds the GIL through x.
                    unsafe { call_from_python_unchecked(py, || ()) }?;
                }
                // SAFETY: B holds the GIL through x; it is cleared and freed.
                unsafe {
                    clear(x as *mut c_void);
                    delete_current();
                }
            }
            Ok(())
        });
        let b = b.join().map_err(|_| "B panicked".to_string());
        stop.store(true, std::sync::atomic::Ordering::Release);
        let a = a.join().map_err(|_| "A panicked".to_string());
        (a, b)
    };
    let (checks, held) = outcome.0?;
    outcome.1??;
    py.finalize()?;
    ensure!(
        held == 0,
        "WRONG: A saw the GIL held {held} times of {checks}"
    );
    Ok(Pass::Ok(format!("{checks} checks on A, none held")))
}

static HANDLER_SAW: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_usr2(_: libc::c_int) {
    let held = nuwa_ffi::gil_is_held();
    HANDLER_SAW.store(i32::from(held), std::sync::atomic::Ordering::SeqCst);
}

/// The main thread runs a legacy subinterpreter and has a SIGUSR2 handler
/// that calls `gil_is_held()`; then it calls the check once. Against the
/// frame-chain check (3.10/3.11, removed), a debugger delivered SIGUSR2
/// inside the check's first `pthread_getattr_np`, and the handler's check
/// deadlocked on the C library's lock. The check now makes no call but
/// CPython's two getters; the scenario stays, behind `NUWA_BREAKER=1`, for
/// such experiments.
pub(crate) fn breaker_signal_in_first_check(target: &Target) -> Outcome {
    if let Some(skip) = gated() {
        return skip;
    }
    let py = start(target)?;
    // SAFETY: the C signatures of these CPython 3.8+ functions.
    let (new_interpreter, end_interpreter, get, swap) = unsafe {
        (
            api::<StateFn>("Py_NewInterpreter")?,
            api::<EndFn>("Py_EndInterpreter")?,
            api::<StateFn>("PyThreadState_Get")?,
            api::<unsafe extern "C" fn(*mut c_void) -> *mut c_void>("PyThreadState_Swap")?,
        )
    };
    // SAFETY: this thread holds the GIL.
    let main_state = unsafe { get() };
    // SAFETY: as in legacy_subinterpreter.
    let sub = unsafe { new_interpreter() };
    ensure!(!sub.is_null(), "Py_NewInterpreter failed");
    // SAFETY: a handler that calls gil_is_held and stores an atomic.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr2 as *const () as usize;
        libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut());
    }
    let held = nuwa_ffi::gil_is_held();
    // SAFETY: as in legacy_subinterpreter.
    unsafe {
        end_interpreter(sub);
        swap(main_state);
    }
    py.finalize()?;
    Ok(Pass::Ok(format!(
        "check {held}; handler saw {}",
        HANDLER_SAW.load(std::sync::atomic::Ordering::SeqCst)
    )))
}
