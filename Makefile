# nuwa: the commands a newcomer runs. See README.md.
#
#   make demo    build examples/my_extension and run examples/demo.py
#   make test    every test: Rust (workspace, no_std proof, real interpreter),
#                the rendered docs' links, and Python
#
# Only a Rust toolchain and python3 are needed: the Python tools (maturin,
# pytest) are installed into .venv on first use.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
CARGO ?= cargo
EXT_MANIFEST := examples/my_extension/Cargo.toml
MINIMAL_MANIFEST := examples/minimal/Cargo.toml
PYO3_MANIFEST := examples/pyo3_extension/Cargo.toml
PYTEST_ARGS ?= -q

.PHONY: help venv ext minimal pyo3-ext demo test test-clear-skip package test-rust test-no-std test-docs test-python test-size c-abi bench bench-quick bench-report pythons test-matrix test-linux-arches test-valgrind test-platforms test-platforms-windows test-platforms-musl test-platforms-macos test-fresh-root clean

help:
	@echo "make demo    build the example extension (release) and run examples/demo.py"
	@echo "make test    all tests, Rust and Python"
	@echo "make bench   benchmarks (nuwa beside the C macros, Cython, pybind11, nanobind, PyO3); see BENCHMARKS.md"
	@echo "make bench-report  rewrite BENCHMARKS.md's results from the last make bench"
	@echo "make test-matrix  the tests on every CPython 3.8-3.15 found, 3.13t/3.13d/3.14d/3.15d, the system python3"
	@echo "make test-linux-arches  lint and test on Linux i686, s390x and aarch64 (real CPython)"
	@echo "make test-valgrind  the Python tests under valgrind memcheck: no invalid access or leak in nuwa"
	@echo "make test-platforms  Windows (wine, fake DLLs), musl, macOS (check only) in the sid root"
	@echo "make test-fresh-root  make demo and make test in a new Debian sid root with only the README's packages"
	@echo "make package  cargo package the three crates (verified) and check what they ship"
	@echo "make clean   remove build output and .venv"

