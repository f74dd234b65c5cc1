#![doc = include_str!("../README.md")]
#![deny(missing_docs, missing_debug_implementations)]

mod cpython;
pub mod embed;
mod resolve;

pub use cpython::{AssumeGilHeld, CPython, SavedThreadState, gil_is_held};
pub use resolve::{HeldCheck, Resolution, RestorePath, Status, Via};

pub use nuwa_core::{self, GilOps, Guard, HiddenWhileGilReleased, mock};
pub use nuwa_std::{self, Panicked, ThreadCheckedMock};

/// Finds CPython's functions now instead of at the first block, and says
/// what was found.
///
/// Blocks resolve on first use anyway; call this from `PyInit_*` to move the
/// cost (a few `dlsym` calls, once per process) out of the first call, or to
/// log the result. Repeated calls return the same, cached, answer: what the
/// process held at the first resolution is final, so a libpython loaded
/// later (with `dlopen`) is not seen.
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

/// Runs `body` with the GIL released (if this thread holds it), catches a
/// panic, and takes the GIL back before returning.
///
/// [`nuwa_std::nogil_catch`] with the [`CPython`] backend: use it at the
/// edge of an `extern "C"` function and turn `Err(panicked)` into a Python
/// exception. `return` and `?` inside `body` leave the closure only.
///
/// # Examples
///
/// ```
/// let result = nuwa_ffi::nogil_catch(|| -> u64 {
///     (1..=20u64).product()
/// });
/// assert_eq!(result.unwrap(), 2_432_902_008_176_640_000);
/// ```
pub fn nogil_catch<T, F: FnOnce() -> T>(body: F) -> Result<T, Panicked> {
    nuwa_std::nogil_catch(CPython, body)
}

/// Runs a block with the GIL of the CPython interpreter released, and takes
/// the GIL back on every way out of the block.
///
/// ```text
/// nogil! { BODY }                         // CPython backend
/// nogil!({ BODY })                        // the same
/// nogil!(hide(py, obj) => { BODY })       // CPython, with py and obj unusable inside
/// nogil!(OPS => { BODY })                 // another backend, e.g. a mock
/// nogil!(OPS, hide(py) => { BODY })
/// ```
///
/// It evaluates to the value of `BODY`. The block is expanded in place, so
/// `return`, `?` and labelled `break`/`continue` work as in any block, and
/// every one of them, like a panic, takes the GIL back exactly once. If the
/// calling thread does not hold the GIL (a thread the extension spawned, a
/// nested block, a process without Python), nothing is released and the
/// block just runs. See [`nuwa_core::nogil!`] for the forms with a backend.
///
/// Inside the block, do not touch Python objects or call the Python API:
/// name the handles in `hide(...)` and the compiler enforces it.
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
    (hide($($hidden:ident),+ $(,)?) => $body:block) => {
        $crate::nuwa_core::nogil!($crate::CPython, hide($($hidden),+) => $body)
    };
    ($ops:expr, hide($($hidden:ident),+ $(,)?) => $body:block) => {
        $crate::nuwa_core::nogil!($ops, hide($($hidden),+) => $body)
    };
    ($ops:expr => $body:block) => {
        $crate::nuwa_core::nogil!($ops => $body)
    };
    ($body:block) => {
        $crate::nuwa_core::nogil!($crate::CPython => $body)
    };
    ($($body:tt)*) => {
        $crate::nuwa_core::nogil!($crate::CPython => { $($body)* })
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
    fn unchecked_backend_releases_nothing_without_python() {
        // SAFETY: there is no interpreter, so nothing can be released.
        let gil = unsafe { AssumeGilHeld::new() };
        // SAFETY: dropped at the end of the statement.
        assert!(!unsafe { Guard::release(gil) }.released());
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
        assert_eq!(nogil_catch(|| 7).unwrap(), 7);
        let err = nogil_catch(|| -> () { panic!("boom {}", 1) }).unwrap_err();
        assert_eq!(err.message(), Some("boom 1"));
    }
}
