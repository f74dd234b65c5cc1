//! The public functions of `my_extension`.
//!
//! Each entry point is `extern "C"` and hands its body to `crate::call`, which
//! turns a panic into `PanicError`. Each body converts its arguments with the
//! GIL held, computes in one `nogil!` block that hides every Python pointer,
//! and converts the result once the GIL is back.

use core::mem::MaybeUninit;

use nuwa_ffi::{CPython, ReleaseIf, SignalCheck};
use pyo3_ffi::*;

use crate::args::{CallArgs, Signature};
use crate::py::{Owned, PyResult, raise};
use crate::{compute, method, progress};

/// The entry points, for the module's method table.
pub(crate) const METHODS: [PyMethodDef; 5] = [
    method(
        c"compute_pi",
        compute_pi,
        c"compute_pi($module, /, iterations, seed=0, *, release=True, progress=None)\n--\n\n\
          Estimate pi from `iterations` random points (Monte Carlo), with the GIL released.\n\n\
          The generator is a PCG64 seeded from `seed` on every call: the same arguments\n\
          give the same result in any thread, in any order.\n\n\
          `progress`, if given, is called with the fraction done (a float in (0, 1], the\n\
          last 1.0) at most 100 times, with the GIL held; if it raises, the computation\n\
          stops and the exception propagates. Ctrl-C (KeyboardInterrupt) stops the\n\
          computation within about 0.1 s when it runs on the main thread.",
    ),
    method(
        c"process_image",
        process_image,
        c"process_image($module, /, data, *, release=True)\n--\n\n\
          Return `data` with every byte inverted (b ^ 255), computed with the GIL released.\n\n\
          `data` must be `bytes`: a mutable buffer could change while the GIL is released.",
    ),
    method(
        c"expensive_computation",
        expensive_computation,
        c"expensive_computation($module, /, n, *, release=True)\n--\n\n\
          Return the sum of i*i for 0 <= i < n, computed in a loop with the GIL released.\n\n\
          Raises OverflowError if the sum does not fit in 64 bits (n > 3810778).",
    ),
    method(
        c"good_pattern",
        good_pattern,
        c"good_pattern($module, /, data, *, release=True)\n--\n\n\
          Return sqrt(sum(x * x for x in data)): convert everything, then one block\n\
          without the GIL for the whole loop.",
    ),
    method(
        c"bad_pattern",
        bad_pattern,
        c"bad_pattern($module, /, data, *, release=True)\n--\n\n\
          Same result as good_pattern, but releases and retakes the GIL for every\n\
          element: shows what a block per tiny step costs. Do not copy.",
    ),
];

