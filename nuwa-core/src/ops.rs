//! The backend trait.

/// A backend that can release the GIL of the calling thread and take it back.
///
/// nuwa's macros are written against this trait only. `nuwa-ffi` implements it
/// for the CPython interpreter that loaded the extension; [`MockGil`](crate::mock::MockGil)
/// implements it for unit tests that run without Python.
///
/// Write library code that must release the GIL as a function generic over
/// `G: GilOps` (or over [`Nogil`](crate::Nogil), which every `GilOps` is):
/// the extension passes the CPython backend, the unit test passes a mock and
/// then checks its counters.
///
/// A `&G` is a backend too, so `&ops` can be passed wherever `ops` can.
///
/// # Safety
///
/// Implementers promise, for every thread that calls these methods:
///
/// - [`release`](GilOps::release) returns `Some(state)` only if the calling
///   thread held the GIL and this call released it. Otherwise (the thread does
///   not hold it, it was already released by an enclosing block, there is no
///   interpreter) it releases nothing and returns `None`. It never releases a
///   GIL that the calling thread does not hold.
/// - [`reacquire`](GilOps::reacquire), given the `state` that the matching
///   `release` returned, takes the GIL back for the calling thread and
///   restores exactly that state, so that the thread is as it was before the
///   release.
/// - [`is_held`](GilOps::is_held) returns `true` only if the calling thread
///   holds the GIL at that moment (so that Python may be called). `false` is
///   always allowed: it is the default.
/// - [`reacquire_for_part`](GilOps::reacquire_for_part) keeps `reacquire`'s
///   promise and [`release_after_part`](GilOps::release_after_part)
///   `release`'s (the defaults call them).
/// - [`Gil`](GilOps::Gil) names the GIL that these methods release, take
///   back and report on: "the GIL" above is that one. A mock, or any
///   backend that does not take back the CPython interpreter's own GIL,
///   must name a type of its own, never `nuwa_ffi::CPython`: code handed a
///   `Released<'_, CPython>` calls the C API inside
///   [`Released::with_gil`](crate::Released::with_gil) (a `SignalCheck` runs
///   `PyErr_CheckSignals` there), trusting that the interpreter's GIL is held.
///
/// The macros rely on this to stay sound: a `None` from `release` means they
/// never call `reacquire`, nesting works because an inner `release` on the
/// same thread sees that nothing is held, `with_gil!` runs its part
/// without a reacquire only if `is_held` says the GIL is held, and a block's
/// [`Released`](crate::Released) is typed by `Gil` (the
/// [`WithGil`](crate::WithGil) contract).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a GIL backend (`nuwa_core::GilOps`)",
    label = "not a GIL backend",
    note = "a block takes a backend: `nuwa_ffi::CPython`, a mock, `&mut` a `nuwa_ffi::GilHeld` \
            token (`nogil!(&mut gil => {{ .. }})`), or a reference to one of these"
)]
pub unsafe trait GilOps {
    /// What a release hands back and the matching reacquire consumes
    /// (for CPython, the saved thread state).
    type State;

    /// Which GIL this backend releases: `nuwa_ffi::CPython` for every
    /// CPython backend, the mock's own type for a mock. It types the
    /// [`Released`](crate::Released) a block hands out, so that code which
    /// calls Python inside [`Released::with_gil`](crate::Released::with_gil)
    /// can require the interpreter's GIL (`Released<'_, CPython>`) and cannot
    /// be handed a mock's. A name, so `'static`: `nuwa_ffi::SignalCheck`
    /// tells the interpreter's from the others by it.
    type Gil: 'static;

    /// Releases the GIL if the calling thread holds it.
    ///
    /// Returns `Some(state)` if it released the GIL, `None` if it released
    /// nothing.
    ///
    /// # Safety
    ///
    /// After `Some(state)`, the calling thread no longer holds the GIL. The
    /// caller must pass `state` to [`reacquire`](GilOps::reacquire) on this
    /// same thread, exactly once, before this thread runs anything that needs
    /// the GIL (any Python API call) and before it returns to Python.
    /// [`Guard`](crate::Guard) and [`nogil!`](crate::nogil!) do this for you.
    unsafe fn release(&self) -> Option<Self::State>;

    /// Takes the GIL back and restores the state saved by `release`.
    ///
    /// # Safety
    ///
    /// `state` must come from a call to [`release`](GilOps::release) on this
    /// backend, made by the calling thread, that has not been reacquired yet.
    unsafe fn reacquire(&self, state: Self::State);

