#!/usr/bin/env python3
"""Run my_extension's Python tests under valgrind memcheck; fail on errors in nuwa.

What runs, each in its own valgrind process with PYTHONMALLOC=malloc (so
that every Python object is a malloc block valgrind can check):
  - pytest on examples/my_extension/tests, except test_shutdown.py and
    test_subinterpreters.py (they start fresh interpreters, which valgrind
    does not follow). Every public function, release=True and False, the
    bad inputs, the panic path, the thread pool and the GIL-release proofs.
  - each scenario of test_shutdown.py once, in the valgrind process itself:
    the interpreter exits while daemon threads are inside blocks, and
    threads are woken while it finalizes.
Arguments after `--` go to pytest instead of the default selection, e.g.
`-- examples/my_extension/tests -k panic`.

The extension is rebuilt first (release, plus line tables for file:line in
the reports) into target/valgrind, and imported from there: .venv and the
normal release build are left alone. --no-build uses the installed one.

The check fails (exit 1) if:
  - an error (invalid read or write, invalid free, use of an uninitialised
    value, ...) has a frame of ours in any of its stacks: an object whose
    name contains "my_extension" or "nuwa", a function whose Rust path
    contains nuwa_ffi, nuwa_core, nuwa_std or my_extension, or a source file
    of this repository;
  - a "definitely lost" block was allocated with a frame of ours on the stack;
  - a test or scenario failed (also under valgrind), or valgrind's output is
    missing or incomplete.

What is not counted, and why:
  - CPython's own reports (and one of glibc's loader) are suppressed by
    scripts/valgrind-python.supp, each entry with its reason; the counts
    are printed. On 3.11 those are uses of an "undefined" pointer to the
    small int 0, so an uninitialised-value error inside CPython's
    Py_INCREF, Py_DECREF, Py_TYPE, Py_SIZE or eval loop is not reported,
    whoever caused it. Invalid reads, writes and frees are never suppressed.
  - "possibly lost" and "still reachable" blocks are not even reported
    (--show-leak-kinds=definite,indirect): CPython does not free everything
    at exit, and a GC-tracked object is only pointed to past its GC header,
    so every such object left at exit is "possibly lost".
  - other reports (no frame of ours, or an "indirectly lost" block) are
    counted and valgrind's suppressions for them written to
    target/valgrind/other.supp, but they fail the check only with --strict.
Valgrind cannot see a leaked reference to a GC-tracked object (list, dict,
instance...): the GC's list still points to it. It does see leaked Rust
allocations and leaked non-GC objects (bytes, float, int, str), though not
necessarily each one: a stale copy of a pointer anywhere in live memory
makes its block "reachable", so a leak on every call is caught, not
necessarily a single one.

Valgrind's own --error-exitcode is not used: it counts every unsuppressed
error, ours or not, and the status of the run is pytest's.

Exit status: 0 clean, 1 errors of ours or failed tests, 2 cannot run
(valgrind missing, build failed). Run it with the project's .venv Python:
`make test-valgrind`.
"""

from __future__ import annotations

import argparse
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
WORK = ROOT / "target" / "valgrind"
SUPPRESSIONS = ROOT / "scripts" / "valgrind-python.supp"
EXTENSION = ROOT / "examples" / "my_extension"
TESTS = EXTENSION / "tests"
NOT_UNDER_VALGRIND = ["test_shutdown.py", "test_subinterpreters.py"]
SHUTDOWN_SCENARIOS = [
    # (name in test_shutdown.py, what its stdout must contain)
    ("EXIT_WHILE_IN_BLOCKS", "exiting with threads in blocks"),
    ("WAKE_DURING_FINALIZATION", "flag set during finalization"),
]
TIMEOUT = 1500  # seconds for one valgrind run
SHOW = 5  # errors of ours printed in full

# A frame is ours if its object, its function or its source file says so.
OUR_OBJECT = re.compile(r"my_extension|nuwa", re.IGNORECASE)
OUR_FUNCTION = re.compile(r"nuwa_ffi|nuwa_core|nuwa_std|my_extension")
NOT_OUR_SOURCES = (ROOT / ".venv", ROOT / "target")


