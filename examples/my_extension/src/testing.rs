//! Hooks for the test suite: **not public API**.
//!
//! Their names start with `_test_`; they may change or go away at any time.
//! They let the tests prove things that timing cannot: that a block really
//! released the GIL (another Python thread ran while it waited), that a
//! panic comes back as `PanicError`, and that threads still inside a block
//! at interpreter shutdown do not crash the process.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use nuwa_ffi::{CPython, ReleaseIf, SignalCheck};
use pyo3_ffi::*;

use crate::args::{CallArgs, Signature};
use crate::functions::entry_point;
use crate::method;
use crate::py::{Owned, PyResult, bool_object, none_object, raise};

/// The hooks, for the module's method table.
pub(crate) const METHODS: [PyMethodDef; 11] = [
    method(
        c"_test_panic",
        test_panic,
        c"_test_panic($module, /, message, *, in_place=False)\n--\n\n\
          Not public API. Panic with `message` inside a block that released the GIL.\n\n\
          By default the block is the strict form nuwa_ffi::nogil, run by Panicked::catch;\n\
          with in_place=True it is a nogil! block and the panic is caught at the function's\n\
          edge. Either way it raises PanicError(message).",
    ),
    method(
        c"_test_new_flag",
        test_new_flag,
        c"_test_new_flag($module, /)\n--\n\n\
          Not public API. Make a new, unset flag and return its id. Flags are process-wide\n\
          (shared by all interpreters) and never freed.",
    ),
    method(
        c"_test_set_flag",
        test_set_flag,
        c"_test_set_flag($module, /, flag)\n--\n\n\
          Not public API. Set a flag. Calling it needs the GIL, which is the point.",
    ),
    method(
        c"_test_flag_is_set",
        test_flag_is_set,
        c"_test_flag_is_set($module, /, flag)\n--\n\n\
          Not public API. Whether a flag is set.",
    ),
    method(
        c"_test_wait_for_flag",
        test_wait_for_flag,
        c"_test_wait_for_flag($module, /, flag, timeout, *, release=True, entered=None)\n--\n\n\
          Not public API. Inside one block, set the flag `entered` (if given), then wait\n\
          until `flag` is set, for at most `timeout` seconds. Return True if it was seen.\n\n\
          Another Python thread can set the flag only if the block released the GIL;\n\
          with release=False it cannot, and this returns False after the timeout.",
    ),
    method(
        c"_test_sleep_in_block",
        test_sleep_in_block,
        c"_test_sleep_in_block($module, /, seconds, *, entered=None)\n--\n\n\
          Not public API. Inside a block that released the GIL, set the flag `entered`\n\
          (if given), then sleep for `seconds`.",
    ),
    method(
        c"_test_block_released",
        test_block_released,
        c"_test_block_released($module, /)\n--\n\n\
          Not public API. Run an empty block and return whether it released the GIL.",
    ),
    method(
        c"_test_nuwa_info",
        test_nuwa_info,
        c"_test_nuwa_info($module, /)\n--\n\n\
          Not public API. What nuwa_ffi found in this process, in one line.",
    ),
    method(
        c"_test_work_until_interrupted",
        test_work_until_interrupted,
        c"_test_work_until_interrupted($module, /, steps, *, entered=None, check=True,\n\
          interval=0.01, strict=False, until=None)\n--\n\n\
          Not public API. Inside one block that released the GIL: set the flag `entered`\n\
          (if given), then do `steps` steps of work (a 100 us sleep each), checking for\n\
          signals after each (a SignalCheck every `interval` s) unless check=False, and\n\
          stopping early once the flag `until` (if given) is set, read before each check.\n\
          Return the steps done; if a signal handler raised, its exception propagates and\n\
          _test_work_done() tells how far the work got. strict=True uses the closure form\n\
          (nuwa_ffi::nogil) instead of the in-place nogil! block.",
    ),
    method(
        c"_test_work_done",
        test_work_done,
        c"_test_work_done($module, /)\n--\n\n\
          Not public API. The steps done by the last _test_work_until_interrupted call on\n\
          this thread.",
    ),
    method(
        c"_test_module_slots",
        test_module_slots,
        c"_test_module_slots($module, /)\n--\n\n\
          Not public API. The module slots declared for the running CPython, by name:\n\
          'exec', then 'multiple_interpreters' (3.12+) and 'gil' (3.13+).",
    ),
];

