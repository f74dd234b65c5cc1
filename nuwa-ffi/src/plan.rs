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

use crate::capi::{CheckSignalsFn, GetThreadStateFn, RestoreThreadFn, SaveThreadFn, SwapFn};
use crate::shutdown::TakeBack;

/// How blocks release the GIL and take it back on the interpreter found.
///
/// Made only by [`Plan::new`], from a [`Way`]: the fields that say which way
/// are private, so they always form one of the ways. They are kept in the
/// shape the fast path tests cheapest (a function pointer that is null or
/// not: one load and one test each, as the `Way` variants' payloads cannot
/// be), and `Plan::way` gives the `Way` back.
pub(crate) struct Plan {
    /// `PyThreadState_Swap` if blocks release with it
    /// ([`Way::SwapOut`], [`Way::SwapBoth`]).
    swap_out: Option<SwapFn>,
    /// `PyThreadState_Swap` if blocks take the GIL back with it
    /// ([`Way::SwapBoth`], [`Way::SwapIn`]; never on Windows).
    #[cfg(any(test, not(windows)))]
    swap_in: Option<SwapFn>,
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
    /// `PyEval_RestoreThread`: the take-back of the ways that do not swap,
    /// and of every block on a token.
    pub(crate) restore: RestoreThreadFn,
    /// What the take-back does about interpreter shutdown.
    pub(crate) take_back: TakeBack,
    /// `PyErr_CheckSignals`, for signal checks inside blocks (not on the
    /// fast path); `None` if the object does not define it.
    pub(crate) check_signals: Option<CheckSignalsFn>,
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
            Way::SwapBoth { swap } | Way::SwapIn { swap } => Some(swap),
            _ => None,
        };
        Plan {
            swap_out,
            #[cfg(any(test, not(windows)))]
            swap_in,
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
        if let Some(this_thread) = self.this_thread {
            return Way::Compare { this_thread };
        }
        #[cfg(any(test, not(windows)))]
        match (self.swap_out, self.swap_in) {
            (Some(swap), Some(_)) => return Way::SwapBoth { swap },
            (None, Some(swap)) => return Way::SwapIn { swap },
            _ => {}
        }
        match self.swap_out {
            Some(swap) => Way::SwapOut { swap },
            None => Way::Local,
        }
    }

    /// `PyThreadState_Swap`, if blocks release with it.
    #[inline(always)]
    pub(crate) fn swap_out(&self) -> Option<SwapFn> {
        self.swap_out
    }

    /// `PyThreadState_Swap`, if blocks take the GIL back with it.
    #[inline(always)]
    pub(crate) fn swap_in(&self) -> Option<SwapFn> {
        #[cfg(any(test, not(windows)))]
        return self.swap_in;
        #[cfg(not(any(test, not(windows))))]
        None
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
    /// back as [`SwapIn`](Way::SwapIn).
    #[cfg(any(test, not(windows)))]
    SwapBoth {
        /// `PyThreadState_Swap`.
        swap: SwapFn,
    },
    /// 3.14 and later (not on Windows): released as [`Local`](Way::Local);
    /// taken back with `PyThreadState_Swap(saved)`, which detaches whatever
    /// state is attached to the thread (none, unless one was attached inside
    /// the block and left attached), takes the GIL and attaches the block's
    /// own (CPython's `_PyThreadState_Attach`, as `PyEval_RestoreThread`
    /// does), and returns the state it detached: the end check for free.
    #[cfg(any(test, not(windows)))]
    SwapIn {
        /// `PyThreadState_Swap`.
        swap: SwapFn,
    },
}
