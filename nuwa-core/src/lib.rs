#![no_std]
#![doc = include_str!("../README.md")]
#![deny(missing_docs, missing_debug_implementations)]

mod guard;
mod hide;
mod macros;
pub mod mock;
mod ops;
mod strict;

pub use guard::{GilUnavailable, Guard};
pub use hide::HiddenWhileGilReleased;
pub use ops::{GilOps, ReleaseIf};
pub use strict::{Nogil, Released, WithGil};

/// What the macros' expansions and nuwa's own crates use. Not public API:
/// no semver promise covers anything here.
#[doc(hidden)]
pub mod __private {
    pub use crate::guard::Reentered;
    pub use crate::hide::{Unhide, hide};
    pub use crate::ops::PartFrame;
    use crate::{GilOps, GilUnavailable, Guard, Released};

    /// Takes the GIL back through `released` and runs the signal handlers
    /// that are due ([`WithGil::check_signals_dyn`](crate::WithGil::check_signals_dyn)):
    /// `nuwa_ffi::SignalCheck`'s due check.
    #[inline]
    pub fn check_signals<L>(released: &mut Released<'_, L>) -> Result<bool, GilUnavailable> {
        released.check_signals()
    }

    /// Releases the GIL through `ops` if the calling thread holds it.
    ///
    /// # Safety
    ///
    /// The guard must be dropped on this thread before the thread runs
    /// anything that needs the GIL (outside a part) or returns to Python: it
    /// must not be leaked (`mem::forget`, a reference cycle), nor held across
    /// an `.await`.
    #[inline(always)]
    pub unsafe fn release<G: GilOps>(ops: G) -> Guard<G> {
        // SAFETY: the caller's contract.
        unsafe { Guard::release(ops) }
    }

    /// Whether `guard` has the GIL released now.
    #[inline]
    pub fn released<G: GilOps>(guard: &Guard<G>) -> bool {
        guard.released()
    }

    /// Takes the GIL back until the returned value is dropped (`with_gil!`).
    #[inline(always)]
    pub fn reenter<G: GilOps>(guard: &mut Guard<G>) -> Result<Reentered<'_, G>, GilUnavailable> {
        guard.reenter()
    }
}
