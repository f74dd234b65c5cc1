"""The in-place nuwa_ffi::nogil! in a PyO3 module: where it is safe, and
where it crashes, as the README says.

``parse_sum`` uses it around pure Rust code, with ``?`` and ``return``
leaving the block: safe. ``_test_crash`` runs PyO3 code inside it:
each pattern must kill the child process that runs it (a signal: SIGSEGV, or
SIGABRT from CPython's fatal error), never finish, so that the README's
warning stays true. See crash_child.py for the per-version table.
"""

from __future__ import annotations

import pytest

from crash_child import PATTERNS, run_pattern

pytestmark = pytest.mark.timeout(300)


def test_parse_sum_in_place_with_early_exits(native):
    assert native.parse_sum(["1", " 2", "39 "]) == 42
    assert native.parse_sum([]) == 0
    # `?` leaves the block ...
    with pytest.raises(ValueError, match="item 1 is not a non-negative integer"):
        native.parse_sum(["1", "x", "3"])
    # ... and so does `return`.
    with pytest.raises(ValueError, match="overflows a 64-bit integer at item 1"):
        native.parse_sum(["1", str(2**64 - 1)])
    with pytest.raises(TypeError):
        native.parse_sum(["1", 2])
    # The GIL was taken back each time: the module keeps working.
    assert native.compute_pi(1000) > 0


@pytest.mark.parametrize("pattern", PATTERNS)
def test_pyo3_code_in_an_in_place_block_crashes(pattern):
    outcome = run_pattern(pattern)
    print(f"{pattern}: {outcome.describe()}")
    assert outcome.entered, f"the child never reached the block:\n{outcome.stderr}"
    assert outcome.returncode is not None, f"{pattern} hung instead of crashing"
    assert not outcome.survived, f"{pattern} ran to the end of the block: the README is wrong now"
    assert outcome.signal in ("SIGSEGV", "SIGABRT", "SIGBUS"), outcome.describe() + "\n" + outcome.stderr


def test_an_unknown_pattern_is_a_value_error(native):
    with pytest.raises(ValueError, match='unknown pattern "nope"'):
        native._test_crash("nope")
