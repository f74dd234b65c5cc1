"""Results against pure-Python references, edge values included."""

from __future__ import annotations

import math
import random

import pytest

import my_extension
import pcg_reference as ref


class TestPcgReference:
    """The Python copy of the generator matches rand_pcg's own test vectors,
    so comparing compute_pi with it checks the extension, not a guess."""

    def test_from_seed_vector(self):
        rng = ref.Pcg64.from_seed(bytes(range(1, 33)))
        assert rng.next_u64() == 8740028313290271629

    def test_seed_from_u64_vector(self):
        assert ref.Pcg64.seed_from_u64(0).next_u64() == 2354861276966075475

    def test_pcg_c_reference_vector(self):
        rng = ref.Pcg64.new(42, 54)
        got = [rng.next_u64() for _ in range(6)]
        assert got == [
            0x86B1DA1D72062B68,
            0x1304AA46C9853D39,
            0xA3670E9E0DD50358,
            0xF9090E529A7DAE00,
            0xC85B9FD837996F2C,
            0x606121F8E3919196,
        ]


class TestComputePi:
    @pytest.mark.parametrize("seed", [0, 1, 2, 42, 12345, 2**32, 2**63, 2**64 - 1])
    @pytest.mark.parametrize("iterations", [1, 2, 3, 10, 257, 2000])
    def test_exactly_the_reference(self, iterations, seed):
        expected = ref.compute_pi(iterations, seed)
        assert my_extension.compute_pi(iterations, seed) == expected
        assert my_extension.compute_pi(iterations, seed=seed, release=False) == expected

    def test_default_seed_is_zero(self):
        assert my_extension.compute_pi(500) == my_extension.compute_pi(500, 0)

    def test_repeatable(self):
        first = my_extension.compute_pi(10_000, 7)
        assert all(my_extension.compute_pi(10_000, 7) == first for _ in range(5))

    def test_seeds_differ(self):
        assert len({my_extension.compute_pi(1000, seed) for seed in range(10)}) > 1

    def test_results_are_multiples_of_four_over_n(self):
        for n in (1, 3, 7):
            value = my_extension.compute_pi(n, 99)
            assert (value * n / 4.0).is_integer()
            assert 0.0 <= value <= 4.0

    @pytest.mark.parametrize("seed", range(4))
    def test_statistically_close_to_pi(self, seed):
        n = 1_000_000
        p = math.pi / 4
        sigma = 4 * math.sqrt(p * (1 - p) / n)  # about 0.0016
        assert abs(my_extension.compute_pi(n, seed) - math.pi) < 5 * sigma

    def test_bool_and_index_objects_are_ints(self):
        class Index:
            def __index__(self):
                return 20

        assert my_extension.compute_pi(True) == ref.compute_pi(1)
        assert my_extension.compute_pi(Index(), Index()) == ref.compute_pi(20, 20)


class TestProcessImage:
    @staticmethod
    def inverted(data: bytes) -> bytes:
        return bytes(255 - b for b in data)

    @pytest.mark.parametrize("release", [True, False])
    def test_empty(self, release):
        assert my_extension.process_image(b"", release=release) == b""

    @pytest.mark.parametrize("byte", [0, 1, 127, 128, 254, 255])
    def test_one_byte(self, byte):
        out = my_extension.process_image(bytes([byte]))
        assert out == bytes([byte ^ 255])
        assert type(out) is bytes

    def test_all_byte_values(self):
        data = bytes(range(256))
        assert my_extension.process_image(data) == self.inverted(data)
        assert my_extension.process_image(data, release=False) == self.inverted(data)

    def test_large(self):
        data = random.Random(3).randbytes(8 * 1024 * 1024 + 5)
        out = my_extension.process_image(data)
        assert len(out) == len(data)
        assert out == data.translate(bytes(range(255, -1, -1)))

    def test_twice_is_identity(self):
        data = random.Random(4).randbytes(10_000)
        assert my_extension.process_image(my_extension.process_image(data)) == data

    def test_input_untouched_and_result_new(self):
        data = bytes(range(10))
        out = my_extension.process_image(data)
        assert data == bytes(range(10))
        assert out is not data

    def test_bytes_subclass_accepted(self):
        class Pixels(bytes):
            pass

        assert my_extension.process_image(Pixels(b"\x00\xff")) == b"\xff\x00"


