"""Monte Carlo pi, image inversion and sums, computed in Rust with the GIL released.

The example extension of nuwa. Every function converts its arguments while
holding the GIL, computes in one block with the GIL released (so other
Python threads run meanwhile, and several calls from a thread pool run in
parallel), and converts the result once the GIL is back.

Every function takes a keyword-only ``release`` flag (``True`` or ``False``
only; default ``True``). ``release=False`` runs the very same computation
with the GIL held, for comparisons.
"""

from collections.abc import Callable, Iterable
from typing import SupportsFloat, SupportsIndex, TypedDict

__all__ = [
    "PanicError",
    "bad_pattern",
    "compute_pi",
    "expensive_computation",
    "good_pattern",
    "nogil_stats",
    "process_image",
    "reset_nogil_stats",
]

class PanicError(RuntimeError):
    """A Rust panic inside my_extension, caught before it could reach Python.

    The message is the panic's. The GIL has been taken back and the module
    stays usable.
    """

def compute_pi(
    iterations: SupportsIndex,
    seed: SupportsIndex = 0,
    *,
    release: bool = True,
    progress: Callable[[float], object] | None = None,
) -> float:
    """Estimate pi from ``iterations`` random points in the unit square (Monte Carlo).

    The generator is a PCG64 (``rand_pcg::Pcg64``) seeded from ``seed`` on
    every call, so the same arguments give the same result in any thread
    and in any order. Each coordinate is the top 53 bits of one 64-bit
    output, scaled to [0, 1).

    ``progress``, if given, is called with the fraction of the points done (a
    float in (0, 1]; the last call gets 1.0) at most 100 times, from inside
    the computation, with the GIL held, on the calling thread; its result is
    ignored. If it raises, the computation stops and the exception
    propagates (nothing is returned). Ctrl-C stops the computation within
    about 0.1 s when it runs on the main thread (KeyboardInterrupt); on
    other threads, stop it through ``progress`` (raise from it).

    Raises:
        TypeError: ``iterations`` or ``seed`` is not an int (a float is refused),
            or ``progress`` is neither callable nor None (before any work).
        ValueError: ``iterations`` < 1, or ``seed`` < 0.
        OverflowError: either is 2**64 or more.
        KeyboardInterrupt: Ctrl-C (or any exception a Python signal handler raised).
    """

def process_image(data: bytes, *, release: bool = True) -> bytes:
    """Return ``data`` with every byte inverted (``b ^ 255``).

    The result is allocated with the GIL held and filled with it released.

    Raises:
        TypeError: ``data`` is not ``bytes``. Mutable buffers (``bytearray``,
            ``memoryview``) are refused: another thread could change them
            while the GIL is released.
    """

def expensive_computation(n: SupportsIndex, *, release: bool = True) -> int:
    """Return the sum of ``i * i`` for ``0 <= i < n``, computed in a loop.

    The loop uses checked 64-bit unsigned arithmetic: the largest ``n`` whose
    result fits is 3810778. ``bool`` is accepted as an int, as Python does.

    Raises:
        TypeError: ``n`` is not an int (a float is refused).
        ValueError: ``n`` < 0.
        OverflowError: the result does not fit in 64 bits (never a wrapped value).
    """

def good_pattern(data: Iterable[SupportsFloat | SupportsIndex], *, release: bool = True) -> float:
    """Return ``sqrt(sum(x * x for x in data))``, summed left to right.

    The good way: every item is converted first, with the GIL held, then one
    block without the GIL runs the whole loop.

    Raises:
        TypeError: ``data`` is not iterable, or an item is not a real number
            (the message names its index).
    """

def bad_pattern(data: Iterable[SupportsFloat | SupportsIndex], *, release: bool = True) -> float:
    """The same result as :func:`good_pattern`, bit for bit, the bad way.

    The GIL is released and taken back around every single multiply-add: a
    block per tiny step costs far more than the step. Shown for the benchmark;
    do not copy.

    Raises:
        TypeError: as :func:`good_pattern`.
    """

# Test hooks: NOT public API. They may change or disappear without notice.

def _test_panic(message: str, *, in_place: bool = False) -> None:
    """Not public API. Panic with ``message`` in a block; always raises :class:`PanicError`."""

def _test_new_flag() -> int:
    """Not public API. A new unset process-wide flag; returns its id."""

def _test_set_flag(flag: int) -> None:
    """Not public API. Set a flag (this needs the GIL, which is the point)."""

def _test_flag_is_set(flag: int) -> bool:
    """Not public API. Whether a flag is set."""

def _test_wait_for_flag(
    flag: int, timeout: float, *, release: bool = True, entered: int | None = None
) -> bool:
    """Not public API. In one block: set ``entered``, then wait up to ``timeout`` s for ``flag``."""

def _test_sleep_in_block(seconds: float, *, entered: int | None = None) -> None:
    """Not public API. In a block that released the GIL: set ``entered``, then sleep ``seconds``."""

def _test_block_released() -> bool:
    """Not public API. Whether an empty block on this thread releases the GIL."""

def _test_nuwa_info() -> str:
    """Not public API. What nuwa_ffi found in this process, in one line."""

def _test_work_until_interrupted(
    steps: int,
    *,
    entered: int | None = None,
    check: bool = True,
    interval: float = 0.01,
    strict: bool = False,
    until: int | None = None,
) -> int:
    """Not public API. In one block: set ``entered``, then ``steps`` steps of 100 us,
    checking for signals every ``interval`` s unless ``check=False``, stopping early
    once the flag ``until`` is set; returns the steps done."""

def _test_work_done() -> int:
    """Not public API. Steps done by the last ``_test_work_until_interrupted`` on this thread."""

def _test_module_slots() -> list[str]:
    """Not public API. The module slots declared for the running CPython:
    'exec', then 'multiple_interpreters' (3.12+) and 'gil' (3.13+)."""

#: One call site's counters in :func:`nogil_stats`.
NogilSiteStats = TypedDict(
    "NogilSiteStats",
    {
        "file": str,
        "line": int,
        "blocks": int,
        "not_released": int,
        "short": int,
        "released_s": float,
        "max_released_s": float,
        "waiting_s": float,
        "max_waiting_s": float,
    },
)

def nogil_stats() -> list[NogilSiteStats]:
    """nuwa's release statistics, one dict per call site of a block in this module.

    ``short`` counts blocks released for less than 10 microseconds: blocks
    that cost more than they gave. Raises ``RuntimeError`` if the module was
    built without nuwa's ``stats`` feature.
    """

def reset_nogil_stats() -> None:
    """Set every counter of :func:`nogil_stats` back to zero."""

def _test_stats_pause(point: int) -> None:
    """Not public API. Stop a thread inside nuwa's registry of call sites (0, 1, 2)."""

def _test_stats_probe(point: int) -> int:
    """Not public API. Run the strict-form block of ``point``; returns its line."""

def _test_stats_resume() -> int | None:
    """Not public API. Let the stopped thread go on; returns the line it ran."""
