//! Finding CPython's functions at run time: once per process when found,
//! again after the process loads a library named like libpython while they
//! are not.
//!
//! - [`report`]: what was found, as the public [`Resolution`].
//! - [`decide`]: from the symbols of one object, which functions to use on
//!   which version (pure logic, tested with fake symbol tables).
//! - [`names`]: which loaded objects are worth asking (pure logic, tested on
//!   every host, including the Windows DLL names).
//! - `unix` / `windows`: the platform lookup, in a fixed order.
//! - [`embed`](crate::embed): the functions handed over by an embedder.

use core::sync::atomic::{AtomicPtr, Ordering};
use std::boxed::Box;

use crate::capi::CheckSignalsFn;
use crate::plan::Plan;

pub(crate) mod decide;
#[cfg(nuwa_dl_iterate)]
mod loaded;
pub(crate) mod names;
pub(crate) mod report;
#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::{own_object, pin_object_of};
#[cfg(windows)]
mod windows;

pub use report::{Details, HeldCheck, Resolution, RestorePath, Status, Via};

/// The resolution in force: null before the first lookup, then a leaked
/// `Box`. It is only ever replaced by a better one (see [`rank`]): at most
/// three are ever made to stay, and one that can release is final.
///
/// No thread ever waits for another here: a lookup is idempotent, so threads
/// that race each look up and offer their answer with a compare-exchange,
/// and a process forked while a thread of its parent was in the middle of a
/// lookup simply looks up again (nothing of nuwa's is left half done; see
/// `loaded` for the loader's own lock).
///
/// The first libpython found is final, even if that interpreter is never
/// initialised while another one is: blocks then release nothing (they
/// check that the GIL is held first), which only `init()` shows.
static RESOLUTION: AtomicPtr<Resolution> = AtomicPtr::new(core::ptr::null_mut());

/// The [`Plan`] of [`RESOLUTION`] once it can release (null before, and for
/// as long as nothing can be released): what [`plan`] returns in one load.
/// (Blocks read [`crate::plan::in_force`], never null, whose first-use
/// functions ask here.)
static PLAN: AtomicPtr<Plan> = AtomicPtr::new(core::ptr::null_mut());

/// The plan that can release, looked up on first use: one atomic load once
/// found.
#[inline(always)]
pub(crate) fn plan() -> Option<&'static Plan> {
    let plan = PLAN.load(Ordering::Acquire);
    if plan.is_null() {
        return plan_slow();
    }
    // SAFETY: `PLAN` is only ever set to the `Plan` inside a resolution that
    // can release, which is final and lives (unchanged, leaked) for the rest
    // of the process.
    Some(unsafe { &*plan })
}

/// `plan()` before the first resolution, or while nothing can be released.
#[cold]
#[inline(never)]
fn plan_slow() -> Option<&'static Plan> {
    resolution().plan()
}

/// `PyErr_CheckSignals` of the interpreter found, if any (off the fast path).
pub(crate) fn check_signals() -> Option<CheckSignalsFn> {
    plan()?.check_signals
}

/// Returns the resolution in force, looking (again) first if there is none
/// yet, or if it cannot release and the process loaded a library named like
/// libpython since it was made.
pub(crate) fn resolution() -> &'static Resolution {
    if let Some(current) = in_force()
        && (current.can_release() || !python_may_have_arrived())
    {
        return current;
    }
    look_again()
}

/// The resolution in force, if any; makes its `Plan`, if it has one, the one
/// the fast path loads (before any caller can use it).
fn in_force() -> Option<&'static Resolution> {
    let current = RESOLUTION.load(Ordering::Acquire);
    if current.is_null() {
        return None;
    }
    // SAFETY: `RESOLUTION` is only ever set to a leaked `Box`, never freed.
    let current = unsafe { &*current };
    if let Some(plan) = current.plan() {
        // Every thread stores the same pointer: a resolution that can
        // release is never replaced.
        PLAN.store(core::ptr::from_ref(plan).cast_mut(), Ordering::Release);
    }
    Some(current)
}

