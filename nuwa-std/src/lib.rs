#![doc = include_str!("../README.md")]
#![deny(missing_docs, missing_debug_implementations)]

use std::any::Any;
use std::error::Error;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};

use nuwa_core::{GilOps, Guard};

mod thread_checked;

pub use thread_checked::{ThreadCheckedMock, ThreadCheckedState};

/// Runs `body` with the GIL released, catches a panic, and takes the GIL back
/// before returning.
///
/// This is the form for the edge of an `extern "C"` function, where a panic
/// must not escape (it would abort the process): turn the `Err` into a Python
/// exception instead. On both `Ok` and `Err` the GIL is held again (if it was
/// held before) when this returns.
///
/// # Exits that work, and one that does not
///
/// The body is a closure, so `return` and `?` inside it leave the closure,
/// not the calling function: return a `Result` from the closure and apply `?`
/// to it after the call. Labelled `break`/`continue` cannot cross it either.
/// Where those exits are needed and panics are handled further out, use
/// [`nuwa_core::nogil!`], which expands in place.
///
/// The closure is run under [`AssertUnwindSafe`]: after an `Err`, data it
/// mutated may be half-updated, so treat it as failed and do not reuse it.
///
/// # Examples
///
/// ```
/// use nuwa_core::mock::MockGil;
///
/// let gil = MockGil::new();
/// let err = nuwa_std::nogil_catch(&gil, || -> u32 { panic!("bad pixel at {}", 7) })
///     .unwrap_err();
/// assert_eq!(err.message(), Some("bad pixel at 7"));
/// assert!(gil.is_held()); // taken back before the error reached us
/// gil.done();
///
/// let ok = nuwa_std::nogil_catch(&gil, || 6 * 7);
/// assert_eq!(ok.unwrap(), 42);
/// ```
pub fn nogil_catch<G, T, F>(ops: G, body: F) -> Result<T, Panicked>
where
    G: GilOps,
    F: FnOnce() -> T,
{
    let result = {
        // SAFETY: the guard lives in this block and is dropped at its end, on
        // this thread, after `catch_unwind` has stopped any panic.
        let _guard = unsafe { Guard::release(ops) };
        panic::catch_unwind(AssertUnwindSafe(body))
    };
    result.map_err(Panicked::from)
}

/// A panic caught by [`nogil_catch`].
///
/// The message is available for the payloads `panic!` makes (`&'static str`
/// and `String`); any payload can be taken back or re-raised.
pub struct Panicked {
    payload: Box<dyn Any + Send + 'static>,
}

impl Panicked {
    /// The panic message, if the payload is a `&str` or a `String`.
    pub fn message(&self) -> Option<&str> {
        if let Some(s) = self.payload.downcast_ref::<&'static str>() {
            Some(s)
        } else {
            self.payload.downcast_ref::<String>().map(String::as_str)
        }
    }

    /// The panic payload, as `std::panic::catch_unwind` would return it.
    pub fn into_payload(self) -> Box<dyn Any + Send + 'static> {
        self.payload
    }

    /// Continues the panic (with [`std::panic::resume_unwind`]).
    pub fn resume(self) -> ! {
        panic::resume_unwind(self.payload)
    }
}

impl From<Box<dyn Any + Send + 'static>> for Panicked {
    /// Wraps a payload caught by `std::panic::catch_unwind`, to read its
    /// message the same way.
    fn from(payload: Box<dyn Any + Send + 'static>) -> Self {
        Panicked { payload }
    }
}

impl fmt::Display for Panicked {
    /// Writes the panic message, or a note that the payload is not a string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.message() {
            Some(message) => f.write_str(message),
            None => f.write_str("panic with a payload that is not a string"),
        }
    }
}

impl fmt::Debug for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Panicked")
            .field("message", &self.message())
            .finish_non_exhaustive()
    }
}

impl Error for Panicked {}
