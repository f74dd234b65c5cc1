use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::{self, ThreadId};

use nuwa_core::GilOps;

/// A mock GIL shared by threads, which also checks *who* releases and
/// reacquires.
///
/// It models one GIL owned by at most one thread. It starts owned by the
/// thread that creates it (as a Python thread calling into an extension).
/// A release from the owner releases it; a release from any other thread
/// releases nothing, as the real backend does for a thread that does not
/// hold the GIL. A reacquire must come from the thread that released, with
/// the state of the outstanding release.
///
/// Breaches panic with a message that names both threads or both releases.
/// Dropping the mock with a release outstanding panics too (unless a panic is
/// already unwinding), so a test that forgets [`done`](ThreadCheckedMock::done)
/// still fails.
/// (A breach detected while a panic is already unwinding, for example in a
/// guard's `Drop`, aborts the process, as any panic during unwinding does.)
///
/// # Examples
///
/// ```
/// use nuwa_core::nogil;
/// use nuwa_std::ThreadCheckedMock;
///
/// let gil = ThreadCheckedMock::new();
/// std::thread::scope(|s| {
///     // A thread that does not own the GIL releases nothing.
///     s.spawn(|| nogil!(gil => { /* work */ }));
/// });
/// nogil!(gil => { /* the owner releases */ });
/// assert_eq!((gil.releases(), gil.skipped()), (1, 1));
/// gil.done();
/// ```
pub struct ThreadCheckedMock {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The thread that holds the GIL, if any.
    owner: Option<ThreadId>,
    /// The outstanding release: its number and the thread that made it.
    outstanding: Option<(usize, ThreadId)>,
    releases: usize,
    reacquires: usize,
    skipped: usize,
    signal_checks: usize,
    /// The signal check at which a "signal" is found, if one is scheduled.
    signal_at: Option<usize>,
}

/// The state a [`ThreadCheckedMock`] hands out on release.
///
/// It is `Send` and `Clone` so that tests can try to reacquire on another
/// thread, or twice, and see the mock catch it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadCheckedState {
    mock: usize,
    serial: usize,
    thread: ThreadId,
}

impl ThreadCheckedState {
    /// The number of the release that produced this state (the first is 1).
    pub fn serial(&self) -> usize {
        self.serial
    }

    /// The thread that made the release.
    pub fn thread(&self) -> ThreadId {
        self.thread
    }
}

impl ThreadCheckedMock {
    /// A mock GIL held by the calling thread.
    pub fn new() -> Self {
        Self::owned_by(Some(thread::current().id()))
    }

    /// A mock GIL that no thread holds: every release releases nothing.
    pub fn held_by_nobody() -> Self {
        Self::owned_by(None)
    }