/// The `extern "C"` shape of every function: `METH_VARARGS | METH_KEYWORDS`.
/// The body gets the arguments, and the module object too if it asks.
macro_rules! entry_point {
    ($(#[$doc:meta])* $name:ident => $body:path) => {
        $crate::functions::entry_point!($(#[$doc])* $name => |_module, call_args| $body(call_args));
    };
    ($(#[$doc:meta])* $name:ident => |$module:ident, $call_args:ident| $body:expr) => {
        $(#[$doc])*
        ///
        /// # Safety
        ///
        /// Called by CPython, with the GIL held, as a `METH_VARARGS |
        /// METH_KEYWORDS` function of this module.
        unsafe extern "C" fn $name(
            module: *mut PyObject,
            args: *mut PyObject,
            kwargs: *mut PyObject,
        ) -> *mut PyObject {
            let $call_args = $crate::args::CallArgs { args, kwargs };
            let $module = module;
            // SAFETY: CPython calls this with the GIL held, our module as
            // `module`, and the arguments of a VARARGS | KEYWORDS call,
            // which is what the body requires.
            unsafe { $crate::call(module, || $body) }
        }
    };
}
pub(crate) use entry_point;

entry_point!(
    /// `compute_pi(iterations, seed=0, *, release=True, progress=None) -> float`
    compute_pi => compute_pi_body
);
entry_point!(
    /// `process_image(data, *, release=True) -> bytes`
    process_image => process_image_body
);
entry_point!(
    /// `expensive_computation(n, *, release=True) -> int`
    expensive_computation => expensive_computation_body
);
entry_point!(
    /// `good_pattern(data, *, release=True) -> float`
    good_pattern => good_pattern_body
);
entry_point!(
    /// `bad_pattern(data, *, release=True) -> float`
    bad_pattern => bad_pattern_body
);

static COMPUTE_PI: Signature = Signature {
    name: "compute_pi",
    params: &[c"iterations", c"seed", c"release", c"progress"],
    positional: 2,
    required: 1,
};

/// The body of `compute_pi`.
///
/// The block takes the GIL back for a moment (`with_gil!`) to call
/// `progress`, and checks for signals every [`progress::STEP`] points; both
/// can leave the function from inside the block with `?`, an exception set.
///
/// # Safety
///
/// The GIL is held and `call_args` is what CPython passed.
unsafe fn compute_pi_body(call_args: CallArgs) -> PyResult<Owned> {
    // SAFETY: the GIL is held and the arguments are live for the call.
    let (iterations, seed, release, callback) = unsafe {
        let args = COMPUTE_PI.parse::<4>(call_args)?;
        (
            args.u64("iterations", None, 1)?,
            args.u64("seed", Some(0), 0)?,
            args.flag("release", true)?,
            args.callable_or_none("progress")?,
        )
    };
    let reporting = callback.is_some();
    if reporting {
        // SAFETY: the GIL is held.
        unsafe { progress::can_call_back()? };
    }
    let reports = if reporting { progress::MAX_REPORTS } else { 1 };
    // With release=False, `ReleaseIf` keeps the GIL for the block and
    // `with_gil!` runs its part at once.
    let pi = nuwa_ffi::nogil!(ReleaseIf::new(CPython, release), hide(call_args, callback) => {
        let mut estimate = compute::PiEstimate::new(seed);
        let mut signals = SignalCheck::new();
        for end in progress::report_points(iterations, reports) {
            while estimate.thrown() < end {
                estimate.throw((end - estimate.thrown()).min(progress::STEP));
                // Ctrl-C: leaves the function, KeyboardInterrupt set.
                signals.check(&mut released!())?;
            }
            if reporting {
                let fraction = estimate.thrown() as f64 / iterations as f64;
                with_gil! {
                    if let Some(callback) = callback {
                        // SAFETY: the GIL is held in this part; `callback`
                        // is ours until the end of the function. If it
                        // raises, `?` leaves the function: the GIL is
                        // released again, then taken back by the block.
                        unsafe { progress::report(callback, fraction)? };
                    }
                }
                .expect(progress::HELD);
            }
        }
        estimate.pi()
    });
    // SAFETY: the GIL is held again.
    unsafe { Owned::new(PyFloat_FromDouble(pi)) }
}

static PROCESS_IMAGE: Signature = Signature {
    name: "process_image",
    params: &[c"data", c"release"],
    positional: 1,
    required: 1,
};

/// The body of `process_image`.
///
/// # Safety
///
/// The GIL is held and `call_args` is what CPython passed.
unsafe fn process_image_body(call_args: CallArgs) -> PyResult<Owned> {
    // SAFETY: the GIL is held and the arguments are live for the call. The
    // result is a new `bytes` of the same length, not yet initialised and
    // not yet seen by anyone else, so we may write its buffer (only the
    // empty `bytes`, into which nothing is written, can be shared).
    let (input, release, result, output) = unsafe {
        let args = PROCESS_IMAGE.parse::<2>(call_args)?;
        let input = args.bytes("data")?;
        let release = args.flag("release", true)?;
        let result = Owned::new(PyBytes_FromStringAndSize(
            core::ptr::null(),
            input.len() as Py_ssize_t,
        ))?;
        let buffer = PyBytes_AsString(result.as_ptr()).cast::<MaybeUninit<u8>>();
        let output = core::slice::from_raw_parts_mut(buffer, input.len());
        (input, release, result, output)
    };
    nuwa_ffi::nogil!(ReleaseIf::new(CPython, release), hide(call_args, result) => {
        compute::invert(input, output);
    });
    Ok(result)
}

static EXPENSIVE_COMPUTATION: Signature = Signature {
    name: "expensive_computation",
    params: &[c"n", c"release"],
    positional: 1,
    required: 1,
};

/// The body of `expensive_computation`.
///
/// # Safety
///
/// The GIL is held and `call_args` is what CPython passed.
unsafe fn expensive_computation_body(call_args: CallArgs) -> PyResult<Owned> {
    // SAFETY: the GIL is held and the arguments are live for the call.
    let (n, release) = unsafe {
        let args = EXPENSIVE_COMPUTATION.parse::<2>(call_args)?;
        (args.u64("n", None, 0)?, args.flag("release", true)?)
    };
    let total = nuwa_ffi::nogil!(ReleaseIf::new(CPython, release), hide(call_args) => {
        compute::sum_of_squares_below(n)
    });
    // SAFETY: the GIL is held again.
    unsafe {
        match total {
            Some(total) => Owned::new(PyLong_FromUnsignedLongLong(total)),
            None => {
                let message = format!(
                    "expensive_computation({n}): the sum of i*i for i < {n} does not fit \
                     in 64 bits (the largest n that fits is 3810778)"
                );
                Err(raise(PyExc_OverflowError, &message))
            }
        }
    }
}

static GOOD_PATTERN: Signature = Signature {
    name: "good_pattern",
    params: &[c"data", c"release"],
    positional: 1,
    required: 1,
};

/// The body of `good_pattern`.
///
/// # Safety
///
/// The GIL is held and `call_args` is what CPython passed.
unsafe fn good_pattern_body(call_args: CallArgs) -> PyResult<Owned> {
    // SAFETY: the GIL is held and the arguments are live for the call.
    let (values, release) = unsafe {
        let args = GOOD_PATTERN.parse::<2>(call_args)?;
        (args.floats("data")?, args.flag("release", true)?)
    };
    // Good: everything is converted already; one block for the whole loop.
    let norm = nuwa_ffi::nogil!(ReleaseIf::new(CPython, release), hide(call_args) => {
        compute::norm(&values)
    });
    // SAFETY: the GIL is held again.
    unsafe { Owned::new(PyFloat_FromDouble(norm)) }
}

static BAD_PATTERN: Signature = Signature {
    name: "bad_pattern",
    params: &[c"data", c"release"],
    positional: 1,
    required: 1,
};

/// The body of `bad_pattern`.
///
/// # Safety
///
/// The GIL is held and `call_args` is what CPython passed.
unsafe fn bad_pattern_body(call_args: CallArgs) -> PyResult<Owned> {
    // SAFETY: the GIL is held and the arguments are live for the call.
    let (values, release) = unsafe {
        let args = BAD_PATTERN.parse::<2>(call_args)?;
        (args.floats("data")?, args.flag("release", true)?)
    };
    // Bad: one release and one reacquire per element. Each reacquire may wait
    // for another thread to hand the GIL back; the work per block is one
    // multiply-add. Same order of additions as `compute::norm`.
    let mut sum = 0.0;
    for &x in &values {
        nuwa_ffi::nogil!(ReleaseIf::new(CPython, release), hide(call_args) => {
            sum += x * x;
        });
    }
    let norm = sum.sqrt();
    // SAFETY: the GIL is held again.
    unsafe { Owned::new(PyFloat_FromDouble(norm)) }
}
