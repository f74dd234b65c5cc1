#![doc = include_str!("../README.md")]
#![deny(missing_docs, missing_debug_implementations)]

// Where the code is. The GIL is released and taken back in one place,
// `block` (`CPython`'s `GilOps`: every block's release and take-back),
// which follows the `plan` the lookup made once:
// - `plan`: the per-block plan (which CPython functions, which way);
// - `resolve`: the one-time lookup (`resolve/mod.rs`), the version policy
//   that makes the plan (`resolve/decide.rs`: pure, tested with fake symbol
//   tables), the platform code (`resolve/unix.rs`, `windows.rs`,
//   `loaded.rs`), the report (`resolve/report.rs`: `Resolution`);
// - `shutdown`: interpreter shutdown (the C frame of `restore_shim.c`, its
//   entries, parking); `capi`: CPython's function types; `sys`: the C
//   library's declarations (Unix);
// - `token`: `GilHeld`; `signals`: Ctrl-C checks; `embed`; `stats`.
mod block;
mod capi;
pub mod embed;
mod plan;
mod resolve;
mod shutdown;
mod signals;
#[cfg(feature = "stats")]
pub mod stats;
#[cfg(unix)]
mod sys;
// The counters are 64-bit atomics. Every target nuwa is tested on has them
// (x86_64, i686, aarch64, s390x, and armv7 too); 32-bit PowerPC, MIPS and
// SPARC, among others, do not: there the feature says so instead of failing
// in the middle of the module.
#[cfg(all(feature = "stats", not(target_has_atomic = "64")))]
compile_error!(
    "nuwa-ffi's `stats` feature needs 64-bit atomics (AtomicU64), which this \
     target lacks: build without it"
);
mod token;

pub use block::{CPython, SavedThreadState, gil_is_held};
pub use resolve::{HeldCheck, Resolution, RestorePath, Status, Via};
pub use signals::{Interrupted, SignalCheck};
pub use token::GilHeld;

pub use nuwa_core::{
    self, GilOps, GilUnavailable, Guard, HiddenWhileGilReleased, Nogil, ReleaseIf, Released,
    WithGil, mock, released, with_gil,
};
pub use nuwa_std::{self, Panicked, ThreadCheckedMock};

/// Finds CPython's functions now instead of at the first block, and says
/// what was found.
///
/// Blocks resolve on first use anyway; call this from `PyInit_*` to move the
/// cost (a few `dlsym` calls) out of the first call, or to log the result.
/// An answer that can release is final. One that cannot (no Python yet) is
/// kept only as long as the process loads and unloads no library: after a
/// `dlopen`, the next block or call looks again, so a libpython loaded later
/// is found (where the C library counts loaded objects: glibc, musl, the
/// BSDs; elsewhere the first answer stays). The `Display` form says which.
///
/// # Examples
///
/// ```
/// let found = nuwa_ffi::init();
/// // In a plain Rust test binary there is no interpreter:
/// println!("{found}");
/// if !found.python_found() {
///     assert!(!found.can_release());
/// }
/// ```
pub fn init() -> &'static Resolution {
    resolve::resolution()
}

