//! The per-block plan: which of CPython's functions a block calls to release
//! the GIL and take it back, and how, on the interpreter found.
//!
//! Made once by the version policy ([`decide`](crate::resolve::decide)),
//! read by every block ([`block`](crate::block)), described by the report
//! ([`Resolution`](crate::Resolution)). Only the valid combinations can be
//! written: a plan is made from a [`Way`], whose variants are the ways of
//! each version family, each with the functions it needs, and from a
//! [`TakeBack`], which pairs the shutdown handling with the entry functions
//! that match it.

use core::sync::atomic::{AtomicPtr, Ordering};

use crate::block;
use crate::capi::{CheckSignalsFn, GetThreadStateFn, RestoreThreadFn, SaveThreadFn, SwapFn};
use crate::shutdown::{Exit, TakeBack};

/// The plan blocks follow: [`FIRST_USE`] until a block (or another caller)
/// finds one that can release, then that one, for good. Never null, so that
/// a block tests nothing before calling through it: the first-use plan's
/// functions look CPython up, and forward to the plan found (see
/// [`in_force`]).
static IN_FORCE: AtomicPtr<Plan> = AtomicPtr::new(core::ptr::addr_of!(FIRST_USE).cast_mut());

/// The plan in force before one that can release is found: shaped like a
/// plan that releases with one call (as 3.12 and 3.13 do), whose release
/// functions look the plan up ([`block::first_release`] for checked blocks,
/// [`block::first_save`] for the token), publish it, and release its way;
/// with no Python they release nothing, and the next block asks again (as
/// cheaply as the lookup allows: see [`resolve`](crate::resolve)).
///
/// Its take-back functions are never called: a block takes the GIL back
/// only after releasing it, and by then the plan found is in force.
static FIRST_USE: Plan = Plan {
    swap_out: Some(block::first_release),
    #[cfg(any(test, not(windows)))]
    swap_in: None,
    #[cfg(any(test, not(windows)))]
    repair: None,
    this_thread: None,
    current: block::no_state,
    save: block::first_save,
    restore: block::never_restore,
    take_back: TakeBack::new(Exit::Direct),
    check_signals: None,
};

/// The plan blocks follow: one atomic load, never null (see [`IN_FORCE`]).
/// Once a block has released, this is the plan that released.
#[inline(always)]
pub(crate) fn in_force() -> &'static Plan {
    // SAFETY: `IN_FORCE` only ever points at `FIRST_USE` or at a plan of a
    // resolution that can release, which is final and leaked.
    unsafe { &*IN_FORCE.load(Ordering::Acquire) }
}

/// Makes `plan` (a plan that can release, final) the one blocks follow.
/// Every caller publishes the same plan: the first that can release is
/// final.
pub(crate) fn publish(plan: &'static Plan) {
    IN_FORCE.store(core::ptr::from_ref(plan).cast_mut(), Ordering::Release);
}

/// How blocks release the GIL and take it back on the interpreter found.
///
/// Made only by [`Plan::new`], from a [`Way`]: the fields that say which way
/// are private, so they always form one of the ways. They are kept in the
/// shape the fast path tests cheapest (a function pointer that is null or
/// not: one load and one test each), and read through [`Plan::out`] and
/// [`Plan::back`], which test them in a fixed order, so that a block makes
/// one decision as it releases and one as it takes the GIL back on the
/// versions that swap; `Plan::way` gives the `Way` back.
#[repr(C)]
pub(crate) struct Plan {
    /// `PyEval_RestoreThread`: the take-back of the ways that do not swap,
    /// and of every block on a token. First, so that its address is the
    /// plan's own: the take-back passes it to the C frame by reference
    /// (see [`TakeBack::restore`]), which then costs no load.
    pub(crate) restore: RestoreThreadFn,
    /// `PyThreadState_Swap` if blocks release with it
    /// ([`Way::SwapOut`], [`Way::SwapBoth`]).
    swap_out: Option<SwapFn>,
    /// `PyThreadState_Swap` if blocks take the GIL back with it
    /// ([`Way::SwapBoth`]; never on Windows).
    #[cfg(any(test, not(windows)))]
    swap_in: Option<SwapFn>,
    /// `PyThreadState_Swap` if a block that finds a state left attached at
    /// its end repairs with it, off the fast path ([`Way::LocalRepair`];
    /// never on Windows).
    #[cfg(any(test, not(windows)))]
    pub(crate) repair: Option<SwapFn>,
    /// `PyGILState_GetThisThreadState` if the held check compares
    /// ([`Way::Compare`]).
    this_thread: Option<GetThreadStateFn>,
    /// The thread state that holds the GIL: the caller's own on 3.12 and
    /// later, the GIL holder's (whichever thread that is) on 3.11 and older
    /// (see [`Way::Compare`]). Also [`gil_is_held`](crate::gil_is_held)'s.
    pub(crate) current: GetThreadStateFn,
    /// `PyEval_SaveThread`: the release of the ways that do not swap, and
    /// of every block on a [`GilHeld`](crate::GilHeld) token.
    pub(crate) save: SaveThreadFn,
    /// What the take-back does about interpreter shutdown.
    pub(crate) take_back: TakeBack,
    /// `PyErr_CheckSignals`, for signal checks inside blocks (not on the
    /// fast path); `None` if the object does not define it.
    pub(crate) check_signals: Option<CheckSignalsFn>,
}