# The project's virtual environment, with the build and test tools.
$(VENV)/.installed: requirements-dev.txt
	@if [ ! -x $(VPY) ]; then \
	  $(PYTHON) -m venv $(VENV) || { \
	    echo "error: '$(PYTHON) -m venv' failed. On Debian/Ubuntu install python3-venv," \
	         "or run with PYTHON=/path/to/python3 (3.9 or later)." >&2; exit 1; }; \
	fi
	$(VPY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

venv: $(VENV)/.installed

# Builds examples/my_extension in release mode and installs it into .venv.
ext: venv
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release --quiet \
	  -m $(EXT_MANIFEST)

# Builds examples/minimal (the extension to copy; one abi3 build for CPython
# 3.9+) in release mode and installs it into .venv.
minimal: venv
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release --quiet \
	  -m $(MINIMAL_MANIFEST)

# Builds examples/pyo3_extension (PyO3, one abi3 build for CPython 3.9+) in
# release mode and installs it into .venv.
pyo3-ext: venv
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release --quiet \
	  -m $(PYO3_MANIFEST)

demo: ext
	$(VPY) examples/demo.py $(DEMO_ARGS)

# A skipped real-interpreter suite (no shared libpython for python3) passes
# `cargo test`, so `make test` says so again, last, where it is seen.
SKIP_MARK = $(shell $(CARGO) metadata --format-version 1 --no-deps 2>/dev/null | \
  $(PYTHON) -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/tmp/real_python.skipped
# The compile-fail cases a distribution's rustc cannot check (see
# tests/tests/compile_fail.rs).
UI_SKIP_MARK = $(dir $(SKIP_MARK))compile_fail.skipped

test: test-clear-skip test-rust test-no-std test-docs test-python test-size
	@if [ -f "$(SKIP_MARK)" ]; then \
	  echo; echo "************************************************************"; \
	  echo "WARNING: the real-interpreter tests did not run:"; cat "$(SKIP_MARK)"; \
	  echo "Install a Python with a shared libpython (Debian: libpython3-dev)"; \
	  echo "or set NUWA_TEST_PYTHON; NUWA_REQUIRE_PYTHON=1 makes this a failure."; \
	  echo "************************************************************"; fi
	@if [ -f "$(UI_SKIP_MARK)" ]; then echo; echo "WARNING:"; cat "$(UI_SKIP_MARK)"; fi

test-clear-skip:
	@rm -f "$(SKIP_MARK)" "$(UI_SKIP_MARK)"

# Unit, doc, compile-fail and real-interpreter tests, then nuwa-ffi's again
# with its release statistics on. The real-interpreter tests embed the
# libpython of NUWA_TEST_PYTHON (default: python3).
# pyo3-extension (no tests of its own; pytest runs it) is left out: it turns
# on nuwa-ffi's `pyo3` feature, which would be unified into every test
# binary, and those cannot link PyO3 (PYO3_BUILD_EXTENSION_MODULE, set in
# .cargo/config.toml, leaves libpython out). The adapter is tested through
# the extension (test-python); its doc example is compiled (no_run) below.
test-rust:
	$(CARGO) test --workspace --exclude pyo3-extension
	$(CARGO) test -p nuwa-ffi --features pyo3 --doc -- detach::
	$(CARGO) test -p nuwa-ffi --features stats --lib
	$(CARGO) test -p nuwa-ffi --features stats --doc
	$(CARGO) test -p nuwa-ffi --features stats --test real_python -- stats_

# The library crates as crates.io would get them (see the script).
package:
	scripts/check-package.sh

# Fails to build if nuwa-core ever pulls in std (duplicate panic_impl).
test-no-std:
	$(CARGO) build --quiet --manifest-path tests/no_std_check/Cargo.toml --release

# Renders the library crates' docs as `cargo doc` does and fails on a link
# that came out as literal text or points at a missing page: rustdoc's
# `-D warnings` does not see those (the script says why).
test-docs:
	$(PYTHON) scripts/check-doc-links.py

# What nuwa adds to a stripped minimal extension, against its budget (the
# script prints both sizes).
test-size:
	scripts/size-budget.sh

test-python: ext minimal c-abi pyo3-ext
	$(VPY) -m pytest $(PYTEST_ARGS) examples/minimal/tests
	$(VPY) -m pytest $(PYTEST_ARGS) examples/my_extension/tests
	$(VPY) -m pytest $(PYTEST_ARGS) examples/c_abi/tests
	$(VPY) -m pytest $(PYTEST_ARGS) examples/pyo3_extension/tests

# Builds examples/c_abi (libnuwa_c_abi.so: plain C functions on nuwa-ffi,
# loaded by its tests with ctypes) and examples/c_abi_host (a program without
# Python that loads the same file), into target/release.
c-abi:
	$(CARGO) build --release --quiet -p nuwa-c-abi-example -p nuwa-c-abi-host

# Benchmarks, measured in one run (see BENCHMARKS.md): nuwa beside its peers
# (the C macros, Cython, pybind11, nanobind, PyO3), each an extension module
# of its own, counted with callgrind on every interpreter found (section 0,
# bench/peers.py), then the timed sections. The peers' build tools are
# pinned in bench/requirements.txt. bench-quick is a smoke run for CI (every
# contender built for 3.11 and 3.13t, counted on 3.11 with a small N): it checks that the
# benchmarks still run; its figures mean nothing. bench-report rewrites
# BENCHMARKS.md's results from the last full run's JSON. BENCH_JOBS: how many
# callgrind runs and builds at a time.
BENCH_JOBS ?= $(shell nproc)
BENCH_JSON := target/bench/results.json

$(VENV)/.bench-installed: $(VENV)/.installed bench/requirements.txt
	$(VPY) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	@touch $@

bench: ext pyo3-ext $(VENV)/.bench-installed
	$(VPY) bench/bench.py --jobs $(BENCH_JOBS)
	$(VPY) examples/pyo3_extension/bench.py

bench-quick: ext pyo3-ext $(VENV)/.bench-installed
	$(VPY) bench/bench.py --quick --jobs $(BENCH_JOBS)
	$(VPY) examples/pyo3_extension/bench.py --quick

bench-report: venv
	$(VPY) bench/bench.py --regenerate $(BENCH_JSON)

# The extra interpreters of the matrix, made once into ~/.cache/nuwa-pythons:
# 3.13t and 3.13d built from Debian's CPython 3.13.5 source, and a Debian sid
# root (debootstrap, run with chroot) with CPython 3.14, 3.14d, 3.15, 3.15d.
# Both need root for apt-get; the sid root also for mount and chroot.
pythons:
	scripts/build-pythons.sh
	scripts/sid-pythons.sh

# Every test suite against every interpreter found; prints the support table.
# my_extension, pyo3_extension and minimal are each built once, as one abi3
# wheel, and that wheel is tested on every GIL interpreter from 3.9 on.
test-matrix: venv pythons
	$(VPY) scripts/test-matrix.py $(MATRIX_ARGS)

# nuwa on Linux for other CPUs, in the sid root of `make pythons` with its
# Rust and cross compilers (installed once by scripts/cross-linux.sh setup).
# CROSS_TEST: clippy, the unit and cross-crate tests, and the
# real-interpreter suite against the architecture's libpython 3.14 and 3.15
# (i686 also 3.13): i686 natively, s390x (big-endian) and aarch64 under
# qemu-user (which runs aarch64 with the x86_64 host's memory order: weak
# memory ordering is not exercised). CROSS_UNIT: the same without the
# real-interpreter suite (none by default; e.g. CROSS_UNIT=aarch64
# CROSS_TEST="i686 s390x" to save its time).
CROSS_TEST ?= i686 s390x aarch64
CROSS_UNIT ?=
test-linux-arches:
	scripts/cross-linux.sh setup
	$(if $(strip $(CROSS_TEST)),scripts/cross-linux.sh test $(CROSS_TEST))
	$(if $(strip $(CROSS_UNIT)),scripts/cross-linux.sh unit $(CROSS_UNIT))

# my_extension's Python tests (minus the subprocess ones) and the shutdown
# scenarios under valgrind memcheck with PYTHONMALLOC=malloc. Fails on an
# error or a definite leak with a frame of nuwa or the example; CPython's own
# reports are suppressed by scripts/valgrind-python.supp. Needs valgrind
# (apt-get install valgrind). Rebuilds the extension with line tables into
# target/valgrind; .venv keeps the one `ext` installs.
test-valgrind: ext
	$(VPY) scripts/valgrind-check.py $(VALGRIND_ARGS)

# nuwa for targets other than the host's, with Debian sid's Rust inside the
# sid root of `make pythons` (scripts/platforms.sh installs what it needs
# there, once): Windows x86_64 under wine (against fake python3XY.dlls, not
# CPython), musl x86_64 static and dynamic (a fake libpython), macOS aarch64
# and x86_64 (clippy and rustdoc only). Needs root, like `make pythons`.
test-platforms: test-platforms-windows test-platforms-macos test-platforms-musl

test-platforms-windows:
	scripts/platforms.sh windows

test-platforms-musl:
	scripts/platforms.sh musl

test-platforms-macos:
	scripts/platforms.sh macos

# The README's install line, checked: a new minimal Debian sid root with
# only the packages that line names, a clean copy of HEAD (not the worktree:
# commit first), and `make demo` and `make test` in it as a normal user.
# Needs root (debootstrap, mount, chroot); caches only the .deb files, in
# ~/.cache/nuwa-pythons (see the script).
test-fresh-root:
	scripts/fresh-root.sh

clean:
	$(CARGO) clean
	$(CARGO) clean --manifest-path tests/no_std_check/Cargo.toml
	rm -rf $(VENV)
