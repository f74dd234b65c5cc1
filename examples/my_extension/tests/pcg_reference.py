"""A pure-Python copy of the generator behind ``compute_pi``, bit for bit.

``rand_core`` 0.10 ``SeedableRng::seed_from_u64`` fills the 32-byte seed
with 4-byte words from a PCG32 stream (advance, then the XSH-RR output,
little-endian). ``rand_pcg`` 0.10 ``Pcg64`` (``Lcg128Xsl64``) reads that
seed as four little-endian u64: state = w0 | w1 << 64, increment =
(w2 | w3 << 64) | 1; it then adds the increment to the state and steps once.
Each ``next_u64`` steps the 128-bit LCG and applies the XSL-RR output.
"""

from __future__ import annotations

MASK32 = (1 << 32) - 1
MASK64 = (1 << 64) - 1
MASK128 = (1 << 128) - 1

PCG32_MUL = 0x5851_F42D_4C95_7F2D
PCG32_INC = 0xA176_54E4_6FBE_17F3
PCG64_MUL = 0x2360_ED05_1FC6_5DA4_4385_DF64_9FCC_F645


def _rotr32(x: int, r: int) -> int:
    return ((x >> r) | (x << ((32 - r) & 31))) & MASK32


def _rotr64(x: int, r: int) -> int:
    return ((x >> r) | (x << ((64 - r) & 63))) & MASK64


def seed_from_u64(state: int) -> bytes:
    """``SeedableRng::seed_from_u64`` for a 32-byte seed."""
    out = bytearray()
    for _ in range(32 // 4):
        state = (state * PCG32_MUL + PCG32_INC) & MASK64
        xorshifted = (((state >> 18) ^ state) >> 27) & MASK32
        rot = state >> 59
        out += _rotr32(xorshifted, rot).to_bytes(4, "little")
    return bytes(out)


class Pcg64:
    """``rand_pcg::Pcg64``: 128-bit LCG, XSL-RR output to 64 bits."""

    def __init__(self, state: int, increment: int) -> None:
        """``from_state_incr``: move away from the initial state, step once."""
        self.increment = increment & MASK128
        self.state = (state + self.increment) & MASK128
        self._step()

    @classmethod
    def from_seed(cls, seed: bytes) -> "Pcg64":
        w = [int.from_bytes(seed[8 * i : 8 * i + 8], "little") for i in range(4)]
        return cls(w[0] | (w[1] << 64), (w[2] | (w[3] << 64)) | 1)

    @classmethod
    def new(cls, state: int, stream: int) -> "Pcg64":
        """``Lcg128Xsl64::new``, PCG's own (state, stream) constructor."""
        return cls(state, (stream << 1) | 1)

    @classmethod
    def seed_from_u64(cls, seed: int) -> "Pcg64":
        return cls.from_seed(seed_from_u64(seed))

    def _step(self) -> None:
        self.state = (self.state * PCG64_MUL + self.increment) & MASK128

    def next_u64(self) -> int:
        self._step()
        s = self.state
        return _rotr64(((s >> 64) ^ s) & MASK64, s >> 122)


def unit_f64(bits: int) -> float:
    """The top 53 bits, scaled to [0, 1): exact in a double."""
    return (bits >> 11) * 2.0**-53


def compute_pi(iterations: int, seed: int = 0) -> float:
    rng = Pcg64.seed_from_u64(seed)
    inside = 0
    for _ in range(iterations):
        x = unit_f64(rng.next_u64())
        y = unit_f64(rng.next_u64())
        if x * x + y * y <= 1.0:
            inside += 1
    return 4.0 * inside / iterations
