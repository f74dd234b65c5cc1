//! A running hash that Ctrl-C can stop without leaving it half-updated.

use nuwa_ffi::{Interrupted, Nogil, SignalCheck};

/// FNV-1a, 64 bits: a running hash fed in pieces, as Python's `hashlib`
/// objects are.
///
/// Not a cryptographic hash; it stands for any state that long work
/// changes, here one that takes a second to feed a gigabyte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fnv1a {
    state: u64,
}

impl Fnv1a {
    /// The bytes hashed between two signal checks and progress reports.
    pub const CHUNK: usize = 1 << 20;

    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    /// The hash of nothing.
    pub const fn new() -> Self {
        Fnv1a {
            state: Self::OFFSET,
        }
    }

    /// The hash of everything fed so far.
    pub const fn digest(&self) -> u64 {
        self.state
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.state = (self.state ^ u64::from(b)).wrapping_mul(Self::PRIME);
        }
    }

    /// Feeds `data` with the GIL released through `gil`, one
    /// [`CHUNK`](Self::CHUNK) at a time; after each, `signals` checks for
    /// Ctrl-C and `progress(bytes_done)` runs with the GIL held (skipped
    /// where the GIL cannot be taken back).
    ///
    /// All or nothing: the chunks are hashed into a copy, which replaces
    /// `self` only once the last chunk is in. A Ctrl-C or an error from
    /// `progress` leaves `self` as it was, so the caller can retry or go on
    /// with other data.
    ///
    /// # Errors
    ///
    /// [`Interrupted`] (as `E`) if a signal handler raised, or `progress`'s
    /// error.
    ///
    /// # Examples
    ///
    /// ```
    /// use nuwa_core::mock::MockGil;
    /// use nuwa_ffi::{Interrupted, SignalCheck};
    /// use pyo3_extension_core::Fnv1a;
    ///
    /// let gil = MockGil::new();
    /// let data = vec![7u8; 3 * Fnv1a::CHUNK];
    /// let mut signals = SignalCheck::every(std::time::Duration::ZERO); // check every chunk
    /// let mut hasher = Fnv1a::new();
    /// gil.signal_at(2); // "Ctrl-C" found by the second check
    /// let stopped = hasher.update(&gil, &data, &mut signals, |_| Ok::<(), Interrupted>(()));
    /// assert!(stopped.is_err());
    /// assert_eq!(hasher, Fnv1a::new()); // unchanged
    /// hasher.update(&gil, &data, &mut signals, |_| Ok::<(), Interrupted>(())).unwrap();
    /// assert_ne!(hasher, Fnv1a::new());
    /// gil.done();
    /// ```
    pub fn update<N, E>(
        &mut self,
        gil: N,
        data: &[u8],
        signals: &mut SignalCheck,
        mut progress: impl FnMut(usize) -> Result<(), E> + Send,
    ) -> Result<(), E>
    where
        N: Nogil,
        E: From<Interrupted> + Send,
    {
        let mut copy = *self;
        gil.nogil(|released| -> Result<(), E> {
            let mut done = 0;
            for chunk in data.chunks(Self::CHUNK) {
                copy.write(chunk);
                done += chunk.len();
                signals.check(released)?; // Ctrl-C: leave with `copy` dropped
                if let Ok(reported) = released.with_gil(|| progress(done)) {
                    reported?;
                }
            }
            Ok(())
        })?;
        *self = copy; // the loop ran to its end: commit
        Ok(())
    }
}

impl Default for Fnv1a {
    fn default() -> Self {
        Self::new()
    }
}