#[cold]
#[inline(never)]
fn look_again() -> &'static Resolution {
    #[cfg(test)]
    tests::LOOKUPS.fetch_add(1, Ordering::Relaxed);
    #[cfg(unix)]
    {
        let (made, scanned) = unix::look_up();
        let kept = offer(made).0;
        // After the offer: a block that reads what the walk saw finds the
        // answer in force.
        #[cfg(nuwa_dl_iterate)]
        loaded::remember(&scanned);
        #[cfg(not(nuwa_dl_iterate))]
        let () = scanned;
        kept
    }
    #[cfg(not(unix))]
    offer(look_up()).0
}

/// How good a resolution is: a resolution in force is replaced only by a
/// better one.
fn rank(resolution: &Resolution) -> u8 {
    match resolution.status() {
        Status::NotFound | Status::PyPyNotSupported => 0,
        Status::FoundWithoutHeldCheck => 1,
        Status::Ready => 2,
    }
}

/// Puts `made` in force unless the resolution in force is as good; returns
/// the one in force and whether it is `made`.
pub(crate) fn offer(made: Resolution) -> (&'static Resolution, bool) {
    let made_rank = rank(&made);
    let made = Box::into_raw(Box::new(made));
    let mut current = RESOLUTION.load(Ordering::Acquire);
    loop {
        // SAFETY: as in `in_force`.
        if !current.is_null() && rank(unsafe { &*current }) >= made_rank {
            // SAFETY: `made` was never shared: take it back.
            drop(unsafe { Box::from_raw(made) });
            // SAFETY: as in `in_force`.
            return (in_force().unwrap_or(unsafe { &*current }), false);
        }
        match RESOLUTION.compare_exchange(current, made, Ordering::AcqRel, Ordering::Acquire) {
            // The one replaced is leaked: callers may still hold it.
            Ok(_) => return (in_force().unwrap_or_else(|| unreachable!()), true),
            Err(actual) => current = actual,
        }
    }
}

/// Whether a library named like libpython was loaded since the resolution
/// in force was looked up (never, where that cannot be told: see
/// [`looks_again`]).
fn python_may_have_arrived() -> bool {
    #[cfg(nuwa_dl_iterate)]
    return loaded::python_may_have_arrived();
    #[cfg(not(nuwa_dl_iterate))]
    return false;
}

/// Whether a resolution that cannot release is looked for again when the
/// process loads a library named like libpython: where the dynamic loader
/// counts the objects it loads and unloads (`dl_iterate_phdr`'s `dlpi_adds`
/// and `dlpi_subs`, in glibc, musl and FreeBSD; not OpenBSD).
pub(crate) fn looks_again() -> bool {
    #[cfg(nuwa_dl_iterate)]
    return loaded::counters_readable();
    #[cfg(not(nuwa_dl_iterate))]
    return false;
}

/// What the platform's dynamic loader can tell about where nuwa runs.
#[cfg(not(unix))]
fn look_up() -> Resolution {
    #[cfg(windows)]
    return windows::look_up();
    #[cfg(not(any(unix, windows)))]
    return Resolution::not_found(false, 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicUsize;

    /// Full lookups made by this process.
    pub(super) static LOOKUPS: AtomicUsize = AtomicUsize::new(0);

    #[test]
    fn without_python_blocks_do_not_look_again_until_a_library_is_loaded() {
        let found = resolution();
        assert!(!found.python_found(), "{found}");
        let before = LOOKUPS.load(Ordering::Relaxed);
        for _ in 0..1000 {
            assert!(plan().is_none());
        }
        #[cfg(nuwa_dl_iterate)]
        {
            assert!(looks_again());
            assert!(!python_may_have_arrived());
        }
        assert_eq!(
            LOOKUPS.load(Ordering::Relaxed),
            before,
            "blocks looked for Python again although no library was loaded"
        );
        assert!(
            core::ptr::eq(found, resolution()),
            "a worse or equal answer replaced it"
        );
    }

    #[test]
    fn a_resolution_is_replaced_only_by_a_better_one() {
        let not_found = Resolution::not_found(false, 0);
        let pypy = Resolution::not_found(true, 0);
        assert_eq!(rank(&not_found), rank(&pypy));
        let without_check = Resolution {
            state: report::State::NoHeldCheck {
                version: Some((3, 11)),
                missing: &["PyGILState_GetThisThreadState"],
            },
            via: Via::GlobalScope,
            place: report::Place::Searched { tried: 0 },
        };
        assert!(rank(&without_check) > rank(&not_found));
    }
}
