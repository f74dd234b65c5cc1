//! The library half of `examples/pyo3_extension`: code that releases the GIL,
//! written once against nuwa's backend traits and with no dependency on PyO3.
//!
//! Each function takes its backend as a parameter. The PyO3 module passes an
//! adapter that releases through PyO3's own `Python::detach`
//! (`nuwa_ffi::Detach`, feature `pyo3`); the unit tests below pass nuwa's mocks and run
//! without Python.
//!
//! - The strict form ([`Nogil::nogil`], on any [`Nogil`] backend) is the
//!   one for code that may meet PyO3: its closure must be `Send`, so it
//!   cannot capture a `Python<'py>` or a `Bound<'py, T>`, and a callback
//!   runs with the GIL held again through [`Released::with_gil`].
//! - The in-place form ([`nuwa_core::nogil!`], generic over [`GilOps`]) is
//!   for pure Rust work that wants `return` and `?` to leave the function
//!   ([`parse_sum`]). In a PyO3 process it must touch no PyO3 object: PyO3
//!   still counts the thread as attached inside it.
//! - Ctrl-C: [`Fnv1a::update`] checks for signals with a
//!   [`SignalCheck`](nuwa_ffi::SignalCheck) between chunks and changes
//!   nothing unless it ran to the end; a mock's scheduled "signal" tests it.

#![deny(missing_docs, missing_debug_implementations)]

mod hash;

pub use hash::Fnv1a;

use std::error::Error;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nuwa_core::{GilOps, GilUnavailable, Nogil, Released};

/// Estimates π from `iterations` points of a generator seeded with `seed`,
/// with the GIL released for the whole computation.
///
/// The result depends on the arguments only (not on the thread or on other
/// calls), so parallel calls give the same values as serial ones.
/// `iterations == 0` gives `NaN`, as `0.0 / 0.0` does; the extension refuses it
/// before calling.
///
/// # Examples
///
/// ```
/// use nuwa_core::mock::MockGil;
///
/// let gil = MockGil::new();
/// let pi = pyo3_extension_core::monte_carlo_pi(&gil, 100_000, 1);
/// assert!((pi - std::f64::consts::PI).abs() < 0.05);
/// assert_eq!((gil.releases(), gil.reacquires()), (1, 1));
/// ```
pub fn monte_carlo_pi<N: Nogil>(gil: N, iterations: u64, seed: u64) -> f64 {
    gil.nogil(|_| {
        let mut rng = SplitMix64(seed);
        let mut inside: u64 = 0;
        for _ in 0..iterations {
            let (x, y) = (rng.unit_f64(), rng.unit_f64());
            if x * x + y * y <= 1.0 {
                inside += 1;
            }
        }
        4.0 * inside as f64 / iterations as f64
    })
}

/// Why [`sum_of_squares`] stopped before the end.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped<E> {
    /// The progress callback returned this error.
    Callback(E),
    /// The GIL could not be taken back to call the callback, so it was not
    /// called (see [`GilUnavailable`]).
    GilUnavailable(GilUnavailable),
}

impl<E: fmt::Display> fmt::Display for Stopped<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stopped::Callback(e) => write!(f, "the progress callback failed: {e}"),
            Stopped::GilUnavailable(e) => e.fmt(f),
        }
    }
}

impl<E: Error + 'static> Error for Stopped<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Stopped::Callback(e) => Some(e),
            Stopped::GilUnavailable(e) => Some(e),
        }
    }
}

/// The sum of `x * x` over `data`, with the GIL released, calling
/// `progress(done, partial_sum)` with the GIL held after every `every`
/// elements (and after the last, shorter, chunk).
///
/// The callback is where Python code runs: the extension's callback calls a
/// Python function, with the GIL taken back by [`Released::with_gil`] and
/// released again when it returns. An error from the callback stops the sum
/// and is returned as [`Stopped::Callback`]; a panic in it unwinds out of
/// this function with the GIL held again.
///
/// # Errors
///
/// [`Stopped::Callback`] with the callback's error, or
/// [`Stopped::GilUnavailable`] if the GIL could not be taken back for it.
///
/// # Examples
///
/// ```
/// use std::num::NonZeroUsize;
/// use nuwa_core::mock::MockGil;
///
/// let gil = MockGil::new();
/// let mut seen = Vec::new();
/// let every = NonZeroUsize::new(2).unwrap();
/// let total = pyo3_extension_core::sum_of_squares(&gil, &[1.0, 2.0, 3.0], every, |done, sum| {
///     seen.push((done, sum));
///     Ok::<(), ()>(())
/// });
/// assert_eq!(total, Ok(14.0));
/// assert_eq!(seen, [(2, 5.0), (3, 14.0)]);
/// assert_eq!((gil.releases(), gil.reacquires()), (3, 3)); // the block, then once per callback
/// ```
pub fn sum_of_squares<N, E, P>(
    gil: N,
    data: &[f64],
    every: NonZeroUsize,
    mut progress: P,
) -> Result<f64, Stopped<E>>
where
    N: Nogil,
    E: Send,
    P: FnMut(usize, f64) -> Result<(), E> + Send,
{
    gil.nogil(|released: &mut Released<'_, N::Gil>| {
        let mut total = 0.0;
        let mut done = 0;
        for chunk in data.chunks(every.get()) {
            total += chunk.iter().map(|x| x * x).sum::<f64>();
            done += chunk.len();
            released
                .with_gil(|| progress(done, total))
                .map_err(Stopped::GilUnavailable)?
                .map_err(Stopped::Callback)?;
        }
        Ok(total)
    })
}

