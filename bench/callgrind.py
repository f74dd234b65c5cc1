#!/usr/bin/env python3
"""Instructions per empty release/reacquire cycle, counted with callgrind.

Wall-clock ratios on a shared machine move by more than the differences
that matter here; callgrind's instruction counts do not: the same binary,
inputs and environment give the same total, whatever else the machine does.

For each interpreter, `nuwa-ffi/examples/cycles.rs` embeds its libpython
and runs N empty cycles of one contender; the cost of a cycle is

    (I(200,000 cycles) - I(100,000 cycles)) / 100,000

in one and the same environment (PYTHONHASHSEED=0), so that start-up and
shutdown cancel out. The contenders:

- raw:   PyEval_SaveThread / PyEval_RestoreThread through function pointers
         (what Py_BEGIN/END_ALLOW_THREADS cost an extension);
- nogil: nuwa_ffi::nogil! { } (the checked path);
- token: nogil!(&mut gil => { }) on a GilHeld token;
- stats: nogil! { } with nuwa-ffi's `stats` feature on (a separate build):
         what recording each block costs. With the feature off, the macros
         expand to the same code as without it, so `nogil` is also the
         count of a build that has no statistics at all.

Interpreters: the release (non-debug) builds of the matrix that have a
shared libpython: pyenv's 3.8-3.13, 3.13t, the system python3's
libpython, and Debian sid's 3.14 and 3.15 in the chroot of
scripts/sid-pythons.sh (valgrind is installed there). Debug builds are
left out: their counts say nothing about a release build.

Usage: bench/callgrind.py [--quick] [--json PATH]  (run by `make bench`).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SID = ROOT / "scripts" / "sid-pythons.sh"
TARGET = ROOT / "target" / "callgrind"
CONTENDERS = ["raw", "nogil", "token"]


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def build() -> dict[str, Path]:
    """The cycles binary, without and with the stats feature, copied into
    the project tree (the sid chroot sees only that)."""
    TARGET.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, features in (("plain", []), ("stats", ["--features", "stats"])):
        run(["cargo", "build", "--release", "--quiet", "-p", "nuwa-ffi", "--example", "cycles",
             "--target-dir", str(ROOT / "target" / f"callgrind-{name}"), *features], cwd=ROOT)
        binary = TARGET / f"cycles-{name}"
        shutil.copy(ROOT / "target" / f"callgrind-{name}" / "release" / "examples" / "cycles", binary)
        out[name] = binary
    return out


def host_interpreters() -> list[tuple[str, str, str, list[str]]]:
    """(label, PYTHONHOME, libpython, runner prefix) for the host's builds."""
    found = []
    homes = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*")))
    pythons = Path(os.environ.get("NUWA_PYTHONS", Path.home() / ".cache" / "nuwa-pythons"))
    homes.append(str(pythons / "3.13t"))
    for home in homes:
        libs = sorted(glob.glob(f"{home}/lib/libpython3*.so.1.0"))
        m = re.search(r"libpython(3\.\d+)(t?)\.so", libs[0]) if libs else None
        if not m or tuple(map(int, m.group(1).split("."))) < (3, 8):
            continue
        label = m.group(1) + m.group(2)
        if label.endswith("d"):
            continue
        found.append((label, home, libs[0], []))
    def key(row):
        label = row[0].rstrip("t")
        return tuple(map(int, label.split(".")))
    found.sort(key=key)
    system = Path("/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0")
    if system.exists() and Path("/usr/bin/python3.11").exists():
        found.append(("3.11 (system)", "/usr", str(system), []))
    return found


def sid_interpreters() -> list[tuple[str, str, str, list[str]]]:
    root = subprocess.run([str(SID), "--print-root"], capture_output=True, text=True).stdout.strip()
    if not root or not Path(root, ".nuwa-root-complete").exists():
        return []
    if not Path(root, "usr/bin/valgrind").exists():
        print("callgrind: no valgrind in the sid root (make pythons adds it)", file=sys.stderr)
        return []
    return [(f"{v} (Debian)", "/usr", f"/usr/lib/x86_64-linux-gnu/libpython{v}.so.1.0",
             [str(SID), "run", "--"]) for v in ("3.14", "3.15")]


def instructions(binary: Path, home: str, lib: str, runner: list[str], mode: str, n: int) -> int:
    cmd = [*runner, "env", "PYTHONHASHSEED=0", f"PYTHONHOME={home}", "valgrind",
           "--tool=callgrind", "--callgrind-out-file=/dev/null", str(binary), lib, mode, str(n)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    m = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode != 0 or not m:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return int(m.group(1))


def per_cycle(binary, home, lib, runner, mode, n) -> float:
    return (instructions(binary, home, lib, runner, mode, 2 * n)
            - instructions(binary, home, lib, runner, mode, n)) / n


def measure(quick: bool) -> dict:
    if not shutil.which("valgrind"):
        raise SystemExit("callgrind: valgrind is not installed (apt-get install valgrind)")
    binaries = build()
    interps = host_interpreters() + sid_interpreters()
    if quick:
        interps = interps[-1:] if interps else []
    n = 2_000 if quick else 100_000
    rows = {}
    for label, home, lib, runner in interps:
        print(f"[callgrind] {label}", file=sys.stderr)
        row = {c: per_cycle(binaries["plain"], home, lib, runner, c, n) for c in CONTENDERS}
        row["stats"] = per_cycle(binaries["stats"], home, lib, runner, "nogil", n)
        rows[label] = row
    return {"n": n, "rows": rows}


def report(result: dict) -> str:
    lines = [
        "| Python | raw pair | nogil! | ratio | token | ratio | nogil!, stats on | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, r in result["rows"].items():
        raw = r["raw"]
        lines.append(
            f"| {label} | {raw:.1f} | {r['nogil']:.1f} | {r['nogil'] / raw:.3f} | "
            f"{r['token']:.1f} | {r['token'] / raw:.3f} | {r['stats']:.1f} | "
            f"{r['stats'] / raw:.3f} |"
        )
    lines.append("")
    lines.append(f"Instructions per cycle: (I(2N) - I(N)) / N with N = {result['n']:,}, "
                 "PYTHONHASHSEED=0, valgrind --tool=callgrind.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one interpreter, small N (a smoke run)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    result = measure(args.quick)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(report(result))


if __name__ == "__main__":
    main()