def valgrind_options(xml_file: Path, log_file: Path) -> list[str]:
    return [
        "--tool=memcheck",
        "--leak-check=full",
        "--show-leak-kinds=definite,indirect",
        "--num-callers=50",
        f"--suppressions={SUPPRESSIONS}",
        "--gen-suppressions=all",  # in the XML only: for other.supp
        # A child that a test forks without exec (test_stats.py's fork
        # tests) would write its whole report into its parent's XML file,
        # which then no longer parses: forked children are not checked.
        "--child-silent-after-fork=yes",
        "--xml=yes",
        f"--xml-file={xml_file}",
        f"--log-file={log_file}",
    ]


@dataclass
class Frame:
    fn: str
    obj: str
    file: str  # "dir/file:line" or ""

    def ours(self) -> bool:
        if OUR_OBJECT.search(Path(self.obj).name) or OUR_FUNCTION.search(self.fn):
            return True
        if self.file:
            path = Path(self.file.rsplit(":", 1)[0])
            return path.is_relative_to(ROOT) and not any(path.is_relative_to(p) for p in NOT_OUR_SOURCES)
        return False

    def __str__(self) -> str:
        where = self.file or Path(self.obj).name or "?"
        return f"{self.fn or '???'} ({where})"


@dataclass
class Error:
    kind: str
    what: str
    stacks: list[tuple[str, list[Frame]]]  # (heading, frames)
    count: int = 1
    suppression: str = ""

    def ours(self) -> bool:
        return any(f.ours() for _, frames in self.stacks for f in frames)

    def definitely_lost(self) -> bool:
        return self.kind == "Leak_DefinitelyLost"

    def render(self) -> str:
        """The error with its stacks, each cut three frames after its last
        frame of ours (marked ">"), or after eight if it has none."""
        lines = [f"{self.kind}: {self.what}" + (f" (x{self.count})" if self.count > 1 else "")]
        for heading, frames in self.stacks:
            if heading:
                lines.append(f"  {heading}")
            last_ours = max((i for i, f in enumerate(frames) if f.ours()), default=4)
            shown = frames[: last_ours + 4]
            lines += [f"    {'>' if f.ours() else ' '} {f}" for f in shown]
            if len(frames) > len(shown):
                lines.append(f"      ... {len(frames) - len(shown)} more frames")
        return "\n".join(lines)


@dataclass
class Report:
    errors: list[Error] = field(default_factory=list)
    suppressed: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def parse_frames(stack: ET.Element) -> list[Frame]:
    frames = []
    for f in stack.findall("frame"):
        file = ""
        if f.findtext("file"):
            file = f"{f.findtext('dir', '')}/{f.findtext('file')}:{f.findtext('line', '?')}"
        frames.append(Frame(f.findtext("fn", ""), f.findtext("obj", ""), file))
    return frames


# A process's preamble, up to the end of its arguments.
PREAMBLE = re.compile(r"<\?xml version=\"1\.0\"\?>\s*<valgrindoutput>.*?</args>\s*", re.S)


def without_forked_preambles(text: str) -> str:
    """The document of the process the file is named after.

    A child that `subprocess` forks inherits the XML file and, before its
    `exec` (where valgrind stops following it: no --trace-children), writes
    its own preamble into it, in the middle of the parent's document. Those
    preambles (every one but the first) are dropped; the child ran none of
    our code under valgrind."""
    found = [m for m in PREAMBLE.finditer(text) if m.start() > 0]
    for m in reversed(found):
        text = text[: m.start()] + text[m.end():]
    return text


