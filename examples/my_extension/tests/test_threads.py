"""A thread pool running thousands of mixed calls gets the serial results."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest

import my_extension

pytestmark = pytest.mark.timeout(300)


def make_calls(count: int, seed: int):
    """``count`` mixed calls (function, args, kwargs); a local RNG, so the
    calls are the same on every run."""
    rng = random.Random(seed)
    calls = []
    for _ in range(count):
        kind = rng.randrange(5)
        release = rng.random() < 0.8
        if kind == 0:
            calls.append((my_extension.compute_pi, (rng.randint(1, 3000), rng.getrandbits(64)), release))
        elif kind == 1:
            calls.append((my_extension.process_image, (rng.randbytes(rng.randint(0, 4096)),), release))
        elif kind == 2:
            calls.append((my_extension.expensive_computation, (rng.randint(0, 20_000),), release))
        elif kind == 3:
            data = [rng.uniform(-100, 100) for _ in range(rng.randint(0, 300))]
            calls.append((my_extension.good_pattern, (data,), release))
        else:
            data = [rng.uniform(-100, 100) for _ in range(rng.randint(0, 300))]
            calls.append((my_extension.bad_pattern, (data,), release))
    return calls


def run(call):
    function, args, release = call
    return function(*args, release=release)


@pytest.mark.parametrize("seed", [1, 2])
def test_pool_results_equal_serial_results(seed):
    calls = make_calls(3000, seed)
    serial = [run(c) for c in calls]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(run, calls, timeout=240))
    assert parallel == serial


def test_same_seed_same_pi_in_every_thread():
    args = [(5000, seed % 7) for seed in range(200)]
    expected = {seed: my_extension.compute_pi(5000, seed) for seed in range(7)}
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda a: my_extension.compute_pi(*a), args, timeout=240))
    assert results == [expected[s] for _, s in args]


def test_good_and_bad_patterns_agree_under_contention():
    rng = random.Random(9)
    data = [rng.uniform(-1, 1) for _ in range(20_000)]
    expected = my_extension.good_pattern(data)
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(my_extension.bad_pattern, data) for _ in range(8)]
        futures += [pool.submit(my_extension.good_pattern, data) for _ in range(8)]
        assert all(f.result(timeout=240) == expected for f in futures)
