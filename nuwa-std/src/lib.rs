#![doc = include_str!("../README.md")]
#![deny(missing_docs, missing_debug_implementations)]

use std::any::Any;
use std::error::Error;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Mutex;

mod thread_checked;

pub use thread_checked::{ThreadCheckedMock, ThreadCheckedState};

/// A panic caught by [`Panicked::catch`].
///
/// The message is available for the payloads `panic!` makes (`&'static str`
/// and `String`); any payload can be taken back or re-raised. It is `Send`
/// and `Sync`, so `?` turns it into a `Box<dyn Error + Send + Sync>` (or an
/// `anyhow::Error`).
pub struct Panicked {
    payload: Payload,
}

/// The payload, split so that the message needs no lock and the whole is
/// `Sync` (a `Box<dyn Any + Send>` is not).
enum Payload {
    Str(&'static str),
    String(String),
    Other(Mutex<Box<dyn Any + Send + 'static>>),
}

impl Panicked {
    /// Runs `f`, and turns a panic in it into `Err(Panicked)`: for the edge
    /// of an `extern "C"` function, where a panic must become a Python
    /// exception instead of aborting the process.
    ///
    /// Put the release inside: `Panicked::catch(|| nogil! { ... })` or
    /// `Panicked::catch(|| ops.nogil(|gil| ...))`. A panic in the block
    /// unwinds through the block's guard, which takes the GIL back, before it
    /// is caught here, so on `Ok` and on `Err` the GIL is held again (if it
    /// was held before).
    ///
    /// `f` runs under [`AssertUnwindSafe`]: after an `Err`, data it mutated
    /// may be half-updated, so treat it as failed and do not reuse it.
    /// `return` and `?` inside `f` leave `f`, not the calling function.
    ///
    /// # Examples
    ///
    /// ```
    /// use nuwa_core::{mock::MockGil, nogil};
    /// use nuwa_std::Panicked;
    ///
    /// let gil = MockGil::new();
    /// let err = Panicked::catch(|| nogil!(gil => { panic!("bad pixel at {}", 7) }))
    ///     .unwrap_err();
    /// assert_eq!(err.message(), Some("bad pixel at 7"));
    /// assert!(gil.is_held()); // taken back before the error reached us
    /// gil.done();
    /// ```
    pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, Panicked> {
        panic::catch_unwind(AssertUnwindSafe(f)).map_err(Panicked::from)
    }

    /// The panic message, if the payload is a `&str` or a `String`.
    pub fn message(&self) -> Option<&str> {
        match &self.payload {
            Payload::Str(s) => Some(s),
            Payload::String(s) => Some(s),
            Payload::Other(_) => None,
        }
    }

    /// The panic payload, as `std::panic::catch_unwind` would return it.
    pub fn into_payload(self) -> Box<dyn Any + Send + 'static> {
        match self.payload {
            Payload::Str(s) => Box::new(s),
            Payload::String(s) => Box::new(s),
            // A poisoned lock still holds the payload: nothing panics while
            // it is locked.
            Payload::Other(m) => m.into_inner().unwrap_or_else(|e| e.into_inner()),
        }
    }

    /// Continues the panic (with [`std::panic::resume_unwind`]).
    pub fn resume(self) -> ! {
        panic::resume_unwind(self.into_payload())
    }
}

impl From<Box<dyn Any + Send + 'static>> for Panicked {
    /// Wraps a payload caught by `std::panic::catch_unwind`, to read its
    /// message the same way.
    fn from(payload: Box<dyn Any + Send + 'static>) -> Self {
        let payload = match payload.downcast::<&'static str>() {
            Ok(s) => Payload::Str(*s),
            Err(payload) => match payload.downcast::<String>() {
                Ok(s) => Payload::String(*s),
                Err(payload) => Payload::Other(Mutex::new(payload)),
            },
        };
        Panicked { payload }
    }
}

static_assertions::assert_impl_all!(Panicked: Send, Sync, Error);

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