def parse_xml(path: Path, report: Report) -> None:
    try:
        root = ET.fromstring(without_forked_preambles(path.read_text(errors="replace")))
    except ET.ParseError as e:
        report.problems.append(f"{path.name}: incomplete valgrind XML ({e}); did the process crash?")
        return
    counts = {p.findtext("unique"): int(p.findtext("count", "1")) for p in root.iter("pair")}
    for node in root.findall("error"):
        # The first stack is where it happened; the others follow an
        # <auxwhat> ("Address ... is 0 bytes after a block alloc'd at").
        stacks, heading = [], ""
        for child in node:
            if child.tag == "auxwhat":
                heading = child.text or ""
            elif child.tag == "stack":
                stacks.append((heading, parse_frames(child)))
                heading = ""
        what = node.findtext("what") or node.findtext("xwhat/text") or ""
        supp = node.findtext("suppression/rawtext") or ""
        report.errors.append(
            Error(node.findtext("kind", "?"), what, stacks, counts.get(node.findtext("unique"), 1), supp)
        )
    for pair in root.findall("suppcounts/pair"):
        name = pair.findtext("name", "?")
        report.suppressed[name] = report.suppressed.get(name, 0) + int(pair.findtext("count", "0"))


def run_under_valgrind(
    valgrind: str, name: str, cmd: list[str], env: dict
) -> tuple[subprocess.CompletedProcess, list[Path]]:
    """Runs cmd under valgrind; returns the process and its XML files."""
    for old in WORK.glob(f"{name}.*"):
        old.unlink()
    xml_file, log_file = WORK / f"{name}.%p.xml", WORK / f"{name}.%p.log"
    full = [valgrind, *valgrind_options(xml_file, log_file), *cmd]
    try:
        proc = subprocess.run(full, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        proc = subprocess.CompletedProcess(full, -9, out, err + f"\ntimed out after {TIMEOUT} s")
    return proc, sorted(WORK.glob(f"{name}.*.xml"))


def build(python: str) -> Path:
    """Builds the extension (release + line tables) into target/valgrind and
    unpacks the wheel into target/valgrind/site; returns that directory."""
    maturin = Path(python).parent / "maturin"
    if not maturin.exists():
        maturin = Path(shutil.which("maturin") or "maturin")
    wheels, site = WORK / "wheel", WORK / "site"
    shutil.rmtree(wheels, ignore_errors=True)
    env = dict(
        os.environ,
        CARGO_PROFILE_RELEASE_DEBUG="line-tables-only",
        CARGO_TARGET_DIR=str(WORK / "cargo"),  # keeps the normal release build as it is
    )
    cmd = [str(maturin), "build", "--release", "--quiet", "-m", str(EXTENSION / "Cargo.toml")]
    cmd += ["-i", python, "-o", str(wheels)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    found = sorted(wheels.glob("*.whl"))
    if proc.returncode != 0 or len(found) != 1:
        print(f"error: building the extension failed:\n{' '.join(cmd)}\n{proc.stdout}{proc.stderr}",
              file=sys.stderr)
        sys.exit(2)
    shutil.rmtree(site, ignore_errors=True)
    with zipfile.ZipFile(found[0]) as wheel:
        wheel.extractall(site)
    return site


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=sys.executable, help="interpreter to test (default: this one)")
    ap.add_argument("--no-build", action="store_true", help="test the my_extension already importable")
    ap.add_argument("--no-shutdown", action="store_true", help="skip the shutdown scenarios")
    ap.add_argument("--strict", action="store_true", help="also fail on unsuppressed errors outside nuwa")
    ap.add_argument("pytest_args", nargs="*", help="after --: pytest arguments instead of the default selection")
    args = ap.parse_args()
    start = time.monotonic()

    valgrind = os.environ.get("VALGRIND") or shutil.which("valgrind")
    if not valgrind or not Path(valgrind).exists():
        print(
            "error: valgrind not found. Install it (Debian/Ubuntu: apt-get install valgrind;"
            " Fedora: dnf install valgrind) or set VALGRIND=/path/to/valgrind.",
            file=sys.stderr,
        )
        return 2
    WORK.mkdir(parents=True, exist_ok=True)

    env = dict(os.environ, PYTHONMALLOC="malloc", PYTHONDONTWRITEBYTECODE="1")
    env.pop("RUST_BACKTRACE", None)
    if not args.no_build:
        site = build(args.python)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
        print(f"valgrind-check: built the extension with line tables into {site.relative_to(ROOT)} "
              f"({time.monotonic() - start:.0f} s)")
    where = subprocess.run(
        [args.python, "-c", "import my_extension as m; print(getattr(m, 'my_extension', m).__file__)"],
        env=env, capture_output=True, text=True,
    )
    if where.returncode != 0:
        print(f"error: my_extension does not import:\n{where.stderr}", file=sys.stderr)
        return 2
    if not args.no_build and not Path(where.stdout.strip()).is_relative_to(site):
        print(f"error: the build in {site} is shadowed by {where.stdout.strip()}", file=sys.stderr)
        return 2
    print(f"valgrind-check: testing {where.stdout.strip()}")

    report = Report()
    # 1. The pytest suite, minus the tests that only run fresh interpreters.
    selection = args.pytest_args or [
        str(TESTS.relative_to(ROOT)),
        *(f"--ignore={(TESTS / name).relative_to(ROOT)}" for name in NOT_UNDER_VALGRIND),
    ]
    cmd = [args.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *selection]
    t0 = time.monotonic()
    proc, xmls = run_under_valgrind(valgrind, "pytest", cmd, env)
    tail = "\n".join(proc.stdout.strip().splitlines()[-1:])
    print(f"valgrind-check: pytest {' '.join(selection)}: {tail} ({time.monotonic() - t0:.0f} s)")
    if proc.returncode != 0:
        report.problems.append(
            f"pytest failed under valgrind (exit {proc.returncode}):\n{proc.stdout[-4000:]}{proc.stderr[-2000:]}"
        )
    runs = [("pytest", xmls)]

    # 2. The shutdown scenarios, once each, in the valgrind process itself.
    if not args.no_shutdown:
        sys.path[:0] = [str(TESTS), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        import test_shutdown  # the scenario scripts and their check()

        for scenario, marker in SHUTDOWN_SCENARIOS:
            name = f"shutdown-{scenario.lower()}"
            t0 = time.monotonic()
            code = getattr(test_shutdown, scenario)
            proc, xmls = run_under_valgrind(valgrind, name, [args.python, "-c", code], env)
            try:
                test_shutdown.check(proc, marker)
                status = "ok"
            except AssertionError as e:
                status = "FAILED"
                report.problems.append(f"shutdown scenario {scenario} failed under valgrind: {e}")
            print(f"valgrind-check: shutdown scenario {scenario}: {status} ({time.monotonic() - t0:.0f} s)")
            runs.append((name, xmls))

    for name, xmls in runs:
        if not xmls:
            report.problems.append(f"{name}: valgrind wrote no XML (see {WORK.relative_to(ROOT)}/{name}.*.log)")
        for xml in xmls:
            parse_xml(xml, report)

    ours, others = [], []
    for e in report.errors:
        counted = e.ours() and (e.definitely_lost() or not e.kind.startswith("Leak_"))
        (ours if counted else others).append(e)
    other_supp = WORK / "other.supp"
    other_supp.write_text("".join(e.suppression + "\n" for e in others))

    for e in ours[:SHOW]:
        print("\n" + e.render())
    if len(ours) > SHOW:
        print(f"\n... and {len(ours) - SHOW} more, in the XML files in {WORK.relative_to(ROOT)}")
    print()
    print(f"valgrind-check: suppressed by {SUPPRESSIONS.relative_to(ROOT)}: {sum(report.suppressed.values())}")
    for name, count in sorted(report.suppressed.items(), key=lambda kv: -kv[1]):
        print(f"  {count:6}  {name}")
    if others:
        kinds = ", ".join(sorted({e.kind for e in others}))
        print(f"valgrind-check: {len(others)} other report(s) ({kinds}), without a frame of ours or not a "
              f"definite leak: {'counted (--strict)' if args.strict else 'not counted'}. Valgrind's "
              f"suppressions for them: {other_supp.relative_to(ROOT)}")
    for problem in report.problems:
        print(f"valgrind-check: {problem}")
    errors = [e for e in ours if not e.definitely_lost()]
    leaks = [e for e in ours if e.definitely_lost()]
    print(f"valgrind-check: {len(errors)} error(s) and {len(leaks)} definite leak(s) in nuwa or the example; "
          f"logs in {WORK.relative_to(ROOT)} ({time.monotonic() - start:.0f} s in all)")
    failed = bool(ours or report.problems or (args.strict and others))
    print("valgrind-check: FAILED" if failed else "valgrind-check: passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
