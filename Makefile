# nuwa: the commands a newcomer runs. See README.md.
#
#   make demo    build examples/my_extension and run examples/demo.py
#   make test    every test: Rust (workspace, no_std proof, real interpreter) and Python
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
PYTEST_ARGS ?= -q

.PHONY: help venv ext demo test test-rust test-no-std test-python clean

help:
	@echo "make demo    build the example extension (release) and run examples/demo.py"
	@echo "make test    all tests, Rust and Python"
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

demo: ext
	$(VPY) examples/demo.py

test: test-rust test-no-std test-python

# Unit, doc, compile-fail and real-interpreter tests. The real-interpreter
# tests embed the libpython of NUWA_TEST_PYTHON (default: python3).
test-rust:
	$(CARGO) test --workspace

# Fails to build if nuwa-core ever pulls in std (duplicate panic_impl).
test-no-std:
	$(CARGO) build --quiet --manifest-path tests/no_std_check/Cargo.toml --release

test-python: ext
	$(VPY) -m pytest $(PYTEST_ARGS) examples/my_extension/tests

clean:
	$(CARGO) clean
	$(CARGO) clean --manifest-path tests/no_std_check/Cargo.toml
	rm -rf $(VENV)