/// A block's release, by way: the held check and the release.
#[derive(Clone, Copy)]
pub(crate) enum Out {
    /// `PyThreadState_Swap(NULL)` (3.12+), both in one call
    /// ([`Way::SwapOut`], [`Way::SwapBoth`]).
    Swap(SwapFn),
    /// The current state compared with this `PyGILState_GetThisThreadState`
    /// (3.11 and older, [`Way::Compare`]), then `PyEval_SaveThread`.
    Compare(GetThreadStateFn),
    /// The current state not null (thread-local), then `PyEval_SaveThread`
    /// ([`Way::Local`], [`Way::LocalRepair`]).
    Local,
}

/// A block's take-back, by way: the end check and the take-back.
#[derive(Clone, Copy)]
pub(crate) enum Back {
    /// `PyThreadState_Swap(saved)` (3.13, not on Windows), both in one
    /// call ([`Way::SwapBoth`]).
    #[cfg(any(test, not(windows)))]
    Swap(SwapFn),
    /// The block's own state must not be the current one (3.11 and older),
    /// then `PyEval_RestoreThread` ([`Way::Compare`]).
    Compare,
    /// No state may be attached (thread-local), then
    /// `PyEval_RestoreThread` ([`Way::Local`], [`Way::SwapOut`],
    /// [`Way::LocalRepair`]).
    Local,
}

impl Plan {
    /// The plan that releases and takes the GIL back `way`, with the other
    /// functions every way uses.
    pub(crate) fn new(
        way: Way,
        current: GetThreadStateFn,
        save: SaveThreadFn,
        restore: RestoreThreadFn,
        take_back: TakeBack,
        check_signals: Option<CheckSignalsFn>,
    ) -> Plan {
        let this_thread = match way {
            Way::Compare { this_thread } => Some(this_thread),
            _ => None,
        };
        let swap_out = match way {
            Way::SwapOut { swap } => Some(swap),
            #[cfg(any(test, not(windows)))]
            Way::SwapBoth { swap } => Some(swap),
            _ => None,
        };
        #[cfg(any(test, not(windows)))]
        let swap_in = match way {
            Way::SwapBoth { swap } => Some(swap),
            _ => None,
        };
        #[cfg(any(test, not(windows)))]
        let repair = match way {
            Way::LocalRepair { swap } => Some(swap),
            _ => None,
        };
        Plan {
            swap_out,
            #[cfg(any(test, not(windows)))]
            swap_in,
            #[cfg(any(test, not(windows)))]
            repair,
            this_thread,
            current,
            save,
            restore,
            take_back,
            check_signals,
        }
    }

    /// The way this plan releases and takes the GIL back (for the tests of
    /// the policy).
    #[cfg(test)]
    pub(crate) fn way(&self) -> Way {
        match (self.out(), self.back()) {
            (Out::Compare(this_thread), Back::Compare) => Way::Compare { this_thread },
            (Out::Local, Back::Local) => match self.repair {
                Some(swap) => Way::LocalRepair { swap },
                None => Way::Local,
            },
            (Out::Swap(swap), Back::Local) => Way::SwapOut { swap },
            (Out::Swap(swap), Back::Swap(_)) => Way::SwapBoth { swap },
            _ => unreachable!("Plan::new makes no other pair"),
        }
    }

