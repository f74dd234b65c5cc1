//! A GIL backend for unit tests: no Python, no std, no allocation.
//!
//! [`MockGil`] plays the GIL of one thread. It starts held, counts releases
//! and reacquires, and panics with a message that says what went wrong on any
//! breach of the [`GilOps`] protocol. Code that is generic over
//! `G: GilOps` can be tested with it exactly as it runs with the real
//! interpreter.
//!
//! ```
//! use nuwa_core::{mock::MockGil, nogil, GilOps};
//!
//! // Library code: generic over the backend.
//! fn checksum<G: GilOps>(gil: &G, data: &[u8]) -> u32 {
//!     nogil!(gil => { data.iter().map(|&b| u32::from(b)).sum() })
//! }
//!
//! // The extension calls `checksum(&nuwa_ffi::CPython, ...)`; the test:
//! let gil = MockGil::new();
//! assert_eq!(checksum(&gil, b"\x01\x02\x03"), 6);
//! assert_eq!(gil.releases(), 1);
//! gil.done(); // held again, every release matched by one reacquire
//! ```
//!
//! `MockGil` is not `Sync`: it models a single thread, and a strict-form
//! closure (which must be `Send`) cannot capture it. To share a mock between
//! threads, check that a reacquire happens on the releasing thread, or have
//! the mock check itself when dropped, use `nuwa_std::ThreadCheckedMock`.
//! `MockGil` cannot check itself on drop: without `std` it cannot tell
//! whether a panic is already unwinding, and a second panic would abort the
//! test. Call [`done`](MockGil::done) at the end of each test.

use core::cell::Cell;
use core::fmt;

use crate::GilOps;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The thread holds the GIL.
    Held,
    /// Release number `serial` is outstanding.
    Released { serial: usize },
    /// The thread never held the GIL (a thread Python does not know).
    NeverHeld,
}

/// A mock GIL for one thread; see the [module documentation](self).
///
/// Protocol breaches it reports by panicking:
///
/// - a reacquire while the GIL is held (a reacquire without a release);
/// - a reacquire on a mock whose thread never held the GIL;
/// - a reacquire with a state from another `MockGil`, or from an earlier
///   release that was already reacquired;
/// - at [`done`](MockGil::done): the GIL not back in its starting phase, or
///   releases and reacquires not equal.
///
/// A release while the GIL is already released releases nothing and returns
/// `None`, exactly as a real backend does for a nested block; it is counted
/// by [`skipped`](MockGil::skipped).
///
/// A breach found while a panic is already unwinding (for example a guard
/// dropped by a failing assertion inside a block) aborts the test binary, as
/// any panic during unwinding does.
pub struct MockGil {
    phase: Cell<Phase>,
    releases: Cell<usize>,
    reacquires: Cell<usize>,
    skipped: Cell<usize>,
    signal_checks: Cell<usize>,
    /// The signal check at which a "signal" is found, if one is scheduled.
    signal_at: Cell<Option<usize>>,
}

/// The state a [`MockGil`] hands out on release: which mock, which release.
///
/// It is `Clone` so that tests can try to reacquire twice with one state and
/// see the mock catch it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MockState {
    mock: *const MockGil,
    serial: usize,
}

impl MockState {
    /// The number of the release that produced this state (the first is 1).
    pub fn serial(&self) -> usize {
        self.serial
    }
}

impl MockGil {
    /// A mock whose thread holds the GIL, as a thread that Python called into.
    pub const fn new() -> Self {
        Self::starting(Phase::Held)
    }

    /// A mock whose thread never holds the GIL, as a thread the extension
    /// spawned itself: every release releases nothing.
    pub const fn never_held() -> Self {
        Self::starting(Phase::NeverHeld)
    }

    const fn starting(start: Phase) -> Self {
        MockGil {
            phase: Cell::new(start),
            releases: Cell::new(0),
            reacquires: Cell::new(0),
            skipped: Cell::new(0),
            signal_checks: Cell::new(0),
            signal_at: Cell::new(None),
        }
    }

    /// Whether the thread holds the GIL now.
    pub fn is_held(&self) -> bool {
        self.phase.get() == Phase::Held
    }

    /// How many releases released the GIL.
    pub fn releases(&self) -> usize {
        self.releases.get()
    }

    /// How many reacquires took the GIL back.
    pub fn reacquires(&self) -> usize {
        self.reacquires.get()
    }

    /// How many releases released nothing because the GIL was not held
    /// (nested blocks, or a mock made with [`never_held`](Self::never_held)).
    pub fn skipped(&self) -> usize {
        self.skipped.get()
    }

