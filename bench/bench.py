#!/usr/bin/env python3
"""nuwa's benchmarks: `make bench` (full) or `make bench-quick` (a smoke run).

Every figure is measured in one run, against a baseline measured in the same
run, with the contenders interleaved (A B A B ...) so that machine noise
hits them alike; medians are reported. Nothing here asserts a time: the
report says what was measured, and BENCHMARKS.md quotes one report.

The driver runs under the project's .venv (which has maturin and
my_extension installed by `make ext`). For each interpreter it builds the
benchmark extension (bench/nuwa_bench) and runs each section in a worker
subprocess of that interpreter.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "bench"
WORKER_TIMEOUT = 900  # seconds; a hung worker is an error, not a hang


# ---------------------------------------------------------------- workers
# These run inside the interpreter being measured (`--worker NAME`) and
# print one JSON object.


def worker_cycles(rounds: int, n: int) -> dict:
    """Empty release/reacquire cycles: raw pair vs nogil! vs the GilHeld token."""
    import nuwa_bench as nb

    contenders = [("raw", nb.cycles_raw), ("nogil", nb.cycles_nogil), ("unchecked", nb.cycles_unchecked)]
    for _, f in contenders:  # warm-up (also resolves nuwa's symbols)
        f(n)
    per: dict[str, list[float]] = {name: [] for name, _ in contenders}
    for r in range(rounds):
        # Rotate the order every round so that no contender always goes first.
        order = contenders[r % 3 :] + contenders[: r % 3]
        for name, f in order:
            per[name].append(f(n) / n)
    ratios = {
        name: statistics.median(a / b for a, b in zip(per[name], per["raw"]))
        for name in ("nogil", "unchecked")
    }
    return {
        "version": platform.python_version(),
        "resolution": nb.resolution(),
        "median_ns": {k: statistics.median(v) for k, v in per.items()},
        "median_ratio": ratios,
        "rounds": rounds,
        "n": n,
    }


def worker_first_use() -> dict:
    import nuwa_bench as nb

    return {"ns": nb.first_use_ns()}


def worker_contended(rounds: int, scale: float) -> dict:
    """Blocks of k work units: two threads vs one thread alone."""
    import nuwa_bench as nb

    kinds = [("raw", nb.blocks_raw), ("nogil", nb.blocks_nogil)]
    out = {}
    for k, n in ((0, 100_000), (100, 25_000), (10_000, 500)):
        n = max(10, int(n * scale))
        for _, f in kinds:
            f(k, n // 10)  # warm-up
        alone: dict[str, list[float]] = {name: [] for name, _ in kinds}
        pair: dict[str, list[float]] = {name: [] for name, _ in kinds}
        for r in range(rounds):
            order = kinds if r % 2 == 0 else kinds[::-1]
            for name, f in order:
                alone[name].append(f(k, n) / n)
                results = [0, 0]
                start = threading.Barrier(2)

                def run(i: int, f=f) -> None:
                    start.wait()
                    results[i] = f(k, n)

                threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                pair[name].append(sum(results) / (2 * n))
        row = {}
        per_round = {name: [p / a for a, p in zip(alone[name], pair[name])] for name, _ in kinds}
        for name, _ in kinds:
            row[name] = {
                "alone_ns": statistics.median(alone[name]),
                "pair_ns": statistics.median(pair[name]),
                "ratio": statistics.median(per_round[name]),
            }
        # Contention's effect on nuwa relative to its effect on the raw pair,
        # round by round (both measured back to back), then the median.
        row["nuwa_vs_raw"] = statistics.median(
            n / r for n, r in zip(per_round["nogil"], per_round["raw"])
        )
        out[str(k)] = row
    return out


def worker_patterns(rounds: int, size: int) -> dict:
    import my_extension as ext

    data = [((i * 7919) % 1000) / 997.0 for i in range(size)]
    contenders = [("good_pattern", ext.good_pattern), ("bad_pattern", ext.bad_pattern)]
    for _, f in contenders:
        f(data)
    per: dict[str, list[float]] = {name: [] for name, _ in contenders}
    for r in range(rounds):
        for name, f in contenders if r % 2 == 0 else contenders[::-1]:
            t0 = time.perf_counter_ns()
            f(data)
            per[name].append((time.perf_counter_ns() - t0) / size)
    assert ext.good_pattern(data) == ext.bad_pattern(data)
    good, bad = (statistics.median(per[n]) for n, _ in contenders)
    return {"size": size, "good_ns_per_item": good, "bad_ns_per_item": bad, "ratio": bad / good}


def _compute_pi_in_process(args: tuple[int, int]) -> float:
    import my_extension

    iterations, seed = args
    return my_extension.compute_pi(iterations, seed=seed)


def worker_parallel(repeats: int, target_s: float) -> dict:
    """compute_pi four times: serially, then on pools of 2 and 4 workers with
    the GIL released and held."""
    import my_extension as ext

    # Size one call to about `target_s` seconds.
    probe = 200_000
    t0 = time.perf_counter()
    ext.compute_pi(probe, seed=1)
    per_iter = (time.perf_counter() - t0) / probe
    iterations = max(1000, int(target_s / per_iter))
    seeds = [1, 2, 3, 4]

    def serial() -> float:
        t0 = time.perf_counter()
        for s in seeds:
            ext.compute_pi(iterations, seed=s)
        return time.perf_counter() - t0

    def pool(workers: int, release: bool) -> float:
        with ThreadPoolExecutor(max_workers=workers) as ex:
            t0 = time.perf_counter()
            list(ex.map(lambda s: ext.compute_pi(iterations, seed=s, release=release), seeds))
            return time.perf_counter() - t0

    import multiprocessing

    processes = multiprocessing.get_context("fork").Pool(2)
    processes.map(_compute_pi_in_process, [(1000, 1), (1000, 2)])  # start them

    def two_processes() -> float:
        # The machine's own ceiling right now: the same work on 2 processes.
        t0 = time.perf_counter()
        processes.map(_compute_pi_in_process, [(iterations, s) for s in seeds], chunksize=1)
        return time.perf_counter() - t0

    contenders = [
        ("processes2", two_processes),
        ("pool2_released", lambda: pool(2, True)),
        ("pool2_held", lambda: pool(2, False)),
        ("pool4_released", lambda: pool(4, True)),
        ("pool4_held", lambda: pool(4, False)),
    ]
    runs: dict[str, list[float]] = {"serial": []}
    speedups: dict[str, list[float]] = {}
    for r in range(repeats):
        # Each repeat times the serial baseline and every pool back to back
        # (pools in rotating order); a speedup compares runs of one repeat.
        base = serial()
        runs["serial"].append(base)
        for name, f in contenders[r % 5 :] + contenders[: r % 5]:
            t = f()
            runs.setdefault(name, []).append(t)
            speedups.setdefault(name, []).append(base / t)
    processes.close()
    processes.join()
    return {
        "iterations": iterations,
        "cpus": os.cpu_count(),
        "repeats": repeats,
        "seconds": {k: statistics.median(v) for k, v in runs.items()},
        "speedup": {k: statistics.median(v) for k, v in speedups.items()},
    }


WORKERS = {
    "cycles": worker_cycles,
    "first_use": worker_first_use,
    "contended": worker_contended,
    "patterns": worker_patterns,
    "parallel": worker_parallel,
}


# ------------------------------------------------------------ orchestration


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, timeout=WORKER_TIMEOUT, **kw)


def call_worker(python: str, name: str, **params) -> dict:
    out = run(
        [python, str(Path(__file__).resolve()), "--worker", name, "--params", json.dumps(params)],
        stdout=subprocess.PIPE,
        text=True,
    )
    return json.loads(out.stdout)


def python_info(python: str) -> tuple[str, bool] | None:
    """The interpreter's version, and whether it is a plain (GIL, release)
    build; None if it does not run (a pyenv shim without a version, ...)."""
    code = ("import platform, sys, sysconfig; print(platform.python_version(), "
            "int(not sysconfig.get_config_var('Py_GIL_DISABLED') and not hasattr(sys, 'gettotalrefcount')))")
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    version, plain = out.stdout.split()
    return version, plain == "1"


def find_pythons() -> dict[str, str]:
    """The interpreters to measure: this one (the .venv's) and a 3.13.

    NUWA_BENCH_PYTHONS (paths separated by ':') overrides the search.
    """
    if os.environ.get("NUWA_BENCH_PYTHONS"):
        paths = [p for p in os.environ["NUWA_BENCH_PYTHONS"].split(":") if p]
    else:
        paths = [sys.executable]
        candidates = [shutil.which("python3.13")] + sorted(
            glob.glob(os.path.expanduser("~/.pyenv/versions/3.13*/bin/python3"))
        )
        paths += [p for p in candidates if p]
    found = {}
    for p in paths:
        info = python_info(p)
        if info and info[1]:
            found.setdefault(".".join(info[0].split(".")[:2]), p)
    return found


def bench_env(python: str, version: str) -> str:
    """An interpreter with nuwa_bench installed: the .venv itself, or a
    venv under target/bench for another version."""
    wheels = WORK / "wheels" / version
    if wheels.exists():
        shutil.rmtree(wheels)
    run([shutil.which("maturin") or "maturin", "build", "--release", "--quiet", "-i", python,
         "-m", str(ROOT / "bench" / "nuwa_bench" / "Cargo.toml"), "-o", str(wheels)])
    if Path(python).resolve() == Path(sys.executable).resolve():
        env_python = sys.executable
    else:
        venv = WORK / f"venv-{version}"
        if not (venv / "bin" / "python").exists():
            run([python, "-m", "venv", str(venv)])
        env_python = str(venv / "bin" / "python")
    run([env_python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--force-reinstall", "--no-deps", *map(str, wheels.glob("*.whl"))])
    return env_python


def cargo_target_dir() -> Path:
    """Where cargo builds (it honours CARGO_TARGET_DIR), as `cargo metadata` says."""
    out = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return Path(json.loads(out)["target_directory"])


def measure_sizes() -> dict:
    run(["cargo", "build", "--release", "--quiet", "-p", "size-nuwa", "-p", "size-raw"], cwd=ROOT)
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("nuwa", "raw"):
            so = cargo_target_dir() / "release" / f"libsize_{kind}.so"
            stripped = Path(tmp) / so.name
            shutil.copy(so, stripped)
            run(["strip", str(stripped)])
            sizes[kind] = stripped.stat().st_size
    sizes["difference"] = sizes["nuwa"] - sizes["raw"]
    return sizes


def measure_cold_build(runs: int) -> dict:
    """Time to build nuwa-core, nuwa-std and nuwa-ffi (with their dependencies)
    into an empty target directory, dev and release."""
    run(["cargo", "fetch", "--quiet"], cwd=ROOT)
    out = {}
    for profile in ("dev", "release"):
        times = []
        for _ in range(runs):
            with tempfile.TemporaryDirectory() as target:
                env = dict(os.environ, CARGO_TARGET_DIR=target)
                t0 = time.perf_counter()
                run(["cargo", "build", "--quiet", "--offline", "--profile", profile, "-p", "nuwa-ffi"],
                    cwd=ROOT, env=env)
                times.append(time.perf_counter() - t0)
        out[profile] = statistics.median(times)
    return out


def report(results: dict, quick: bool) -> str:
    lines = []
    add = lines.append
    add(f"Machine: {os.cpu_count()} cores, {platform.machine()}, {platform.system()}; "
        f"mode: {'quick (smoke run, figures not meaningful)' if quick else 'full'}")
    add("")
    if "peers" in results:
        import peers  # bench/peers.py, beside this file

        add("### 0. nuwa and its peers, in instructions and bytes (callgrind; deterministic)")
        add("")
        add(peers.report(results["peers"]))
        add("")
    add("### 1. One empty release/reacquire cycle (single thread)")
    add("")
    add("| Python | raw pair ns | nogil! ns | ratio | GilHeld token ns | ratio "
        "| held check (as `init()` reports it; see README for the release path) |")
    add("|---|---|---|---|---|---|---|")
    for v, c in results["cycles"].items():
        m, r = c["median_ns"], c["median_ratio"]
        check = c["resolution"].split("held check ")[-1]
        add(f"| {c['version']} | {m['raw']:.1f} | {m['nogil']:.1f} | {r['nogil']:.3f} | "
            f"{m['unchecked']:.1f} | {r['unchecked']:.3f} | {check} |")
    first = results["cycles"][next(iter(results["cycles"]))]
    add("")
    add(f"Medians of {first['rounds']} interleaved rounds of {first['n']:,} cycles; "
        "the ratio is the median of the per-round ratios to the raw pair.")
    add("")
    add("### 2. First use (lazy symbol resolution, fresh process)")
    add("")
    add("| Python | median µs | runs |")
    add("|---|---|---|")
    for v, f in results["first_use"].items():
        add(f"| {v} | {statistics.median(f) / 1000:.1f} | {len(f)} |")
    if "parallel" in results:
        p = results["parallel"]
        s, sp = p["seconds"], p["speedup"]
        add("")
        add(f"### 3. Parallel speedup: compute_pi x4 ({p['iterations']:,} iterations each), "
            f"{p['cpus']} cores, median of {p['repeats']} repeats")
        add("")
        add("| run | wall s | speedup vs serial |")
        add("|---|---|---|")
        add(f"| serial | {s['serial']:.3f} | 1.00 |")
        add(f"| 2 processes (the machine's ceiling) | {s['processes2']:.3f} | {sp['processes2']:.2f} |")
        for k in ("pool2_released", "pool2_held", "pool4_released", "pool4_held"):
            workers, mode = k[4], k.split("_")[1]
            add(f"| thread pool of {workers}, GIL {mode} | {s[k]:.3f} | {sp[k]:.2f} |")
    add("")
    add("### 4. Contended small blocks: two threads vs one (ns per block)")
    add("")
    add("| k work units | raw alone | raw two | raw ratio | nogil! alone | nogil! two | nogil! ratio "
        "| nuwa ratio / raw ratio |")
    add("|---|---|---|---|---|---|---|---|")
    for k, row in results["contended"].items():
        r, n = row["raw"], row["nogil"]
        add(f"| {int(k):,} | {r['alone_ns']:.1f} | {r['pair_ns']:.1f} | {r['ratio']:.2f} | "
            f"{n['alone_ns']:.1f} | {n['pair_ns']:.1f} | {n['ratio']:.2f} | {row['nuwa_vs_raw']:.3f} |")
    if "patterns" in results:
        pt = results["patterns"]
        add("")
        add(f"good_pattern vs bad_pattern on {pt['size']:,} floats: "
            f"{pt['good_ns_per_item']:.2f} vs {pt['bad_ns_per_item']:.2f} ns per item "
            f"(bad is {pt['ratio']:.1f}x slower: one release per element).")
    add("")
    add("### 5. Size and build cost")
    add("")
    sz = results["sizes"]
    add(f"Stripped release `.so` of a minimal extension (one function, one block; `bench/size`): "
        f"with nuwa {sz['nuwa']:,} B, with the raw pair {sz['raw']:,} B: "
        f"nuwa adds {sz['difference']:,} B ({sz['difference'] / 1024:.2f} KiB).")
    if "build" in results:
        b = results["build"]
        add("")
        add(f"Cold build of nuwa-core + nuwa-std + nuwa-ffi and their dependencies "
            f"(empty target dir, crates already downloaded), median of {results['build_runs']}: "
            f"dev {b['dev']:.2f} s, release {b['release']:.2f} s.")
    if "peers" in results:
        import peers

        add("")
        add("### Against the targets")
        add("")
        add("The goals of issue 24, each figure of section 0 against its goal:")
        add("")
        add(peers.targets(results["peers"]))
    return "\n".join(lines)


START, END = "<!-- bench-results:start -->", "<!-- bench-results:end -->"


def regenerate(json_path: Path, benchmarks: Path) -> None:
    """Rewrites target/bench/report.md and the results of BENCHMARKS.md (the
    part between its two markers) from one run's JSON."""
    results = json.loads(json_path.read_text())
    if results.get("quick"):
        raise SystemExit(f"{json_path} is from a quick run: its figures mean nothing")
    text = report(results, False)
    (WORK / "report.md").write_text(text + "\n")
    page = benchmarks.read_text()
    if START not in page or END not in page:
        raise SystemExit(f"{benchmarks} has no {START} ... {END} block")
    head, rest = page.split(START, 1)
    _, tail = rest.split(END, 1)
    intro = (f"One run of `make bench` on {results.get('date', 'an unrecorded date')} "
             f"(commit `{results.get('commit', '?')}`; {results.get('machine', '')}), "
             "regenerated from its `target/bench/results.json` by `make bench-report`:")
    benchmarks.write_text(f"{head}{START}\n{intro}\n\n{text}\n{END}{tail}")
    print(f"{benchmarks} rewritten from {json_path}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a fast smoke run (figures not meaningful)")
    ap.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    ap.add_argument("--params", default="{}", help=argparse.SUPPRESS)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                    help="callgrind runs and builds at a time (section 0)")
    ap.add_argument("--regenerate", metavar="JSON",
                    help="write BENCHMARKS.md's results and target/bench/report.md from this "
                         "run's results.json, measuring nothing")
    args = ap.parse_args()
    if args.regenerate:
        WORK.mkdir(parents=True, exist_ok=True)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        regenerate(Path(args.regenerate), ROOT / "BENCHMARKS.md")
        return
    if args.worker:
        print(json.dumps(WORKERS[args.worker](**json.loads(args.params))))
        return

    quick = args.quick
    WORK.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import peers  # bench/peers.py

    print("peers: instructions and sizes (callgrind)", file=sys.stderr)
    counted = peers.measure(quick, args.jobs)
    pythons = find_pythons()
    print(f"interpreters: {pythons}", file=sys.stderr)
    envs = {v: bench_env(p, v) for v, p in pythons.items()}
    main_env = sys.executable
    results: dict = {"cycles": {}, "first_use": {}, "peers": counted, "quick": quick,
                     "date": time.strftime("%Y-%m-%d", time.gmtime()),
                     "machine": f"{os.cpu_count()} cores, {platform.machine()}, {platform.system()}",
                     "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                              capture_output=True, text=True).stdout.strip()}
    for v, py in envs.items():
        print(f"[{v}] cycles", file=sys.stderr)
        results["cycles"][v] = call_worker(py, "cycles", rounds=5 if quick else 31,
                                           n=20_000 if quick else 200_000)
        print(f"[{v}] first use", file=sys.stderr)
        results["first_use"][v] = [call_worker(py, "first_use")["ns"] for _ in range(3 if quick else 21)]
    print("contended blocks", file=sys.stderr)
    results["contended"] = call_worker(main_env, "contended", rounds=3 if quick else 21,
                                       scale=0.05 if quick else 1.0)
    print("patterns", file=sys.stderr)
    results["patterns"] = call_worker(main_env, "patterns", rounds=3 if quick else 21,
                                      size=10_000 if quick else 200_000)
    print("parallel speedup", file=sys.stderr)
    results["parallel"] = call_worker(main_env, "parallel", repeats=1 if quick else 7,
                                      target_s=0.02 if quick else 0.4)
    print("sizes", file=sys.stderr)
    results["sizes"] = measure_sizes()
    if not quick:
        print("cold builds", file=sys.stderr)
        results["build_runs"] = 3
        results["build"] = measure_cold_build(results["build_runs"])
    (WORK / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    text = report(results, quick)
    (WORK / "report.md").write_text(text + "\n")
    print(text)
    print(f"\n(report written to {WORK / 'report.md'})", file=sys.stderr)


if __name__ == "__main__":
    main()