entry_point!(test_panic => |module, call_args| panic_body(module, call_args));
entry_point!(test_new_flag => new_flag_body);
entry_point!(test_set_flag => set_flag_body);
entry_point!(test_flag_is_set => flag_is_set_body);
entry_point!(test_wait_for_flag => wait_for_flag_body);
entry_point!(test_sleep_in_block => sleep_in_block_body);
entry_point!(test_block_released => block_released_body);
entry_point!(test_nuwa_info => nuwa_info_body);
entry_point!(test_module_slots => module_slots_body);
entry_point!(test_work_until_interrupted => work_until_interrupted_body);
entry_point!(test_work_done => work_done_body);

static PANIC: Signature = Signature {
    name: "_test_panic",
    params: &[c"message", c"in_place"],
    positional: 1,
    required: 1,
};

/// The body of `_test_panic`.
///
/// # Safety
///
/// The GIL is held; `module` and `call_args` are what CPython passed.
unsafe fn panic_body(module: *mut PyObject, call_args: CallArgs) -> PyResult<Owned> {
    // SAFETY: the GIL is held and the arguments are live for the call.
    let (message, in_place) = unsafe {
        let args = PANIC.parse::<2>(call_args)?;
        (args.string("message")?, args.flag("in_place", false)?)
    };
    if in_place {
        // Unwinds out of the block (whose guard takes the GIL back) and out
        // of this function, to `call`, which raises `PanicError`.
        nuwa_ffi::nogil!(hide(module, call_args) => {
            panic!("{message}");
        });
    }
    let caught = nuwa_ffi::Panicked::catch(|| nuwa_ffi::nogil(|_| -> () { panic!("{message}") }));
    let message = match &caught {
        Ok(()) => "no panic",
        Err(panicked) => panicked.message().unwrap_or("panic"),
    };
    // SAFETY: the GIL is held again (the block took it back before
    // `Panicked::catch` returned) and
    // `module` is our module.
    Err(unsafe { crate::raise_panic(module, message) })
}

/// The flags of `_test_new_flag`, by id. Process-wide: every interpreter
/// that imports the module shares them, which lets a test started in one
/// interpreter be finished from another.
static FLAGS: Mutex<Vec<Arc<AtomicBool>>> = Mutex::new(Vec::new());

fn flags() -> std::sync::MutexGuard<'static, Vec<Arc<AtomicBool>>> {
    FLAGS.lock().unwrap_or_else(PoisonError::into_inner)
}

static NEW_FLAG: Signature = Signature {
    name: "_test_new_flag",
    params: &[],
    positional: 0,
    required: 0,
};

/// The body of `_test_new_flag`.
///
/// # Safety
///
/// The GIL is held and `call_args` is what CPython passed.
unsafe fn new_flag_body(call_args: CallArgs) -> PyResult<Owned> {
    // SAFETY: the GIL is held and the arguments are live for the call.
    unsafe { NEW_FLAG.parse::<0>(call_args)? };
    let id = {
        let mut flags = flags();
        flags.push(Arc::new(AtomicBool::new(false)));
        flags.len() - 1
    };
    // SAFETY: the GIL is held.
    unsafe { Owned::new(PyLong_FromUnsignedLongLong(id as u64)) }
}

/// The flag with this id, or `ValueError`.
///
/// # Safety
///
/// The GIL is held.
unsafe fn flag(id: u64) -> PyResult<Arc<AtomicBool>> {
    let found = usize::try_from(id)
        .ok()
        .and_then(|i| flags().get(i).cloned());
    found.ok_or_else(|| {
        // SAFETY: the GIL is held.
        unsafe { raise(PyExc_ValueError, &format!("no flag with id {id}")) }
    })
}