def sum_of_squares(n: int) -> int:
    return sum(i * i for i in range(n))


LARGEST_N = 3_810_778


class TestExpensiveComputation:
    @pytest.mark.parametrize("n", [0, 1, 2, 3, 10, 1000, 123_457])
    def test_small(self, n):
        assert my_extension.expensive_computation(n) == sum_of_squares(n)
        assert my_extension.expensive_computation(n, release=False) == sum_of_squares(n)

    def test_large(self):
        n = 2_000_000
        assert my_extension.expensive_computation(n) == (n - 1) * n * (2 * n - 1) // 6

    def test_largest_n_that_fits(self):
        expected = (LARGEST_N - 1) * LARGEST_N * (2 * LARGEST_N - 1) // 6
        assert expected < 2**64 <= expected + LARGEST_N**2
        assert my_extension.expensive_computation(LARGEST_N) == expected

    @pytest.mark.parametrize("n", [LARGEST_N + 1, LARGEST_N + 2, 10**9, 2**63, 2**64 - 1])
    def test_overflow_is_an_error_not_a_wrapped_value(self, n):
        with pytest.raises(OverflowError, match=r"does not fit in 64 bits"):
            my_extension.expensive_computation(n)

    def test_n_of_2_to_64_or_more(self):
        with pytest.raises(OverflowError, match=r"^n must be < 2\*\*64, got 18446744073709551616$"):
            my_extension.expensive_computation(2**64)

    def test_bool_is_an_int(self):
        assert my_extension.expensive_computation(True) == 0
        assert my_extension.expensive_computation(False) == 0


def norm(values) -> float:
    total = 0.0
    for x in values:
        total += float(x) * float(x)
    return math.sqrt(total)


class TestPatterns:
    @pytest.mark.parametrize(
        "data",
        [
            [],
            [0.0],
            [3, 4],
            [-1.5],
            (1e300, 1e300),
            [1e-200, 1e-200],
            range(100),
            [random.Random(5).uniform(-1e6, 1e6) for _ in range(10_000)],
        ],
        ids=["empty", "zero", "3-4-5", "negative", "overflow-to-inf", "underflow", "range", "random"],
    )
    def test_against_python(self, data):
        expected = norm(data)
        for release in (True, False):
            good = my_extension.good_pattern(data, release=release)
            bad = my_extension.bad_pattern(data, release=release)
            assert good == expected or (math.isnan(good) and math.isnan(expected))
            # Same summation order: bit-identical, not merely close.
            assert good.hex() == bad.hex()

    def test_empty_is_positive_zero(self):
        assert math.copysign(1.0, my_extension.good_pattern([])) == 1.0
        assert math.copysign(1.0, my_extension.bad_pattern([])) == 1.0

    def test_nan_and_inf(self):
        assert math.isnan(my_extension.good_pattern([1.0, float("nan")]))
        assert my_extension.bad_pattern([float("-inf")]) == math.inf

    def test_any_iterable_of_numbers(self):
        from decimal import Decimal
        from fractions import Fraction

        data = [1, 2.5, True, Fraction(1, 3), Decimal("0.25")]
        assert my_extension.good_pattern(data) == norm(data)
        assert my_extension.good_pattern(iter(data)) == norm(data)
        assert my_extension.bad_pattern(x for x in data) == norm(data)
        import array

        floats = array.array("d", [0.5] * 64)
        assert my_extension.good_pattern(floats) == norm(floats)