    /// How blocks release: the swap first (one test on 3.12 and 3.13).
    #[inline(always)]
    pub(crate) fn out(&self) -> Out {
        if let Some(swap) = self.swap_out {
            Out::Swap(swap)
        } else if let Some(this_thread) = self.this_thread {
            Out::Compare(this_thread)
        } else {
            Out::Local
        }
    }

    /// How blocks take the GIL back: the swap first (one test on 3.13).
    #[inline(always)]
    pub(crate) fn back(&self) -> Back {
        #[cfg(any(test, not(windows)))]
        if let Some(swap) = self.swap_in {
            return Back::Swap(swap);
        }
        if self.this_thread.is_some() {
            Back::Compare
        } else {
            Back::Local
        }
    }

    /// `PyGILState_GetThisThreadState`, if the current state is
    /// process-global (3.11 and older): the held check compares.
    #[inline(always)]
    pub(crate) fn this_thread(&self) -> Option<GetThreadStateFn> {
        self.this_thread
    }
}

/// How a block releases and takes the GIL back, by version family: the
/// cheapest of the ways that keep the guarantees, by the instruction counts
/// in BENCHMARKS.md.
///
/// Every way checks that the calling thread holds the GIL before releasing,
/// and that no thread state was left attached inside the block before taking
/// it back.
#[derive(Clone, Copy)]
pub(crate) enum Way {
    /// CPython 3.8-3.11 (and a version that could not be read, with the
    /// private getter): `current` is process-global, so the held check
    /// compares it with this thread's GIL-state state, and the end check
    /// with the block's own state. A thread whose GIL-state state is not the
    /// current one (a legacy subinterpreter's thread, one running on a state
    /// another thread made for it) counts as not holding the GIL: nothing
    /// else on these versions tells, safely, which thread a state is in use
    /// on. Then `PyEval_SaveThread` and `PyEval_RestoreThread`.
    Compare {
        /// `PyGILState_GetThisThreadState`.
        this_thread: GetThreadStateFn,
    },
    /// 3.12 and later where the swap is not used (no `PyThreadState_Swap`,
    /// a version that could not be read, an embedder's functions, 3.14 and
    /// later on Windows): `current` is thread-local, not null means held;
    /// `PyEval_SaveThread` and `PyEval_RestoreThread`.
    Local,
    /// 3.12 (and 3.13 on Windows): `PyThreadState_Swap(NULL)` detaches the
    /// calling thread's state only if one is attached, and returns it (or
    /// null): the held check and the release in one call, cheaper there
    /// than the getter plus `PyEval_SaveThread`. Taken back as [`Local`]:
    /// on 3.12 the swap marks the state attached before it has the GIL,
    /// which races with finalization; on Windows `PyEval_RestoreThread`
    /// keeps the thread's last-error value (`GetLastError`) across the wait
    /// for the GIL, and the swap does not.
    ///
    /// [`Local`]: Way::Local
    SwapOut {
        /// `PyThreadState_Swap`.
        swap: SwapFn,
    },
    /// 3.13 (not on Windows): released as [`SwapOut`](Way::SwapOut), taken
    /// back with `PyThreadState_Swap(saved)`, which detaches whatever state
    /// is attached to the thread (none, unless one was attached inside the
    /// block and left attached), takes the GIL and attaches the block's own
    /// (CPython's `_PyThreadState_Attach`, as `PyEval_RestoreThread` does),
    /// and returns the state it detached: on 3.13 cheaper than
    /// [`Local`](Way::Local)'s getter and `PyEval_RestoreThread` (530
    /// instructions per block against 544: BENCHMARKS.md, "Per block").
    #[cfg(any(test, not(windows)))]
    SwapBoth {
        /// `PyThreadState_Swap`.
        swap: SwapFn,
    },
    /// 3.14 and later (not on Windows): released and taken back as
    /// [`Local`](Way::Local), the cheapest there (with the swap's take-back
    /// a block cost 383 instructions on 3.15, now 370: BENCHMARKS.md). `PyThreadState_Swap(saved)`
    /// only repairs, off the fast path, a block that finds a state left
    /// attached at its end: it detaches that state and attaches the block's
    /// own, as [`SwapBoth`](Way::SwapBoth)'s take-back does on every block.
    #[cfg(any(test, not(windows)))]
    LocalRepair {
        /// `PyThreadState_Swap`.
        swap: SwapFn,
    },
}