static SET_FLAG: Signature = Signature {
    name: "_test_set_flag",
    params: &[c"flag"],
    positional: 1,
    required: 1,
};

/// The body of `_test_set_flag`.
///
/// # Safety
///
/// The GIL is held and `call_args` is what CPython passed.
unsafe fn set_flag_body(call_args: CallArgs) -> PyResult<Owned> {
    // SAFETY: the GIL is held and the arguments are live for the call.
    unsafe {
        let args = SET_FLAG.parse::<1>(call_args)?;
        flag(args.u64("flag", None, 0)?)?.store(true, Ordering::Release);
        Owned::new(none_object())
    }
}

static FLAG_IS_SET: Signature = Signature {
    name: "_test_flag_is_set",
    params: &[c"flag"],
    positional: 1,
    required: 1,
};

/// The body of `_test_flag_is_set`.
///
/// # Safety
///
/// The GIL is held and `call_args` is what CPython passed.
unsafe fn flag_is_set_body(call_args: CallArgs) -> PyResult<Owned> {
    // SAFETY: the GIL is held and the arguments are live for the call.
    unsafe {
        let args = FLAG_IS_SET.parse::<1>(call_args)?;
        let set = flag(args.u64("flag", None, 0)?)?.load(Ordering::Acquire);
        Owned::new(bool_object(set))
    }
}

/// A `timeout`/`seconds` argument as a `Duration` (finite, `>= 0`, and not
/// so large that a deadline cannot be computed).
///
/// # Safety
///
/// The GIL is held.
unsafe fn duration(name: &str, seconds: f64) -> PyResult<Duration> {
    match Duration::try_from_secs_f64(seconds) {
        Ok(d) if Instant::now().checked_add(d).is_some() => Ok(d),
        _ => {
            // As Python prints floats: `nan`, `inf`, `-1.0`.
            let text = if seconds.is_nan() {
                String::from("nan")
            } else {
                format!("{seconds:?}")
            };
            let message = format!("{name} must be a finite number of seconds >= 0, got {text}");
            // SAFETY: the GIL is held.
            Err(unsafe { raise(PyExc_ValueError, &message) })
        }
    }
}

static WAIT_FOR_FLAG: Signature = Signature {
    name: "_test_wait_for_flag",
    params: &[c"flag", c"timeout", c"release", c"entered"],
    positional: 2,
    required: 2,
};

