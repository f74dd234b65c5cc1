#![no_std]
#![doc = include_str!("../README.md")]
#![deny(missing_docs, missing_debug_implementations)]

mod guard;
mod hide;
mod macros;
pub mod mock;
mod ops;
mod strict;

#[doc(hidden)]
pub use guard::Reentered;
pub use guard::{GilUnavailable, Guard};
#[doc(hidden)]
pub use hide::__Unhide;
pub use hide::HiddenWhileGilReleased;
#[doc(hidden)]
pub use ops::PartFrame;
pub use ops::{GilOps, ReleaseIf};
pub use strict::{Nogil, Released, WithGil, nogil};
