//! What a binding named in `hide(...)` is inside the block.

use core::marker::PhantomData;

use crate::GilOps;
use crate::guard::Reentered;

/// The value that stands in for a binding named in `hide(...)` inside a
/// [`nogil!`](crate::nogil!) block.
///
/// It has no methods, no public fields and no trait impls (not even `Debug`),
/// so any real use of a hidden binding fails to compile with an error that
/// names this type, for example
/// ``expected `*mut PyObject`, found `HiddenWhileGilReleased<'_, *mut PyObject>` ``.
/// Move the use out of the block, where the GIL is held, or into a
/// [`with_gil!`](crate::with_gil!) part of it, where the name is usable again.
///
/// It keeps a shared borrow of the original binding for the length of the
/// block, which is how `with_gil!` gives it back.
#[allow(
    missing_debug_implementations,
    reason = "so that `{:?}` of a hidden binding fails too"
)]
pub struct HiddenWhileGilReleased<'a, T> {
    original: &'a T,
    // Not `Send`/`Sync` whatever `T` is: it names a Python handle.
    _not_send: PhantomData<*const ()>,
}

/// Hides `original`; used by `nogil!`.
#[inline(always)]
pub const fn hide<T>(original: &T) -> HiddenWhileGilReleased<'_, T> {
    HiddenWhileGilReleased {
        original,
        _not_send: PhantomData,
    }
}

/// Gives a hidden binding back inside a `with_gil!` part, as a shared
/// reference that lives no longer than the part (it borrows the part's
/// [`Reentered`]); a binding already given back stays as it is, so one name
/// can be given back more than once.
pub trait Unhide<T> {
    /// The binding, given back for the length of `part`.
    fn unhide<'r, G: GilOps>(&'r self, part: &'r Reentered<'_, G>) -> &'r T;
}

impl<T> Unhide<T> for HiddenWhileGilReleased<'_, T> {
    #[inline(always)]
    fn unhide<'r, G: GilOps>(&'r self, _: &'r Reentered<'_, G>) -> &'r T {
        self.original
    }
}

impl<T> Unhide<T> for &T {
    #[inline(always)]
    fn unhide<'r, G: GilOps>(&'r self, _: &'r Reentered<'_, G>) -> &'r T {
        self
    }
}
