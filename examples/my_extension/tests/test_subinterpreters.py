"""compute_pi in several subinterpreters, each with its own GIL, at once; and a
block in a legacy subinterpreter (sharing the main GIL), per version."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from conftest import HAVE_SUBINTERPRETERS, SUBINTERPRETER_HELPERS, run_python

pytestmark = pytest.mark.timeout(300)

SCRIPT = SUBINTERPRETER_HELPERS + r"""
import os, sys, tempfile, threading, time
import my_extension
native = getattr(my_extension, "my_extension", my_extension)

SEEDS = range(6)
ITERATIONS = 20_000
expected = {seed: my_extension.compute_pi(ITERATIONS, seed) for seed in SEEDS}

CODE = '''
import importlib.util
import sys
sys.path[:] = {path!r}
import my_extension
native = getattr(my_extension, "my_extension", my_extension)
# Own GIL: this interpreter holds its GIL (release=False) while the main
# interpreter sets the flag, which it can only do with a different GIL.
own_gil = native._test_wait_for_flag({flag}, 20, release=False, entered={entered})
released = native._test_block_released()
results = [repr(my_extension.compute_pi({iterations}, seed)) for seed in {seeds!r}]
with open({out!r}, "w") as f:
    f.write(repr((own_gil, released, results)))
'''

out_dir = tempfile.mkdtemp()
errors = []

def worker(i, flag, entered):
    try:
        interp = create()
        try:
            run(interp, CODE.format(path=sys.path, flag=flag, entered=entered, iterations=ITERATIONS,
                                    seeds=list(SEEDS), out=os.path.join(out_dir, str(i))))
        finally:
            interpreters.destroy(interp)
    except BaseException as e:
        errors.append(repr(e))

COUNT = 4
flags = [native._test_new_flag() for _ in range(COUNT)]
entered = [native._test_new_flag() for _ in range(COUNT)]
threads = [threading.Thread(target=worker, args=(i, flags[i], entered[i])) for i in range(COUNT)]
for t in threads:
    t.start()
deadline = time.monotonic() + 30
pending = set(range(COUNT))
while pending and time.monotonic() < deadline and not errors:
    for i in list(pending):
        if native._test_flag_is_set(entered[i]):
            native._test_set_flag(flags[i])
            pending.discard(i)
    time.sleep(0.001)
for t in threads:
    t.join(120)
assert not errors, errors
assert not pending, f"subinterpreters {sorted(pending)} never started waiting"
for i in range(COUNT):
    with open(os.path.join(out_dir, str(i))) as f:
        own_gil, released, results = eval(f.read())
    assert own_gil is True, f"subinterpreter {i} shares the main GIL"
    assert released is True
    assert [float(r) for r in results] == [expected[s] for s in SEEDS], (i, results)
print("subinterpreters ok", flush=True)
"""


@pytest.mark.skipif(not HAVE_SUBINTERPRETERS, reason="needs CPython 3.12+ with _xxsubinterpreters or _interpreters")
def test_compute_pi_in_subinterpreters_with_their_own_gil():
    result = run_python(SCRIPT, timeout=240)
    assert result.returncode == 0, result.stderr
    assert "subinterpreters ok" in result.stdout
    assert "Fatal Python error" not in result.stderr


LEGACY_SCRIPT = r"""
import os, sys, tempfile
try:
    import _interpreters as interpreters  # 3.13+
except ImportError:
    import _xxsubinterpreters as interpreters  # 3.8-3.12
import my_extension
native = getattr(my_extension, "my_extension", my_extension)

# A legacy subinterpreter: it shares the main GIL (Py_NewInterpreter).
if interpreters.__name__ == "_interpreters":
    interp = interpreters.create("legacy")
elif sys.version_info >= (3, 12):
    interp = interpreters.create(isolated=False)
else:
    interp = interpreters.create()
out = os.path.join(tempfile.mkdtemp(), "released")
code = f'''
import importlib.util
import sys
sys.path[:] = {sys.path!r}
import my_extension
native = getattr(my_extension, "my_extension", my_extension)
with open({out!r}, "w") as f:
    f.write(repr(native._test_block_released()))
'''
if hasattr(interpreters, "exec"):
    error = interpreters.exec(interp, code)
    assert error is None, error
else:
    interpreters.run_string(interp, code)
interpreters.destroy(interp)
with open(out) as f:
    in_sub = eval(f.read())
print("main", native._test_block_released(), "sub", in_sub, flush=True)
"""


@pytest.mark.skipif(
    importlib.util.find_spec("_interpreters") is None
    and importlib.util.find_spec("_xxsubinterpreters") is None,
    reason="needs _interpreters or _xxsubinterpreters",
)
def test_a_block_in_a_legacy_subinterpreter_releases_only_where_the_check_can_tell():
    # On 3.8-3.11 the current thread state is process-wide, and a
    # subinterpreter's state is not the thread's GIL-state state: nothing
    # safe tells which thread runs on it, so the block releases nothing. On
    # 3.12+ the check is thread-local and the block releases.
    result = run_python(LEGACY_SCRIPT, timeout=120)
    assert result.returncode == 0, result.stderr
    expected = sys.version_info >= (3, 12)
    assert f"main True sub {expected}" in result.stdout, (result.stdout, result.stderr)