/// Waits, with the GIL released, until `flag` is set or `timeout` has passed,
/// and says whether it was set. `entered`, if given, is set once the GIL is
/// released, so that whoever sets `flag` can wait for it first.
///
/// This is how the extension's tests prove a release without timing: the
/// flag can only be set by another Python thread, which needs the GIL to run;
/// with a backend that keeps the GIL, the same wait must time out.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::time::Duration;
/// use nuwa_std::ThreadCheckedMock;
///
/// let gil = ThreadCheckedMock::new();
/// let (flag, entered) = (AtomicBool::new(false), AtomicBool::new(false));
/// std::thread::scope(|s| {
///     s.spawn(|| {
///         while !entered.load(Ordering::Acquire) {}
///         flag.store(true, Ordering::Release);
///     });
///     let set = pyo3_extension_core::wait_for(&gil, &flag, Some(&entered), Duration::from_secs(10));
///     assert!(set);
/// });
/// gil.done();
/// ```
pub fn wait_for<N: Nogil>(
    gil: N,
    flag: &AtomicBool,
    entered: Option<&AtomicBool>,
    timeout: Duration,
) -> bool {
    gil.nogil(|_| {
        if let Some(entered) = entered {
            entered.store(true, Ordering::Release);
        }
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if flag.load(Ordering::Acquire) {
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            thread::sleep(Duration::from_micros(100));
        }
    })
}

/// Why [`parse_sum`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseSumError {
    /// The item at `index` is not a non-negative integer.
    NotANumber {
        /// The position of the item.
        index: usize,
    },
    /// Adding the item at `index` overflows a `u64`.
    Overflow {
        /// The position of the item.
        index: usize,
    },
}

impl fmt::Display for ParseSumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseSumError::NotANumber { index } => {
                write!(f, "item {index} is not a non-negative integer")
            }
            ParseSumError::Overflow { index } => {
                write!(f, "the sum overflows a 64-bit integer at item {index}")
            }
        }
    }
}

impl Error for ParseSumError {}

/// Parses every item as a `u64` and adds them up, with the GIL released:
/// the in-place form, where `?` and `return` leave this function from inside
/// the block (the GIL is taken back first).
///
/// It touches no Python object and no PyO3 type, which is what makes the
/// in-place form safe in a PyO3 process: PyO3 does not know the GIL is
/// released inside, so nothing in the block may ask PyO3 for anything.
///
/// # Errors
///
/// [`ParseSumError::NotANumber`] for the first item that is not a
/// non-negative integer, [`ParseSumError::Overflow`] if the sum does not fit.
///
/// # Examples
///
/// ```
/// use nuwa_core::mock::MockGil;
/// use pyo3_extension_core::{parse_sum, ParseSumError};
///
/// let gil = MockGil::new();
/// let items = ["1", "x"].map(String::from);
/// assert_eq!(parse_sum(&gil, &items), Err(ParseSumError::NotANumber { index: 1 }));
/// gil.done(); // `?` left the block and the GIL was taken back
/// ```
pub fn parse_sum<G: GilOps>(gil: G, items: &[String]) -> Result<u64, ParseSumError> {
    nuwa_core::nogil!(gil => {
        let mut total: u64 = 0;
        for (index, item) in items.iter().enumerate() {
            let value: u64 = item
                .trim()
                .parse()
                .map_err(|_| ParseSumError::NotANumber { index })?;
            total = match total.checked_add(value) {
                Some(total) => total,
                None => return Err(ParseSumError::Overflow { index }),
            };
        }
        Ok(total)
    })
}

/// SplitMix64 (Steele, Lea and Flood): a small generator, good enough for a
/// Monte Carlo estimate, that needs no dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform `f64` in `[0, 1)`: the top 53 bits, scaled by 2⁻⁵³.
    fn unit_f64(&mut self) -> f64 {
        const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
        (self.next_u64() >> 11) as f64 * SCALE
    }
}

#[cfg(test)]
mod tests;
