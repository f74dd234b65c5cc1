#!/usr/bin/env python3
"""Run nuwa's tests against every CPython found on this machine.

For each interpreter (GIL, free-threaded and debug builds):
  - nuwa-ffi's real-interpreter tests (Rust, embedding its libpython), 3.8+;
  - the C-ABI example's suite (the same .so in every interpreter), 3.8+;
  - my_extension's suite (built for that interpreter with maturin), 3.9+
    and not free-threaded (pyo3-ffi 0.30 supports neither 3.8 nor 3.13t).
Prints a table (version, build, passed, failed per suite) and writes it to
target/matrix/support.md; --write-readme also puts it into README.md between
the support-table markers. Exits 1 if anything failed or an expected
interpreter is missing.

Interpreters: ~/.pyenv/versions/3.*/bin/python3 (3.8 and later) and the
builds of scripts/build-pythons.sh (~/.cache/nuwa-pythons/*/bin/python3),
or the paths in NUWA_MATRIX_PYTHONS (separated by ':').

Run it with the project's .venv Python (it provides maturin): `make test-matrix`.
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
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "matrix"
PYTHONS_ROOT = Path(os.environ.get("NUWA_PYTHONS", Path.home() / ".cache" / "nuwa-pythons"))
EXPECTED = ["3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "3.13t", "3.13d"]
STEP_TIMEOUT = 1800  # seconds for one suite on one interpreter


@dataclass
class Interp:
    path: str
    version: str  # e.g. 3.13.0
    build: str  # "GIL", "free-threaded" or "debug"

    @property
    def label(self) -> str:
        mm = ".".join(self.version.split(".")[:2])
        return mm + {"GIL": "", "free-threaded": "t", "debug": "d"}[self.build]

    @property
    def minor(self) -> tuple[int, int]:
        major, minor = self.version.split(".")[:2]
        return int(major), int(minor)


@dataclass
class Result:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    note: str = ""
    applicable: bool = True
    log: str = ""

    def cell(self) -> str:
        if not self.applicable:
            return f"n/a ({self.note})" if self.note else "n/a"
        text = f"{self.passed} passed"
        if self.failed:
            text += f", **{self.failed} failed**"
        if self.skipped:
            text += f", {self.skipped} skipped"
        return text


@dataclass
class Row:
    interp: Interp
    results: dict[str, Result] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.failed == 0 and (r.passed > 0 or not r.applicable) for r in self.results.values())


def probe(path: str) -> Interp | None:
    code = (
        "import platform, sys, sysconfig;"
        "ft = bool(sysconfig.get_config_var('Py_GIL_DISABLED'));"
        "dbg = hasattr(sys, 'gettotalrefcount');"
        "print(platform.python_version(), 'free-threaded' if ft else 'debug' if dbg else 'GIL')"
    )
    try:
        out = subprocess.run([path, "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    version, build = out.stdout.split()
    return Interp(path, version, build)


def find_interpreters() -> list[Interp]:
    if os.environ.get("NUWA_MATRIX_PYTHONS"):
        paths = [p for p in os.environ["NUWA_MATRIX_PYTHONS"].split(":") if p]
    else:
        paths = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3")))
        paths += sorted(glob.glob(str(PYTHONS_ROOT / "*" / "bin" / "python3")))
    found: dict[str, Interp] = {}
    for p in paths:
        it = probe(p)
        if it and it.minor >= (3, 8):
            found.setdefault(it.label, it)
    return sorted(found.values(), key=lambda i: (i.minor, i.build))


def run(cmd: list[str], env: dict | None = None, timeout: int = STEP_TIMEOUT) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **(env or {}))
    try:
        return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return subprocess.CompletedProcess(cmd, -9, out, f"timed out after {timeout} s")


def venv_for(it: Interp) -> Path:
    """A venv of this interpreter with the test tools (pytest, pytest-timeout)."""
    venv = WORK / f"venv-{it.label}"
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    if not stamp.exists():
        shutil.rmtree(venv, ignore_errors=True)
        r = run([it.path, "-m", "venv", str(venv)])
        if r.returncode != 0:
            raise RuntimeError(f"venv for {it.label} failed:\n{r.stderr}")
        r = run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 "pytest>=8.3", "pytest-timeout>=2.3"])
        if r.returncode != 0:
            raise RuntimeError(f"pip install for {it.label} failed:\n{r.stderr}")
        stamp.touch()
    return python


def rust_suite(it: Interp) -> Result:
    env = {"NUWA_TEST_PYTHON": it.path, "NUWA_REQUIRE_PYTHON": "1"}
    r = run(["cargo", "test", "--quiet", "-p", "nuwa-ffi", "--test", "real_python"], env=env)
    text = r.stdout + r.stderr
    m = re.search(r"(\d+) passed, (\d+) failed, (\d+) skipped", text)
    if not m:
        return Result(failed=1, note="no summary line", log=text)
    passed, failed, skipped = map(int, m.groups())
    if r.returncode != 0 and failed == 0:
        failed = 1
    return Result(passed, failed, skipped, log=text)


def pytest_suite(python: Path, suite: str, label: str, env: dict | None = None) -> Result:
    junit = WORK / f"junit-{label}-{Path(suite).parent.name}.xml"
    r = run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", suite],
            env=env)
    text = r.stdout + r.stderr
    if not junit.exists():
        return Result(failed=1, note="pytest did not run", log=text)
    root = ET.parse(junit).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = sum(int(s.get("tests", 0)) for s in suites)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    junit.unlink()
    return Result(total - failed - skipped, failed, skipped, log=text)


def c_abi_suite(it: Interp, python: Path) -> Result:
    return pytest_suite(python, "examples/c_abi/tests", it.label)


def extension_suite(it: Interp, python: Path) -> Result:
    if it.minor < (3, 9):
        return Result(applicable=False, note="pyo3-ffi 0.30 needs 3.9+")
    if it.build == "free-threaded":
        return Result(applicable=False, note="pyo3-ffi 0.30 refuses 3.13t")
    maturin = shutil.which("maturin") or str(Path(sys.executable).parent / "maturin")
    env = {"VIRTUAL_ENV": str(python.parent.parent)}
    r = run([maturin, "develop", "--release", "--quiet", "-m", "examples/my_extension/Cargo.toml"], env=env)
    if r.returncode != 0:
        return Result(failed=1, note="build failed", log=r.stdout + r.stderr)
    return pytest_suite(python, "examples/my_extension/tests", it.label)


SUITES = {
    "nuwa-ffi real-interpreter (Rust)": rust_suite,
    "C-ABI example (pytest)": c_abi_suite,
    "my_extension (pytest)": extension_suite,
}


def table(rows: list[Row], missing: list[str]) -> str:
    names = list(SUITES)
    lines = ["| Python | build | " + " | ".join(names) + " | status |",
             "|---" * (len(names) + 3) + "|"]
    for row in rows:
        cells = [row.results[n].cell() if n in row.results else "not run" for n in names]
        status = "pass" if row.ok else "**FAIL**"
        lines.append(f"| {row.interp.version} | {row.interp.build} | " + " | ".join(cells) + f" | {status} |")
    for label in missing:
        lines.append(f"| {label} | not found | " + " | ".join("-" for _ in names) + " | **missing** |")
    return "\n".join(lines)


def write_readme(text: str) -> None:
    readme = ROOT / "README.md"
    start, end = "<!-- support-table:start -->", "<!-- support-table:end -->"
    content = readme.read_text()
    if start not in content or end not in content:
        sys.exit("README.md has no support-table markers")
    before, rest = content.split(start, 1)
    _, after = rest.split(end, 1)
    readme.write_text(f"{before}{start}\n{text}\n{end}{after}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write-readme", action="store_true", help="put the table into README.md")
    ap.add_argument("--only", help="labels to run, comma-separated (e.g. 3.11,3.13t)")
    args = ap.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    interps = find_interpreters()
    if args.only:
        wanted = set(args.only.split(","))
        interps = [i for i in interps if i.label in wanted]
    missing = [] if args.only or os.environ.get("NUWA_MATRIX_PYTHONS") else \
        [label for label in EXPECTED if label not in {i.label for i in interps}]
    print("interpreters: " + ", ".join(f"{i.label} ({i.path})" for i in interps), flush=True)

    r = run(["cargo", "build", "--release", "--quiet", "-p", "nuwa-c-abi-example"])
    if r.returncode != 0:
        sys.exit(f"building the C-ABI example failed:\n{r.stderr}")

    rows = []
    for it in interps:
        row = Row(it)
        python = venv_for(it)
        for name, suite in SUITES.items():
            t0 = time.monotonic()
            res = suite(it) if suite is rust_suite else suite(it, python)
            took = time.monotonic() - t0
            row.results[name] = res
            print(f"[{it.label}] {name}: {res.cell()} ({took:.0f} s)", flush=True)
            if res.failed:
                log = WORK / f"failure-{it.label}-{len(row.results)}.log"
                log.write_text(res.log)
                print(f"    log: {log}\n" + "\n".join("    " + ln for ln in res.log.splitlines()[-30:]),
                      flush=True)
        rows.append(row)

    text = table(rows, missing)
    (WORK / "support.md").write_text(text + "\n")
    (WORK / "support.json").write_text(json.dumps(
        [{"version": r.interp.version, "build": r.interp.build, "ok": r.ok,
          "suites": {n: vars(x) | {"log": ""} for n, x in r.results.items()}} for r in rows], indent=2))
    print("\n" + text)
    if args.write_readme:
        write_readme(text)
    bad = [r.interp.label for r in rows if not r.ok] + missing
    if bad:
        sys.exit(f"\ntest-matrix: FAILED or missing: {', '.join(bad)}")
    print("\ntest-matrix: all interpreters passed")


if __name__ == "__main__":
    main()