    /// Whether the calling thread holds the GIL now.
    ///
    /// Used only off the fast path: by a part ([`with_gil!`](crate::with_gil!))
    /// when its block released nothing, to tell "the GIL is still held here"
    /// (run the part) from "this thread does not hold it" (refuse). The
    /// default, `false`, is always safe.
    fn is_held(&self) -> bool {
        false
    }

    /// Takes the GIL back for a part of a block ([`with_gil!`](crate::with_gil!),
    /// [`Released::with_gil`](crate::Released::with_gil)), which
    /// [`release_after_part`](GilOps::release_after_part) ends: the block
    /// goes on after it. The default is [`reacquire`](GilOps::reacquire). A
    /// backend that tells a part from the end of its block (nuwa-ffi's
    /// release statistics, which count a block once whatever its parts)
    /// overrides both; a backend that wraps another forwards both.
    ///
    /// # Safety
    ///
    /// As for [`reacquire`](GilOps::reacquire).
    #[inline(always)]
    unsafe fn reacquire_for_part(&self, state: Self::State) {
        // SAFETY: the caller's obligations are `reacquire`'s.
        unsafe { self.reacquire(state) }
    }

    /// Releases the GIL again at the end of a part that
    /// [`reacquire_for_part`](GilOps::reacquire_for_part) began. The default
    /// is [`release`](GilOps::release).
    ///
    /// # Safety
    ///
    /// As for [`release`](GilOps::release).
    #[inline(always)]
    unsafe fn release_after_part(&self) -> Option<Self::State> {
        // SAFETY: the caller's obligations are `release`'s.
        unsafe { self.release() }
    }

    /// A part ([`with_gil!`](crate::with_gil!),
    /// [`Released::with_gil`](crate::Released::with_gil)) begins running its
    /// code, with the GIL held; `frame` is room in the stack frame that runs
    /// the part, which stays in place until
    /// [`part_ended`](GilOps::part_ended). The default does nothing. The
    /// CPython backend registers a handler there that parks the thread if
    /// CPython ends it inside the part at interpreter shutdown. A backend
    /// that wraps another forwards both hooks.
    ///
    /// # Safety
    ///
    /// `frame` lives in the stack frame of the calling code, is not moved,
    /// and is handed to `part_ended` on this thread before that frame is
    /// left; parts on one thread end in the reverse order they began.
    #[inline(always)]
    unsafe fn part_began(&self, frame: &PartFrame) {
        let _ = frame;
    }

    /// The part that [`part_began`](GilOps::part_began) began ends (before
    /// [`release_after_part`](GilOps::release_after_part)). The default does
    /// nothing.
    ///
    /// # Safety
    ///
    /// `frame` is what `part_began` was given on this thread, once.
    #[inline(always)]
    unsafe fn part_ended(&self, frame: &PartFrame) {
        let _ = frame;
    }

    /// Runs the signal handlers that are due (`nuwa_ffi::SignalCheck` calls
    /// it, in a part, with the GIL held): `true` if one raised, its
    /// exception then set on this thread. The mocks report a "signal" a test
    /// scheduled ([`MockGil::signal_at`](crate::mock::MockGil::signal_at)).
    /// The default, `false`, is a backend without signals. A backend whose
    /// [`Gil`](GilOps::Gil) is `nuwa_ffi::CPython` needs none: `SignalCheck`
    /// runs CPython's `PyErr_CheckSignals` itself for those. A backend that
    /// wraps another forwards it.
    ///
    /// # Safety
    ///
    /// The calling thread holds the GIL this backend names: inside a part
    /// ([`with_gil!`](crate::with_gil!), [`Released::with_gil`](crate::Released::with_gil)),
    /// or outside any block.
    #[inline(always)]
    unsafe fn check_signals(&self) -> bool {
        false
    }
}

/// Room for a backend in the stack frame that runs a `with_gil` part, from
/// [`GilOps::part_began`] to [`GilOps::part_ended`]. Not public API.
#[repr(C, align(16))]
pub struct PartFrame {
    words: core::cell::UnsafeCell<[core::mem::MaybeUninit<usize>; 4]>,
}

impl PartFrame {
    /// An empty frame.
    #[inline(always)]
    pub const fn new() -> Self {
        PartFrame {
            words: core::cell::UnsafeCell::new([core::mem::MaybeUninit::uninit(); 4]),
        }
    }

    /// The room itself: four machine words, aligned to 16 bytes, that the
    /// backend may write through this pointer while the part runs.
    #[inline(always)]
    pub fn as_ptr(&self) -> *mut core::ffi::c_void {
        self.words.get().cast()
    }
}