/// Runs `f` with the GIL of the CPython interpreter released (if this thread
/// holds it) and takes the GIL back before returning: the strict form.
///
/// [`Nogil::nogil`] with the [`CPython`] backend. The closure and its result
/// must be `Send`, so the closure cannot capture a Python handle (a raw
/// `*mut PyObject`, PyO3's `Python<'py>` or `Bound<'py, T>`): the compiler
/// checks it by type. It is not `async`, so it cannot `.await`: this is the
/// form for async code. `return` and `?` leave the closure only. The
/// closure's argument takes the GIL back for a part of the work
/// ([`Released::with_gil`]).
///
/// In a process where PyO3 runs, use PyO3's `py.detach` instead (or a
/// [`Nogil`] backend built on it; see [Using nuwa with PyO3]): PyO3 keeps its
/// own record of which threads are attached, which this function does not
/// update.
///
/// [Using nuwa with PyO3]: https://github.com/nuwa-rs/nuwa#using-nuwa-with-pyo3
///
/// # Examples
///
/// ```
/// let data = vec![1u64, 2, 3];
/// let total = nuwa_ffi::nogil(|_| data.iter().sum::<u64>());
/// assert_eq!(total, 6);
/// ```
///
/// A raw Python pointer cannot be captured:
///
/// ```compile_fail
/// let object: *mut core::ffi::c_void = core::ptr::null_mut(); // a *mut PyObject
/// nuwa_ffi::nogil(|_| object.is_null()); // error: cannot be shared between threads safely
/// ```
#[cfg_attr(feature = "stats", track_caller)]
pub fn nogil<T, F>(f: F) -> T
where
    F: FnOnce(&mut Released<'_, CPython>) -> T + Send,
    T: Send,
{
    #[cfg(feature = "stats")]
    return stats::__Recorded::new(CPython, stats::site_of(core::panic::Location::caller()))
        .nogil(f);
    #[cfg(not(feature = "stats"))]
    CPython.nogil(f)
}

/// Runs `f` with the GIL released (if this thread holds it), catches a
/// panic, and takes the GIL back before returning.
///
/// [`nuwa_std::nogil_catch`] with the [`CPython`] backend, a strict form like
/// [`nogil()`]: use it at the edge of an `extern "C"` function and turn
/// `Err(panicked)` into a Python exception. `return` and `?` inside `f`
/// leave the closure only.
///
/// # Examples
///
/// ```
/// let result = nuwa_ffi::nogil_catch(|_| -> u64 {
///     (1..=20u64).product()
/// });
/// assert_eq!(result.unwrap(), 2_432_902_008_176_640_000);
/// ```
#[cfg_attr(feature = "stats", track_caller)]
pub fn nogil_catch<T, F>(f: F) -> Result<T, Panicked>
where
    F: FnOnce(&mut Released<'_, CPython>) -> T + Send,
    T: Send,
{
    #[cfg(feature = "stats")]
    return nuwa_std::nogil_catch(
        stats::__Recorded::new(CPython, stats::site_of(core::panic::Location::caller())),
        f,
    );
    #[cfg(not(feature = "stats"))]
    nuwa_std::nogil_catch(CPython, f)
}

/// Runs a block with the GIL of the CPython interpreter released, and takes
/// the GIL back on every way out of the block.
///
/// ```text
/// nogil! { BODY }                         // CPython backend
/// nogil!({ BODY })                        // the same
/// nogil!(hide(args, obj) => { BODY })     // CPython, with args and obj unusable inside
/// nogil!(OPS => { BODY })                 // another backend: a mock, `&mut` a GilHeld token
/// nogil!(OPS, hide(obj) => { BODY })
/// ```
///
/// It evaluates to the value of `BODY`. The block is expanded in place, so
/// `return`, `?` and labelled `break`/`continue` work as in any block, and
/// every one of them, like a panic, takes the GIL back exactly once. If the
/// calling thread does not hold the GIL (a thread the extension spawned, a
/// nested block, a process without Python), nothing is released and the
/// block just runs. Inside, [`with_gil!`] takes the GIL back for a part of
/// the block. See [`nuwa_core::nogil!`] for the rules the block follows and
/// what the compiler checks: `.await` is rejected; `hide(...)` makes the
/// named bindings unusable, by name; for a check by type, use [`nogil()`].
///
/// In a PyO3 module, no PyO3 code may run inside the block
/// (`Python::attach`, dropping a `Py<T>`, `py.detach`, a method of a
/// `Bound`), hidden or not: PyO3 still counts the thread as attached, and
/// that code crashes the interpreter. Release with PyO3's `py.detach` there,
/// or run library code through a [`Nogil`] built on it; see [Using nuwa with
/// PyO3].
///
/// [Using nuwa with PyO3]: https://github.com/nuwa-rs/nuwa#using-nuwa-with-pyo3
///
/// Called with braces in statement position (`nogil! { ... }`), the macro is
/// a statement, as every brace-called macro is: to use its value, bind it
/// (`let x = nogil! { ... };`) or call it with parentheses (`nogil!({ ... }) + 1`).
///
/// # Examples
///
/// ```
/// fn invert(pixels: &mut [u8]) {
///     nuwa_ffi::nogil! {
///         for p in pixels.iter_mut() {
///             *p ^= 0xff;
///         }
///     }
/// }
///
/// let mut pixels = vec![0, 128, 255];
/// invert(&mut pixels);
/// assert_eq!(pixels, [255, 127, 0]);
/// ```
#[macro_export]
macro_rules! nogil {
    (hide($($hidden:ident),+ $(,)?) => { $($body:tt)* }) => {
        $crate::nuwa_core::nogil!($crate::recorded!($crate::CPython), hide($($hidden),+) => { $($body)* })
    };
    ({ $($body:tt)* }) => {
        $crate::nuwa_core::nogil!($crate::recorded!($crate::CPython) => { $($body)* })
    };
    // Near-miss of the form without a backend: say what to write, rather
    // than read it as statements.
    (hide $($rest:tt)*) => {
        ::core::compile_error!(
            "nogil!: `hide` takes names in parentheses, then `=>` and the block in braces: \
             `nogil!(hide(obj, callback) => { ... })`"
        )
    };
    // A backend of the caller's: nuwa-core's macro, with its own errors for
    // near-misses (`nogil!(gil => x + 1)`).
    ($ops:expr, $($rest:tt)*) => {
        $crate::nuwa_core::nogil!($ops, $($rest)*)
    };
    ($ops:expr => $($rest:tt)*) => {
        $crate::nuwa_core::nogil!($ops => $($rest)*)
    };
    ($($body:tt)*) => {
        $crate::nuwa_core::nogil!($crate::recorded!($crate::CPython) => { $($body)* })
    };
}

/// `OPS`, recording its blocks in [`stats`] for this call site when the
/// `stats` feature is on; `OPS` itself (nothing added) when it is off.
///
/// The CPython forms of [`nogil!`] use it already; wrap a backend you pass
/// yourself to count its blocks too:
/// `nogil!(recorded!(ReleaseIf::new(CPython, release)) => { .. })`.
///
/// # Examples
///
/// ```
/// use nuwa_ffi::{nogil, recorded, CPython, ReleaseIf};
/// let release = true;
/// let sum = nogil!(recorded!(ReleaseIf::new(CPython, release)) => { 1 + 1 });
/// assert_eq!(sum, 2);
/// ```
#[cfg(feature = "stats")]
#[macro_export]
macro_rules! recorded {
    ($ops:expr) => {{
        static __NUWA_SITE: $crate::stats::CallSite =
            $crate::stats::CallSite::__new(::core::file!(), ::core::line!(), ::core::column!());
        $crate::stats::__Recorded::new($ops, &__NUWA_SITE)
    }};
}

/// `OPS`, recording its blocks in `stats` for this call site when the
/// `stats` feature is on; `OPS` itself (nothing added) when it is off, as
/// now.
///
/// The CPython forms of [`nogil!`] use it already; wrap a backend you pass
/// yourself to count its blocks too:
/// `nogil!(recorded!(ReleaseIf::new(CPython, release)) => { .. })`.
///
/// # Examples
///
/// ```
/// use nuwa_ffi::{nogil, recorded, CPython, ReleaseIf};
/// let release = true;
/// let sum = nogil!(recorded!(ReleaseIf::new(CPython, release)) => { 1 + 1 });
/// assert_eq!(sum, 2);
/// ```
#[cfg(not(feature = "stats"))]
#[macro_export]
macro_rules! recorded {
    ($ops:expr) => {
        $ops
    };
}

#[cfg(test)]
mod tests {
    //! Without Python in the process: everything runs, nothing is released.

    use super::*;

    #[test]
    fn without_python_nothing_is_found() {
        let found = init();
        assert!(!found.python_found(), "{found}");
        assert!(!found.can_release());
        assert_eq!(found.held_check(), HeldCheck::Unavailable);
        assert!(std::ptr::eq(found, init()), "resolution is cached");
    }

    #[test]
    fn without_python_blocks_run_and_release_nothing() {
        // SAFETY: the guard is dropped at the end of the statement.
        let released = unsafe { Guard::release(CPython) }.released();
        assert!(!released);
        let value = nogil! { 6 * 7 };
        assert_eq!(value, 42);
        let value = nogil!({ "block" });
        assert_eq!(value, "block");
    }

    #[test]
    fn token_releases_nothing_without_python() {
        // SAFETY: there is no interpreter, so nothing can be released.
        let mut gil = unsafe { GilHeld::new() };
        // SAFETY: dropped at the end of the statement.
        assert!(!unsafe { Guard::release(&mut gil) }.released());
        assert_eq!(nogil!(&mut gil => { 5 }), 5);
        assert_eq!(nuwa_core::nogil(&mut gil, |_| 6), 6);
    }

    #[test]
    fn strict_form_runs_and_takes_nothing_back_without_python() {
        let data = [1u8, 2, 3];
        let (sum, again) = nogil(|gil| {
            let sum: u32 = data.iter().map(|&b| u32::from(b)).sum();
            // Nothing was released and no GIL is held: the part does not run.
            (sum, gil.with_gil(|| unreachable!()))
        });
        assert_eq!(sum, 6);
        assert_eq!(again, Err(GilUnavailable::new()));
        let in_place = nogil! { with_gil! { 1 } };
        assert_eq!(in_place, Err(GilUnavailable::new()));
    }

    #[test]
    fn every_macro_form_compiles_and_runs() {
        let gil = mock::MockGil::new();
        let py = "a Python handle";
        assert_eq!(nogil!(hide(py) => { 1 }), 1);
        assert_eq!(nogil!(gil => { 2 }), 2);
        assert_eq!(nogil!(gil, hide(py) => { 3 }), 3);
        assert_eq!(nogil!({ 4 }), 4);
        let x = 2;
        assert_eq!(nogil! { let y = x + 3; y * 2 }, 10);
        assert_eq!(py, "a Python handle");
        assert_eq!((gil.releases(), gil.reacquires()), (2, 2));
        gil.done();
    }

    #[test]
    fn exits_leave_through_the_guard() {
        fn first_even(xs: &[u32]) -> Option<u32> {
            nogil! {
                for &x in xs {
                    if x % 2 == 0 {
                        return Some(x);
                    }
                }
            }
            None
        }
        assert_eq!(first_even(&[1, 3, 4, 5]), Some(4));
        assert_eq!(first_even(&[1]), None);
        let caught = std::panic::catch_unwind(|| nogil! { panic!("inside") });
        assert!(caught.is_err());
    }

    #[test]
    fn nogil_catch_without_python() {
        assert_eq!(nogil_catch(|_| 7).unwrap(), 7);
        let err = nogil_catch(|_| -> () { panic!("boom {}", 1) }).unwrap_err();
        assert_eq!(err.message(), Some("boom 1"));
    }
}
