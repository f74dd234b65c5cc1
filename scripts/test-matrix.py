#!/usr/bin/env python3
"""Run nuwa's tests against every CPython found on this machine.

For each interpreter (GIL, free-threaded and debug builds):
  - nuwa-ffi's real-interpreter tests (Rust, embedding its libpython), 3.8+;
  - the C-ABI example's suite (the same .so in every interpreter), 3.8+,
    with 50 interpreter exits per shutdown mode (NUWA_SHUTDOWN_RUNS, whose
    default of 200 `make test` runs on the machine's python3);
  - my_extension's suite, 3.9+ and not free-threaded, with ONE abi3 wheel
    built once for all of them (free-threaded builds have no abi3, and
    pyo3-ffi 0.30 refuses 3.13t); each row checks that the module it loaded
    is that wheel's file, byte for byte;
  - pyo3_extension's suite (a PyO3 module), the same way: 3.9+, not
    free-threaded, one abi3 wheel, the loaded file checked;
  - minimal's suite (the template to copy), the same way.
The Rust test binary, the C-ABI library and the wheels are built once, on the
host, and run as they are everywhere.

Interpreters:
  - ~/.pyenv/versions/3.*/bin/python3 (3.8 and later);
  - the builds of scripts/build-pythons.sh (3.13t, 3.13d:
    ~/.cache/nuwa-pythons/*/bin/python3);
  - the distribution's own /usr/bin/python3 (label "system": Debian 12's
    3.11, statically linked with its symbols exported);
  - CPython 3.14, 3.14d, 3.15 and 3.15d from Debian sid, run in the chroot
    of scripts/sid-pythons.sh (their packages need a newer glibc);
or the paths in NUWA_MATRIX_PYTHONS (separated by ':'; "sid:PATH" for one
inside the chroot).

Prints a table (version, build, where from, passed, failed per suite) and
writes it to target/matrix/support.md; --write-readme also puts it into
README.md between the support-table markers. Exits 1 if anything failed or an
expected interpreter is missing.

Run it with the project's .venv Python (it provides maturin): `make test-matrix`.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "matrix"
PYTHONS_ROOT = Path(os.environ.get("NUWA_PYTHONS", Path.home() / ".cache" / "nuwa-pythons"))
SID = ROOT / "scripts" / "sid-pythons.sh"
SID_PYTHONS = ["/usr/bin/python3.14", "/usr/bin/python3.14d", "/usr/bin/python3.15", "/usr/bin/python3.15d"]
SYSTEM_PYTHON = "/usr/bin/python3"
EXPECTED = ["3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "3.13t", "3.13d",
            "3.14", "3.14d", "3.15", "3.15d", "system"]
STEP_TIMEOUT = 1800  # seconds for one suite on one interpreter


# Where an interpreter comes from: (how the table says it, runs in the chroot).
ORIGINS = {
    "pyenv": ("pyenv", False),
    "built": ("scripts/build-pythons.sh", False),
    "system": ("the system's python3", False),
    "sid": ("Debian sid, chroot", True),
}


@dataclass
class Interp:
    path: str
    version: str  # e.g. 3.13.0
    build: str  # "GIL", "free-threaded" or "debug"
    origin: str = "pyenv"  # a key of ORIGINS

    @property
    def label(self) -> str:
        if self.origin == "system":
            return "system"
        mm = ".".join(self.version.split(".")[:2])
        return mm + {"GIL": "", "free-threaded": "t", "debug": "d"}[self.build]

    @property
    def prefix(self) -> list[str]:
        """What runs a command where this interpreter lives."""
        return [str(SID), "run", "--"] if ORIGINS[self.origin][1] else []

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


def probe(path: str, origin: str) -> Interp | None:
    code = (
        "import platform, sys, sysconfig;"
        "ft = bool(sysconfig.get_config_var('Py_GIL_DISABLED'));"
        "dbg = hasattr(sys, 'gettotalrefcount');"
        "print(platform.python_version(), 'free-threaded' if ft else 'debug' if dbg else 'GIL')"
    )
    prefix = Interp(path, "0.0", "GIL", origin).prefix
    try:
        out = subprocess.run(prefix + [path, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        print(f"probe: {path} ({origin}) does not run: {out.stderr.strip()[-300:]}", flush=True)
        return None
    version, build = out.stdout.split()
    return Interp(path, version, build, origin)


def sid_root_ready() -> bool:
    root = subprocess.run([str(SID), "--print-root"], capture_output=True, text=True).stdout.strip()
    return bool(root) and Path(root, ".nuwa-root-complete").is_file()


def find_interpreters() -> list[Interp]:
    candidates: list[tuple[str, str]] = []
    if os.environ.get("NUWA_MATRIX_PYTHONS"):
        # PATH or sid:PATH entries, separated by ':'.
        entries = os.environ["NUWA_MATRIX_PYTHONS"].split(":")
        i = 0
        while i < len(entries):
            if entries[i] == "sid" and i + 1 < len(entries):
                candidates.append((entries[i + 1], "sid"))
                i += 2
            else:
                if entries[i]:
                    candidates.append((entries[i], "pyenv"))
                i += 1
    else:
        candidates += [(p, "pyenv") for p in sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3")))]
        candidates += [(p, "built") for p in sorted(glob.glob(str(PYTHONS_ROOT / "*" / "bin" / "python3")))]
        if os.path.exists(SYSTEM_PYTHON):
            candidates.append((SYSTEM_PYTHON, "system"))
        if sid_root_ready():
            candidates += [(p, "sid") for p in SID_PYTHONS]
    found: dict[str, Interp] = {}
    for path, origin in candidates:
        it = probe(path, origin)
        if it and it.minor >= (3, 8):
            found.setdefault(it.label, it)
    return sorted(found.values(), key=lambda i: (i.minor, i.build, i.origin == "system"))


def run(cmd: list[str], env: dict | None = None, timeout: int = STEP_TIMEOUT,
        prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    """Runs cmd in the project root, on the host or (with the chroot's
    prefix) in the sid root, where the project tree has the same path."""
    full_env = dict(os.environ, **(env or {}))
    cmd = (prefix or []) + cmd
    try:
        return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return subprocess.CompletedProcess(cmd, -9, out, f"timed out after {timeout} s")


def venv_for(it: Interp) -> Path:
    """A venv of this interpreter with the test tools (pytest, pytest-timeout),
    under target/matrix (inside the project tree, so the chroot sees it at
    the same path)."""
    venv = WORK / f"venv-{it.label}"
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    if not stamp.exists():
        shutil.rmtree(venv, ignore_errors=True)
        r = run([it.path, "-m", "venv", str(venv)], prefix=it.prefix)
        if r.returncode != 0:
            raise RuntimeError(f"venv for {it.label} failed:\n{r.stdout}{r.stderr}")
        r = run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 "pytest>=8.3", "pytest-timeout>=2.3"], prefix=it.prefix)
        if r.returncode != 0:
            raise RuntimeError(f"pip install for {it.label} failed:\n{r.stdout}{r.stderr}")
        stamp.touch()
    return python


@dataclass
class Builds:
    """What is built once, on the host, and used by every interpreter."""
    real_python: Path  # nuwa-ffi's real-interpreter test binary
    real_python_stats: Path  # the same with the `stats` feature (its stats_ scenarios run)
    wheel: Path  # my_extension's abi3 wheel
    module_name: str  # the extension's file name inside the wheel
    module_sha256: str
    pyo3_wheel: Path  # pyo3_extension's abi3 wheel
    pyo3_module_name: str
    pyo3_module_sha256: str
    minimal_wheel: Path  # minimal's abi3 wheel
    minimal_module_name: str
    minimal_module_sha256: str


def keep_builds_in_the_tree() -> None:
    """The chroot sees the project tree only: when cargo's target directory
    (CARGO_TARGET_DIR, a cargo config's build.target-dir) is elsewhere, this
    run builds into target/matrix/cargo instead, and says so. The C-ABI
    suite is told where its build is."""
    r = run(["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"])
    if r.returncode != 0:
        sys.exit(f"cargo metadata failed:\n{r.stderr}")
    target = Path(json.loads(r.stdout)["target_directory"]).resolve()
    if not target.is_relative_to(ROOT.resolve()):
        inside = WORK / "cargo"
        print(f"cargo's target directory {target} is outside the project tree, which is all "
              f"the chroot sees: this run builds into {inside.relative_to(ROOT)}", flush=True)
        os.environ["CARGO_TARGET_DIR"] = str(inside)
        target = inside
    # The C-ABI suite's default asks cargo, which the chroot has not.
    os.environ.setdefault("NUWA_C_ABI_LIB", str(target / "release" / "libnuwa_c_abi.so"))
    os.environ.setdefault("NUWA_C_ABI_HOST", str(target / "release" / "nuwa-c-abi-host"))


def build_once() -> Builds:
    def check(r: subprocess.CompletedProcess, what: str) -> None:
        if r.returncode != 0:
            sys.exit(f"building {what} failed:\n{r.stdout[-3000:]}{r.stderr[-3000:]}")

    t0 = time.monotonic()
    check(run(["cargo", "build", "--release", "--quiet", "-p", "nuwa-c-abi-example", "-p", "nuwa-c-abi-host"]),
          "the C-ABI example")
    def real_python(*features: str) -> str:
        r = run(["cargo", "test", "--quiet", "-p", "nuwa-ffi", *features, "--test", "real_python",
                 "--no-run", "--message-format=json"])
        check(r, "nuwa-ffi's real-interpreter tests")
        found = [json.loads(line).get("executable") for line in r.stdout.splitlines() if line.startswith("{")]
        found = [e for e in found if e and Path(e).name.startswith("real_python")]
        if len(found) != 1:
            sys.exit(f"expected one real_python test binary, found {found}")
        return found[0]

    executables = [real_python(), real_python("--features", "stats")]
    maturin = shutil.which("maturin") or str(Path(sys.executable).parent / "maturin")

    def abi3_wheel(example: str) -> tuple[Path, str, str]:
        wheels = WORK / ("wheels" if example == "my_extension" else f"wheels-{example}")
        shutil.rmtree(wheels, ignore_errors=True)
        check(run([maturin, "build", "--release", "--quiet", "-m", f"examples/{example}/Cargo.toml",
                   "--out", str(wheels)]), f"{example}'s abi3 wheel")
        [wheel] = wheels.glob("*.whl")
        if "-abi3-" not in wheel.name:
            sys.exit(f"{wheel.name} is not an abi3 wheel")
        with zipfile.ZipFile(wheel) as z:
            [name] = [n for n in z.namelist() if n.endswith(".so")]
            digest = hashlib.sha256(z.read(name)).hexdigest()
        return wheel, Path(name).name, digest

    wheel, name, digest = abi3_wheel("my_extension")
    pyo3_wheel, pyo3_name, pyo3_digest = abi3_wheel("pyo3_extension")
    minimal_wheel, minimal_name, minimal_digest = abi3_wheel("minimal")
    print(f"built once in {time.monotonic() - t0:.0f} s: {executables[0]}, {wheel.name}, {pyo3_wheel.name}, "
          f"{minimal_wheel.name}", flush=True)
    return Builds(Path(executables[0]), Path(executables[1]), wheel, name, digest, pyo3_wheel, pyo3_name,
                  pyo3_digest, minimal_wheel, minimal_name, minimal_digest)


def rust_suite(it: Interp, builds: Builds) -> Result:
    env = {"NUWA_TEST_PYTHON": it.path, "NUWA_REQUIRE_PYTHON": "1"}
    total = Result()
    # Every scenario, then the release statistics' scenarios in the build
    # with the `stats` feature (without it they are skipped).
    for binary, args in ((builds.real_python, []), (builds.real_python_stats, ["stats_"])):
        r = run([str(binary), *args], env=env, prefix=it.prefix)
        text = r.stdout + r.stderr
        total.log += text
        m = re.search(r"(\d+) passed, (\d+) failed, (\d+) skipped", text)
        if not m:
            return Result(failed=1, note="no summary line", log=total.log)
        passed, failed, skipped = map(int, m.groups())
        if r.returncode != 0 and failed == 0:
            failed = 1
        total.passed += passed
        total.failed += failed
        total.skipped += skipped
    return total


def pytest_suite(it: Interp, python: Path, suite: str, env: dict | None = None) -> Result:
    junit = WORK / f"junit-{it.label}-{Path(suite).parent.name}.xml"
    junit.unlink(missing_ok=True)
    r = run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", suite],
            env=env, prefix=it.prefix)
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


# Interpreter exits per mode of the C-ABI shutdown test on each interpreter
# here; `make test` runs the default 200 on the machine's python3. 200 exits
# in 4 modes take about a minute per interpreter, most of a cell's time, and
# the matrix has 13 of them: CI's time limit is the reason.
MATRIX_SHUTDOWN_RUNS = "50"


def c_abi_suite(it: Interp, python: Path, builds: Builds) -> Result:
    runs = os.environ.get("NUWA_SHUTDOWN_RUNS", MATRIX_SHUTDOWN_RUNS)
    return pytest_suite(it, python, "examples/c_abi/tests", env={"NUWA_SHUTDOWN_RUNS": runs})


def loaded_module(package: str) -> str:
    """Prints the file name and sha256 of the extension module `package` loads."""
    return (f"import hashlib, os, {package};"
            f"f = getattr({package}, '{package}', {package}).__file__;"
            "print(os.path.basename(f), hashlib.sha256(open(f, 'rb').read()).hexdigest())")


def wheel_suite(it: Interp, python: Path, package: str, wheel: Path, module: tuple[str, str]) -> Result:
    """Installs one abi3 wheel, checks that its very file is what `package`
    loads, and runs examples/<package>/tests."""
    if it.minor < (3, 9):
        return Result(applicable=False, note="the abi3 wheel needs 3.9+")
    if it.build == "free-threaded":
        return Result(applicable=False, note="no abi3 on free-threaded builds; pyo3-ffi 0.30 refuses 3.13t")
    r = run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
             "--force-reinstall", str(wheel)], prefix=it.prefix)
    if r.returncode != 0:
        return Result(failed=1, note="the wheel did not install", log=r.stdout + r.stderr)
    # The very file of the wheel, not another build, is what the suite loads.
    r = run([str(python), "-c", loaded_module(package)], prefix=it.prefix)
    if r.stdout.split() != list(module):
        return Result(failed=1, note="loaded another module file",
                      log=f"expected {' '.join(module)}\n{r.stdout}{r.stderr}")
    return pytest_suite(it, python, f"examples/{package}/tests")


def extension_suite(it: Interp, python: Path, builds: Builds) -> Result:
    return wheel_suite(it, python, "my_extension", builds.wheel, (builds.module_name, builds.module_sha256))


def pyo3_suite(it: Interp, python: Path, builds: Builds) -> Result:
    return wheel_suite(it, python, "pyo3_extension", builds.pyo3_wheel,
                       (builds.pyo3_module_name, builds.pyo3_module_sha256))


def minimal_suite(it: Interp, python: Path, builds: Builds) -> Result:
    return wheel_suite(it, python, "minimal", builds.minimal_wheel,
                       (builds.minimal_module_name, builds.minimal_module_sha256))


SUITES = {
    "nuwa-ffi real-interpreter (Rust)": rust_suite,
    "C-ABI example (pytest)": c_abi_suite,
    "my_extension, one abi3 wheel (pytest)": extension_suite,
    "pyo3_extension, one abi3 wheel (pytest)": pyo3_suite,
    "minimal, one abi3 wheel (pytest)": minimal_suite,
}


def table(rows: list[Row], missing: list[str], builds: Builds | None) -> str:
    names = list(SUITES)
    lines = ["| Python | build | from | " + " | ".join(names) + " | status |",
             "|---" * (len(names) + 4) + "|"]
    for row in rows:
        cells = [row.results[n].cell() if n in row.results else "not run" for n in names]
        status = "pass" if row.ok else "**FAIL**"
        origin = ORIGINS[row.interp.origin][0]
        lines.append(f"| {row.interp.version} | {row.interp.build} | {origin} | " + " | ".join(cells)
                     + f" | {status} |")
    for label in missing:
        lines.append(f"| {label} | not found | - | " + " | ".join("-" for _ in names) + " | **missing** |")
    if builds is not None:
        lines += ["", f"Every my_extension row loaded the same file, `{builds.module_name}` from "
                      f"`{builds.wheel.name}` (sha256 `{builds.module_sha256[:16]}...`); every "
                      f"pyo3_extension row `{builds.pyo3_module_name}` from `{builds.pyo3_wheel.name}` "
                      f"(sha256 `{builds.pyo3_module_sha256[:16]}...`); every minimal row "
                      f"`{builds.minimal_module_name}` from `{builds.minimal_wheel.name}` "
                      f"(sha256 `{builds.minimal_module_sha256[:16]}...`)."]
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
    ap.add_argument("--only", help="labels to run, comma-separated (e.g. 3.11,3.13t,3.14d,system)")
    args = ap.parse_args()

    started = time.monotonic()
    WORK.mkdir(parents=True, exist_ok=True)
    keep_builds_in_the_tree()
    interps = find_interpreters()
    if args.only:
        wanted = set(args.only.split(","))
        interps = [i for i in interps if i.label in wanted]
    missing = [] if args.only or os.environ.get("NUWA_MATRIX_PYTHONS") else \
        [label for label in EXPECTED if label not in {i.label for i in interps}]
    print("interpreters: " + ", ".join(f"{i.label} ({i.path})" for i in interps), flush=True)

    builds = build_once()

    rows = []
    for it in interps:
        row = Row(it)
        python = venv_for(it)
        for name, suite in SUITES.items():
            t0 = time.monotonic()
            res = suite(it, builds) if suite is rust_suite else suite(it, python, builds)
            took = time.monotonic() - t0
            row.results[name] = res
            print(f"[{it.label}] {name}: {res.cell()} ({took:.0f} s)", flush=True)
            if res.failed:
                log = WORK / f"failure-{it.label}-{len(row.results)}.log"
                log.write_text(res.log)
                print(f"    log: {log}\n" + "\n".join("    " + ln for ln in res.log.splitlines()[-30:]),
                      flush=True)
        rows.append(row)

    text = table(rows, missing, builds)
    (WORK / "support.md").write_text(text + "\n")
    (WORK / "support.json").write_text(json.dumps(
        [{"version": r.interp.version, "build": r.interp.build, "origin": r.interp.origin, "ok": r.ok,
          "suites": {n: vars(x) | {"log": ""} for n, x in r.results.items()}} for r in rows], indent=2))
    print("\n" + text)
    if args.write_readme:
        write_readme(text)
    bad = [r.interp.label for r in rows if not r.ok] + missing
    if bad:
        sys.exit(f"\ntest-matrix: FAILED or missing: {', '.join(bad)}")
    print(f"\ntest-matrix: all interpreters passed ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