    fn owned_by(owner: Option<ThreadId>) -> Self {
        ThreadCheckedMock {
            inner: Mutex::new(Inner {
                owner,
                outstanding: None,
                releases: 0,
                reacquires: 0,
                skipped: 0,
                signal_checks: 0,
                signal_at: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic never leaves `Inner` half-updated, so a poisoned lock is fine.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The thread that holds the GIL now, if any.
    pub fn owner(&self) -> Option<ThreadId> {
        self.lock().owner
    }

    /// Whether the calling thread holds the GIL now.
    pub fn is_held_by_current(&self) -> bool {
        self.owner() == Some(thread::current().id())
    }

    /// How many releases released the GIL.
    pub fn releases(&self) -> usize {
        self.lock().releases
    }

    /// How many reacquires took the GIL back.
    pub fn reacquires(&self) -> usize {
        self.lock().reacquires
    }

    /// How many releases released nothing (the calling thread did not hold
    /// the GIL).
    pub fn skipped(&self) -> usize {
        self.lock().skipped
    }

    /// How many signal checks ran (see `nuwa_core::mock::MockGil::signal_checks`).
    pub fn signal_checks(&self) -> usize {
        self.lock().signal_checks
    }

    /// A "signal" arrives before signal check number `check`, counted from 1
    /// over the mock's life: that check, or the next one if it has passed,
    /// finds that a handler raised (see `nuwa_core::mock::MockGil::signal_at`).
    /// Any thread may schedule it; only the owner's checks run.
    pub fn signal_at(&self, check: usize) {
        self.lock().signal_at = Some(check);
    }

    /// Checks that no release is outstanding, so every release was matched
    /// by exactly one reacquire.
    ///
    /// # Panics
    ///
    /// If a release is still outstanding.
    #[track_caller]
    pub fn done(&self) {
        let inner = self.lock();
        let (releases, reacquires) = (inner.releases, inner.reacquires);
        if let Some((serial, thread)) = inner.outstanding {
            drop(inner);
            panic!(
                "ThreadCheckedMock: the GIL is still released (release #{serial} by thread \
                 {thread:?} was never reacquired; {releases} releases, {reacquires} reacquires)"
            );
        }
    }
}

impl Default for ThreadCheckedMock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ThreadCheckedMock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadCheckedMock")
            .field("state", &*self.lock())
            .finish()
    }
}

// SAFETY: `release` returns `Some` only to the owning thread and clears the
// owner; `reacquire` accepts only the outstanding state, on the thread that
// released, and makes that thread the owner again. All of it under one lock.
unsafe impl GilOps for ThreadCheckedMock {
    type State = ThreadCheckedState;
    type Gil = ThreadCheckedMock;

    unsafe fn release(&self) -> Option<ThreadCheckedState> {
        let me = thread::current().id();
        let mut inner = self.lock();
        if inner.owner != Some(me) {
            inner.skipped += 1;
            return None;
        }
        inner.releases += 1;
        let serial = inner.releases;
        inner.owner = None;
        inner.outstanding = Some((serial, me));
        Some(ThreadCheckedState {
            mock: self as *const Self as usize,
            serial,
            thread: me,
        })
    }

    #[track_caller]
    unsafe fn reacquire(&self, state: ThreadCheckedState) {
        let me = thread::current().id();
        let got = state.serial;
        let mut inner = self.lock();
        let breach = if state.mock != self as *const Self as usize {
            Some(format!(
                "reacquire with a wrong state: it comes from another mock (release #{got} there)"
            ))
        } else if state.thread != me {
            Some(format!(
                "GIL reacquired on thread {me:?}, but release #{got} was made on thread {:?}: \
                 the GIL must be taken back by the thread that released it",
                state.thread
            ))
        } else {
            match inner.outstanding {
                None => Some(format!(
                    "reacquire without a release (state of release #{got}; nothing is outstanding, \
                     owner {:?})",
                    inner.owner
                )),
                Some((serial, _)) if serial != got => Some(format!(
                    "reacquire with a wrong state: it is from release #{got}, but release \
                     #{serial} is the one outstanding"
                )),
                Some(_) => None,
            }
        };
        if let Some(message) = breach {
            drop(inner);
            panic!("ThreadCheckedMock: {message}");
        }
        inner.outstanding = None;
        inner.owner = Some(me);
        inner.reacquires += 1;
    }

    fn is_held(&self) -> bool {
        self.is_held_by_current()
    }

    /// Counts the check, and finds the signal `signal_at` scheduled.
    ///
    /// # Panics
    ///
    /// If the calling thread does not hold the mock's GIL.
    #[track_caller]
    unsafe fn check_signals(&self) -> bool {
        let me = thread::current().id();
        let mut inner = self.lock();
        if inner.owner != Some(me) {
            let owner = inner.owner;
            drop(inner);
            panic!(
                "ThreadCheckedMock: signal check on thread {me:?} without the GIL (owner \
                 {owner:?}); it must run in a part of the block"
            );
        }
        inner.signal_checks += 1;
        match inner.signal_at {
            Some(at) if at <= inner.signal_checks => {
                inner.signal_at = None;
                true
            }
            _ => false,
        }
    }
}

impl Drop for ThreadCheckedMock {
    /// Checks, as [`done`](ThreadCheckedMock::done) does, that no release is
    /// outstanding, so that a test which forgot `done()` still fails. Skipped
    /// while a panic is unwinding (a second panic would abort, and the first
    /// one already fails the test).
    fn drop(&mut self) {
        if !thread::panicking() {
            self.done();
        }
    }
}