/// The body of `_test_wait_for_flag`.
///
/// # Safety
///
/// The GIL is held and `call_args` is what CPython passed.
unsafe fn wait_for_flag_body(call_args: CallArgs) -> PyResult<Owned> {
    // SAFETY: the GIL is held and the arguments are live for the call.
    let (flag, timeout, release, entered) = unsafe {
        let args = WAIT_FOR_FLAG.parse::<4>(call_args)?;
        let flag = flag(args.u64("flag", None, 0)?)?;
        let timeout = duration("timeout", args.f64("timeout")?)?;
        let release = args.flag("release", true)?;
        let entered = match args.u64_or_none("entered")? {
            Some(id) => Some(self::flag(id)?),
            None => None,
        };
        (flag, timeout, release, entered)
    };
    let seen = nuwa_ffi::nogil!(ReleaseIf::new(CPython, release), hide(call_args) => {
        let deadline = Instant::now() + timeout;
        if let Some(entered) = &entered {
            entered.store(true, Ordering::Release);
        }
        loop {
            if flag.load(Ordering::Acquire) {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            thread::sleep((deadline - now).min(Duration::from_micros(200)));
        }
    });
    // SAFETY: the GIL is held again.
    unsafe { Owned::new(bool_object(seen)) }
}

static SLEEP_IN_BLOCK: Signature = Signature {
    name: "_test_sleep_in_block",
    params: &[c"seconds", c"entered"],
    positional: 1,
    required: 1,
};

/// The body of `_test_sleep_in_block`.
///
/// # Safety
///
/// The GIL is held and `call_args` is what CPython passed.
unsafe fn sleep_in_block_body(call_args: CallArgs) -> PyResult<Owned> {
    // SAFETY: the GIL is held and the arguments are live for the call.
    let (seconds, entered) = unsafe {
        let args = SLEEP_IN_BLOCK.parse::<2>(call_args)?;
        let seconds = duration("seconds", args.f64("seconds")?)?;
        let entered = match args.u64_or_none("entered")? {
            Some(id) => Some(flag(id)?),
            None => None,
        };
        (seconds, entered)
    };
    nuwa_ffi::nogil!(hide(call_args) => {
        if let Some(entered) = &entered {
            entered.store(true, Ordering::Release);
        }
        thread::sleep(seconds);
    });
    // SAFETY: the GIL is held again.
    unsafe { Owned::new(none_object()) }
}

static BLOCK_RELEASED: Signature = Signature {
    name: "_test_block_released",
    params: &[],
    positional: 0,
    required: 0,
};

/// The body of `_test_block_released`.
///
/// # Safety
///
/// The GIL is held and `call_args` is what CPython passed.
unsafe fn block_released_body(call_args: CallArgs) -> PyResult<Owned> {
    // SAFETY: the GIL is held and the arguments are live for the call.
    unsafe { BLOCK_RELEASED.parse::<0>(call_args)? };
    // SAFETY: the guard is a temporary, dropped (taking the GIL back) at
    // the end of this statement, on this thread.
    let released = nuwa_ffi::nuwa_core::__private::released(&unsafe {
        nuwa_ffi::nuwa_core::__private::release(nuwa_ffi::CPython)
    });
    // SAFETY: the GIL is held again.
    unsafe { Owned::new(bool_object(released)) }
}

static NUWA_INFO: Signature = Signature {
    name: "_test_nuwa_info",
    params: &[],
    positional: 0,
    required: 0,
};

/// The body of `_test_nuwa_info`.
///
/// # Safety
///
/// The GIL is held and `call_args` is what CPython passed.
unsafe fn nuwa_info_body(call_args: CallArgs) -> PyResult<Owned> {
    // SAFETY: the GIL is held and the arguments are live for the call.
    unsafe { NUWA_INFO.parse::<0>(call_args)? };
    let info = nuwa_ffi::init().to_string();
    // SAFETY: the GIL is held; pointer and length describe `info`.
    unsafe {
        Owned::new(PyUnicode_FromStringAndSize(
            info.as_ptr().cast(),
            info.len() as Py_ssize_t,
        ))
    }
}

static MODULE_SLOTS: Signature = Signature {
    name: "_test_module_slots",
    params: &[],
    positional: 0,
    required: 0,
};

/// The body of `_test_module_slots`.
///
/// # Safety
///
/// The GIL is held and `call_args` is what CPython passed.
unsafe fn module_slots_body(call_args: CallArgs) -> PyResult<Owned> {
    // SAFETY: the GIL is held and the arguments are live for the call.
    unsafe { MODULE_SLOTS.parse::<0>(call_args)? };
    let names: Vec<&core::ffi::CStr> = crate::declared_slots()
        .into_iter()
        .map(|id| {
            if id == Py_mod_exec {
                c"exec"
            } else if id == Py_mod_multiple_interpreters {
                c"multiple_interpreters"
            } else if id == Py_mod_gil {
                c"gil"
            } else {
                c"unknown"
            }
        })
        .collect();
    // SAFETY: the GIL is held; every new reference is owned by an `Owned`
    // (`PyList_Append` does not steal).
    unsafe {
        let list = Owned::new(PyList_New(0))?;
        for name in names {
            let name = Owned::new(PyUnicode_FromString(name.as_ptr()))?;
            if PyList_Append(list.as_ptr(), name.as_ptr()) < 0 {
                return Err(crate::py::Raised);
            }
        }
        Ok(list)
    }
}

thread_local! {
    /// The steps done by the last `_test_work_until_interrupted` call on
    /// this thread (kept up to date inside the block, so that it is right
    /// however the block is left).
    // It is const already: clippy 1.97 says otherwise on windows-gnu.
    #[allow(clippy::missing_const_for_thread_local)]
    static WORK_DONE: Cell<u64> = const { Cell::new(0) };
}

static WORK_UNTIL_INTERRUPTED: Signature = Signature {
    name: "_test_work_until_interrupted",
    params: &[
        c"steps",
        c"entered",
        c"check",
        c"interval",
        c"strict",
        c"until",
    ],
    positional: 1,
    required: 1,
};

/// One step of `_test_work_until_interrupted`'s work.
const WORK_STEP: Duration = Duration::from_micros(100);

/// The body of `_test_work_until_interrupted`.
///
/// # Safety
///
/// The GIL is held and `call_args` is what CPython passed.
unsafe fn work_until_interrupted_body(call_args: CallArgs) -> PyResult<Owned> {
    // SAFETY: the GIL is held and the arguments are live for the call.
    let (steps, entered, check, interval, strict, until) = unsafe {
        let args = WORK_UNTIL_INTERRUPTED.parse::<6>(call_args)?;
        let steps = args.u64("steps", None, 0)?;
        let entered = match args.u64_or_none("entered")? {
            Some(id) => Some(flag(id)?),
            None => None,
        };
        let check = args.flag("check", true)?;
        let interval = duration("interval", args.f64_or("interval", 0.01)?)?;
        let until = match args.u64_or_none("until")? {
            Some(id) => Some(flag(id)?),
            None => None,
        };
        (
            steps,
            entered,
            check,
            interval,
            args.flag("strict", false)?,
            until,
        )
    };
    let told_to_stop = || until.as_ref().is_some_and(|f| f.load(Ordering::Acquire));
    let mut signals = SignalCheck::every(interval);
    WORK_DONE.set(0);
    let done = if strict {
        // The strict form: the closure's argument takes the GIL back, and
        // `?` leaves the closure only.
        nuwa_ffi::nogil(|gil| {
            if let Some(entered) = &entered {
                entered.store(true, Ordering::Release);
            }
            let mut done = steps;
            for step in 1..=steps {
                thread::sleep(WORK_STEP);
                WORK_DONE.set(step);
                // Read before the check: a signal that came before `until`
                // was set is seen by this check (if it is due).
                let stop = told_to_stop();
                if check {
                    signals.check(gil)?;
                }
                if stop {
                    done = step;
                    break;
                }
            }
            Ok::<u64, nuwa_ffi::Interrupted>(done)
        })?
    } else {
        // In place: `?` leaves this function from inside the block.
        nuwa_ffi::nogil!(hide(call_args) => {
            if let Some(entered) = &entered {
                entered.store(true, Ordering::Release);
            }
            let mut done = steps;
            for step in 1..=steps {
                thread::sleep(WORK_STEP);
                WORK_DONE.set(step);
                // Read before the check: a signal that came before `until`
                // was set is seen by this check (if it is due).
                let stop = told_to_stop();
                if check {
                    signals.check(&mut released!())?;
                }
                if stop {
                    done = step;
                    break;
                }
            }
            done
        })
    };
    // SAFETY: the GIL is held again.
    unsafe { Owned::new(PyLong_FromUnsignedLongLong(done)) }
}

static WORK_DONE_ARGS: Signature = Signature {
    name: "_test_work_done",
    params: &[],
    positional: 0,
    required: 0,
};

/// The body of `_test_work_done`.
///
/// # Safety
///
/// The GIL is held and `call_args` is what CPython passed.
unsafe fn work_done_body(call_args: CallArgs) -> PyResult<Owned> {
    // SAFETY: the GIL is held and the arguments are live for the call.
    unsafe { WORK_DONE_ARGS.parse::<0>(call_args)? };
    // SAFETY: the GIL is held.
    unsafe { Owned::new(PyLong_FromUnsignedLongLong(WORK_DONE.get())) }
}
