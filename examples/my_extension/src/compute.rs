//! The computations, in plain Rust: no Python object and no C API call, so
//! they may run with the GIL released.

use core::mem::MaybeUninit;

use rand_core::{Rng, SeedableRng};
use rand_pcg::Pcg64;

/// A uniform `f64` in `[0, 1)`: the top 53 bits of `bits`, scaled by 2⁻⁵³.
#[inline]
fn unit_f64(bits: u64) -> f64 {
    const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
    (bits >> 11) as f64 * SCALE
}

/// A Monte Carlo estimate of π, made in steps: `iterations` points thrown
/// into the unit square, counting those inside the quarter circle.
///
/// The generator is a PCG64 seeded from `seed`, so the result depends on the
/// seed and the total number of points only: not on the thread, on other
/// calls, nor on how the work is split into steps.
pub(crate) struct PiEstimate {
    rng: Pcg64,
    inside: u64,
    thrown: u64,
}

impl PiEstimate {
    pub(crate) fn new(seed: u64) -> Self {
        PiEstimate {
            rng: Pcg64::seed_from_u64(seed),
            inside: 0,
            thrown: 0,
        }
    }

    /// Throws `points` more points.
    pub(crate) fn throw(&mut self, points: u64) {
        let mut inside = 0;
        for _ in 0..points {
            let x = unit_f64(self.rng.next_u64());
            let y = unit_f64(self.rng.next_u64());
            if x * x + y * y <= 1.0 {
                inside += 1;
            }
        }
        self.inside += inside;
        self.thrown += points;
    }

    /// How many points were thrown so far.
    pub(crate) fn thrown(&self) -> u64 {
        self.thrown
    }

    /// The estimate from the points thrown so far (NaN before the first).
    pub(crate) fn pi(&self) -> f64 {
        4.0 * self.inside as f64 / self.thrown as f64
    }
}

/// Writes every byte of `input`, inverted (`b ^ 0xff`), into `output`.
///
/// `output` may be uninitialised memory; it must be as long as `input`.
pub(crate) fn invert(input: &[u8], output: &mut [MaybeUninit<u8>]) {
    assert_eq!(input.len(), output.len(), "invert: lengths differ");
    for (out, &byte) in output.iter_mut().zip(input) {
        out.write(byte ^ 0xff);
    }
}

/// The sum of `i * i` for `0 <= i < n`, or `None` if it does not fit in a
/// `u64`. A plain loop, checked at every step: never a wrapped value.
pub(crate) fn sum_of_squares_below(n: u64) -> Option<u64> {
    let mut total: u64 = 0;
    for i in 0..n {
        total = total.checked_add(i.checked_mul(i)?)?;
    }
    Some(total)
}

/// The Euclidean norm, `sqrt(sum(x * x))`, summed left to right (as the
/// per-element loop of `bad_pattern` does, so both give the same bits).
pub(crate) fn norm(values: &[f64]) -> f64 {
    let mut sum = 0.0;
    for &x in values {
        sum += x * x;
    }
    sum.sqrt()
}