impl Default for PartFrame {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for PartFrame {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PartFrame")
    }
}

// SAFETY: every call is forwarded unchanged to `T`, which upholds the contract.
unsafe impl<T: GilOps + ?Sized> GilOps for &T {
    type State = T::State;
    type Gil = T::Gil;

    #[inline(always)]
    #[track_caller]
    unsafe fn release(&self) -> Option<Self::State> {
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { (**self).release() }
    }

    #[inline(always)]
    #[track_caller]
    unsafe fn reacquire(&self, state: Self::State) {
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { (**self).reacquire(state) }
    }

    #[inline]
    fn is_held(&self) -> bool {
        (**self).is_held()
    }

    #[inline(always)]
    unsafe fn reacquire_for_part(&self, state: Self::State) {
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { (**self).reacquire_for_part(state) }
    }

    #[inline(always)]
    unsafe fn release_after_part(&self) -> Option<Self::State> {
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { (**self).release_after_part() }
    }

    #[inline(always)]
    unsafe fn part_began(&self, frame: &PartFrame) {
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { (**self).part_began(frame) }
    }

    #[inline(always)]
    unsafe fn part_ended(&self, frame: &PartFrame) {
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { (**self).part_ended(frame) }
    }

    #[inline(always)]
    unsafe fn check_signals(&self) -> bool {
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { (**self).check_signals() }
    }
}

/// A backend that releases through `ops` only if `release` is `true`, and
/// otherwise runs blocks with the GIL held.
///
/// A block that kept the GIL still takes parts:
/// [`with_gil!`](crate::with_gil!) and [`Released::with_gil`](crate::Released::with_gil)
/// run them at once, as the GIL is held.
///
/// # Examples
///
/// ```
/// use nuwa_core::{mock::MockGil, nogil, ReleaseIf};
///
/// let gil = MockGil::new();
/// let kept = nogil!(ReleaseIf::new(&gil, false) => {
///     with_gil! { "called back with the GIL held" }
/// });
/// assert!(kept.is_ok());
/// assert_eq!(gil.releases(), 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReleaseIf<G> {
    ops: G,
    release: bool,
}

impl<G: GilOps> ReleaseIf<G> {
    /// A backend that releases through `ops` if `release` is `true`.
    pub const fn new(ops: G, release: bool) -> Self {
        ReleaseIf { ops, release }
    }
}

// SAFETY: when `release` is false nothing is released and no state handed
// out; otherwise every call is forwarded unchanged to `ops`. `is_held` is
// always `ops`'s answer.
unsafe impl<G: GilOps> GilOps for ReleaseIf<G> {
    type State = G::State;
    type Gil = G::Gil;

    #[inline(always)]
    #[track_caller]
    unsafe fn release(&self) -> Option<Self::State> {
        if self.release {
            // SAFETY: the caller's obligations are passed on unchanged.
            unsafe { self.ops.release() }
        } else {
            None
        }
    }

    #[inline(always)]
    #[track_caller]
    unsafe fn reacquire(&self, state: Self::State) {
        // SAFETY: a state exists only if `ops` released; the caller's
        // obligations are passed on unchanged.
        unsafe { self.ops.reacquire(state) }
    }

    #[inline]
    fn is_held(&self) -> bool {
        self.ops.is_held()
    }

    #[inline(always)]
    unsafe fn reacquire_for_part(&self, state: Self::State) {
        // SAFETY: as in `reacquire`.
        unsafe { self.ops.reacquire_for_part(state) }
    }

    #[inline(always)]
    unsafe fn release_after_part(&self) -> Option<Self::State> {
        if self.release {
            // SAFETY: the caller's obligations are passed on unchanged.
            unsafe { self.ops.release_after_part() }
        } else {
            None
        }
    }

    /// Forwarded whether or not the block released: the part runs code with
    /// the GIL either way.
    #[inline(always)]
    unsafe fn part_began(&self, frame: &PartFrame) {
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { self.ops.part_began(frame) }
    }

    #[inline(always)]
    unsafe fn part_ended(&self, frame: &PartFrame) {
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { self.ops.part_ended(frame) }
    }

    /// Forwarded whether or not the block released: the GIL is held either
    /// way when it is called.
    #[inline(always)]
    unsafe fn check_signals(&self) -> bool {
        // SAFETY: the caller's obligations are passed on unchanged.
        unsafe { self.ops.check_signals() }
    }
}