    /// How many signal checks ran ([`GilOps::check_signals`], which a due
    /// `nuwa_ffi::SignalCheck::check` calls with the GIL taken back).
    pub fn signal_checks(&self) -> usize {
        self.signal_checks.get()
    }

    /// A "signal" arrives before signal check number `check` (the first
    /// check of the mock's life is 1; see [`signal_checks`](Self::signal_checks)):
    /// that check, or the next one if it has passed, finds that a handler
    /// raised, as CPython's does after Ctrl-C, and `SignalCheck::check`
    /// returns `Err(Interrupted)`. Once found, the signal is gone.
    ///
    /// # Examples
    ///
    /// ```
    /// use nuwa_core::{mock::MockGil, GilOps};
    ///
    /// let gil = MockGil::new();
    /// gil.signal_at(2);
    /// // SAFETY: the mock's GIL is held (no block runs).
    /// let found: [bool; 3] = core::array::from_fn(|_| unsafe { gil.check_signals() });
    /// assert_eq!(found, [false, true, false]);
    /// assert_eq!(gil.signal_checks(), 3);
    /// ```
    pub fn signal_at(&self, check: usize) {
        self.signal_at.set(Some(check));
    }

    /// Checks that the mock is back where it started: no release is
    /// outstanding, so every release was matched by exactly one reacquire.
    ///
    /// # Panics
    ///
    /// If a release is still outstanding.
    #[track_caller]
    pub fn done(&self) {
        if let Phase::Released { serial } = self.phase.get() {
            let (releases, reacquires) = (self.releases(), self.reacquires());
            panic!(
                "MockGil: the GIL is still released (release #{serial} was never reacquired; \
                 {releases} releases, {reacquires} reacquires)"
            );
        }
    }
}

impl Default for MockGil {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MockGil {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockGil")
            .field("held", &self.is_held())
            .field("releases", &self.releases())
            .field("reacquires", &self.reacquires())
            .field("skipped", &self.skipped())
            .field("signal_checks", &self.signal_checks())
            .finish()
    }
}

// SAFETY: `release` returns `Some` only when the mock was `Held`, and moves it
// to `Released`; `reacquire` accepts only the state of the outstanding release
// and moves the mock back to `Held`. A mock is `!Sync`, so one thread uses it.
unsafe impl GilOps for MockGil {
    type State = MockState;
    /// The mock's own GIL: a `Released` from a mock block cannot be passed to
    /// code that needs the interpreter's.
    type Gil = MockGil;

    unsafe fn release(&self) -> Option<MockState> {
        match self.phase.get() {
            Phase::Held => {
                let serial = self.releases.get() + 1;
                self.releases.set(serial);
                self.phase.set(Phase::Released { serial });
                Some(MockState { mock: self, serial })
            }
            Phase::Released { .. } | Phase::NeverHeld => {
                self.skipped.set(self.skipped.get() + 1);
                None
            }
        }
    }

    #[track_caller]
    unsafe fn reacquire(&self, state: MockState) {
        let got = state.serial;
        match self.phase.get() {
            Phase::Held => panic!(
                "MockGil: reacquire without a release: the GIL is already held \
                 (state of release #{got})"
            ),
            Phase::NeverHeld => panic!(
                "MockGil: reacquire without a release: this thread never held the GIL \
                 (state of release #{got})"
            ),
            Phase::Released { serial } => {
                if !core::ptr::eq(state.mock, self) {
                    panic!(
                        "MockGil: reacquire with a wrong state: it comes from another MockGil \
                         (release #{got} there; release #{serial} is outstanding here)"
                    );
                }
                if got != serial {
                    panic!(
                        "MockGil: reacquire with a wrong state: it is from release #{got}, \
                         but release #{serial} is the one outstanding"
                    );
                }
                self.reacquires.set(self.reacquires.get() + 1);
                self.phase.set(Phase::Held);
            }
        }
    }

    fn is_held(&self) -> bool {
        MockGil::is_held(self)
    }

    /// Counts the check, and finds the signal [`signal_at`](MockGil::signal_at)
    /// scheduled.
    ///
    /// # Panics
    ///
    /// If the mock's GIL is not held: a check outside a part of a block.
    #[track_caller]
    unsafe fn check_signals(&self) -> bool {
        if !self.is_held() {
            panic!("MockGil: signal check without the GIL (it must run in a part of the block)");
        }
        let check = self.signal_checks.get() + 1;
        self.signal_checks.set(check);
        match self.signal_at.get() {
            Some(at) if at <= check => {
                self.signal_at.set(None);
                true
            }
            _ => false,
        }
    }
}
