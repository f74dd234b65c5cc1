#!/usr/bin/env bash
# Build extra CPython 3.13 interpreters for nuwa's tests:
#
#   3.13t  free-threaded build (./configure --disable-gil)  -> libpython3.13t.so
#   3.13d  debug build         (./configure --with-pydebug) -> libpython3.13d.so
#
# Both are shared builds (--enable-shared) with an rpath to their own lib/ dir,
# so "$prefix/bin/python3" runs without LD_LIBRARY_PATH and Rust tests can
# dlopen "$prefix/lib/libpython3.13{t,d}.so". Both ship pip and the usual
# extension modules (ssl, ctypes, zlib, bz2, lzma, _uuid, ...), so venvs made
# from them can pip-install test tools from PyPI.
#
# Source: the pristine upstream tarball (python3.13_3.13.5.orig.tar.xz) from
# Debian trixie's "python3.13" source package, fetched with apt-get using a
# private state dir; the machine's apt configuration is left untouched. No
# Debian patches are applied.
#
# Usage:
#   scripts/build-pythons.sh [3.13t] [3.13d]   build the named ones (default: both)
#   scripts/build-pythons.sh --print-prefix NAME
#
# Layout under ${NUWA_PYTHONS:-$HOME/.cache/nuwa-pythons}:
#   NAME/                       install prefix (bin/python3, lib/libpython*.so)
#   NAME/.nuwa-build-complete   stamp: written only after install + smoke test
#   build/NAME/                 source tree and build.log of the last build
#   src/                        cached source tarball
#   .apt/                       private apt lists/cache used to fetch the source
#
# A build whose stamp exists is skipped, so re-running is cheap.
set -euo pipefail

PY_VERSION=3.13.5
TARBALL="python3.13_${PY_VERSION}.orig.tar.xz"
TARBALL_SHA256=93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640
APT_LINE="deb-src http://deb.debian.org/debian trixie main"
APT_SOURCE_PKG="python3.13/trixie"
ALL_NAMES=(3.13t 3.13d)
# Debian packages needed to build the modules we rely on.
BUILD_DEPS=(build-essential pkg-config xz-utils libssl-dev zlib1g-dev libffi-dev
            libbz2-dev liblzma-dev uuid-dev libreadline-dev libsqlite3-dev)

root=$(realpath -m "${NUWA_PYTHONS:-$HOME/.cache/nuwa-pythons}")

die() { echo "build-pythons: error: $*" >&2; exit 1; }
say() { echo "build-pythons: $*"; }

usage() {
    sed -n 's/^#   scripts/  scripts/p' "$0"
    echo "  names: ${ALL_NAMES[*]}; root: $root (override with NUWA_PYTHONS)"
}

# Extra ./configure flags that make NAME what it is.
flavor_flags() {
    case $1 in
        3.13t) echo --disable-gil ;;
        3.13d) echo --with-pydebug ;;
        *) die "unknown interpreter '$1' (known: ${ALL_NAMES[*]})" ;;
    esac
}

prefix_of() { echo "$root/$1"; }
stamp_of() { echo "$root/$1/.nuwa-build-complete"; }

# Python snippet that checks the flavour-specific property and prints it.
flavor_check() {
    case $1 in
        3.13t) echo 'g = sys._is_gil_enabled(); assert not g, "GIL is enabled"; print(f"gil_enabled={g}")' ;;
        3.13d) echo 'd = hasattr(sys, "gettotalrefcount"); assert d, "not a debug build"; print(f"debug={d}")' ;;
    esac
}

# Import the modules the tests depend on and check the flavour; used as the
# gate before writing the stamp.
smoke_test() {
    local py=$1 name=$2
    "$py" -c "import ssl, ctypes, zlib, bz2, lzma, _uuid, sys; print(sys.version); $(flavor_check "$name")" &&
        "$py" -m pip --version
}

# Run a command with its output appended to LOG; on failure show the log tail.
LOG=/dev/null
run_logged() {
    if ! "$@" >>"$LOG" 2>&1; then
        echo "build-pythons: command failed: $*" >&2
        echo "---- last 40 lines of $LOG ----" >&2
        tail -n 40 "$LOG" >&2
        exit 1
    fi
}

# Make sure the Debian build dependencies are installed (installing them when
# we are root, failing with a list otherwise).
check_build_deps() {
    if ! command -v dpkg-query >/dev/null; then
        say "warning: no dpkg-query; cannot check build dependencies (${BUILD_DEPS[*]})"
        return
    fi
    local missing=() pkg
    for pkg in "${BUILD_DEPS[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return
    if [[ $(id -u) -ne 0 ]]; then
        die "missing build dependencies: ${missing[*]}
  install them with: sudo apt-get install ${missing[*]}"
    fi
    command -v apt-get >/dev/null || die "missing build dependencies (${missing[*]}) and no apt-get to install them"
    say "installing missing build dependencies: ${missing[*]}"
    LOG="$root/.apt/install.log"
    mkdir -p "$root/.apt"
    : >"$LOG"
    run_logged apt-get -o DPkg::Lock::Timeout=600 update
    run_logged env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}"
}

# Put the verified upstream tarball at $root/src/$TARBALL, downloading it with a
# private apt setup if it is not cached yet.
fetch_source() {
    local cached="$root/src/$TARBALL"
    if [[ ! -f $cached ]]; then
        command -v apt-get >/dev/null ||
            die "apt-get not found: it is needed to fetch the $APT_SOURCE_PKG source (or put $TARBALL into $root/src/ yourself)"
        local dir="$root/.apt"
        mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$root/src"
        echo "$APT_LINE" >"$dir/sources.list"
        # Point apt at private lists/cache/sources; nothing under /etc/apt or
        # /var/lib/apt is modified.
        local opts=(-o "Dir::State::Lists=$dir/lists"
                    -o "Dir::Etc::SourceList=$dir/sources.list"
                    -o "Dir::Etc::SourceParts=/dev/null"
                    -o "Dir::Cache=$dir/cache")
        LOG="$dir/apt.log"
        : >"$LOG"
        say "fetching $APT_SOURCE_PKG source with apt-get (log: $LOG)"
        run_logged apt-get "${opts[@]}" update
        rm -rf "$dir/work"
        mkdir -p "$dir/work"
        (cd "$dir/work" && run_logged apt-get "${opts[@]}" source --download-only "$APT_SOURCE_PKG")
        [[ -f $dir/work/$TARBALL ]] ||
            die "apt-get did not deliver $TARBALL (trixie's python3.13 may have moved past $PY_VERSION); got: $(ls "$dir/work")"
        mv "$dir/work/$TARBALL" "$cached.tmp"
        rm -rf "$dir/work"
        mv "$cached.tmp" "$cached"
    fi
    echo "$TARBALL_SHA256  $cached" | sha256sum --check --status ||
        die "$cached does not match the expected sha256 $TARBALL_SHA256; delete it and re-run"
}

# Configure, build, install and smoke-test one interpreter.
build_one() {
    local name=$1 flags prefix build start
    flags=$(flavor_flags "$name")
    prefix=$(prefix_of "$name")
    build="$root/build/$name"
    start=$SECONDS

    # Start from scratch: a stale libpython in the prefix could otherwise be
    # picked up through the rpath by the freshly built ./python.
    rm -rf "$prefix" "$build"
    mkdir -p "$build"
    LOG="$build/build.log"
    : >"$LOG"
    say "building $name ($flags) into $prefix (log: $LOG)"

    tar -xJf "$root/src/$TARBALL" -C "$build"
    local src="$build/Python-$PY_VERSION"
    [[ -d $src ]] || die "unexpected tarball layout: no Python-$PY_VERSION/ in $TARBALL"

    # No PGO/LTO (not enabled by default); pip is installed by ensurepip.
    # Without CPython's own test modules, install is about 30 s shorter.
    # shellcheck disable=SC2086  # $flags is a single word
    (cd "$src" && run_logged ./configure --prefix="$prefix" --enable-shared $flags \
        --disable-test-modules LDFLAGS="-Wl,-rpath,$prefix/lib")
    say "  configured; compiling with make -j$(nproc)"
    (cd "$src" && run_logged make -j"$(nproc)")
    say "  compiled; installing"
    (cd "$src" && run_logged make install)

    # make install names the binary python3.13t / python3.13d; provide python3.
    local bin="$prefix/bin"
    [[ -e $bin/python3 ]] || ln -s "python$name" "$bin/python3"

    say "  smoke test"
    run_logged smoke_test "$bin/python3" "$name"
    printf '%s\n' "version=$PY_VERSION" "configure=--enable-shared $flags" "built=$(date -u +%FT%TZ)" \
        >"$(stamp_of "$name")"
    local t=$((SECONDS - start))
    say "built $name in $((t / 60))m$((t % 60))s"
}

# ---- command line ----
names=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --print-prefix)
            [[ $# -ge 2 ]] || die "--print-prefix needs a NAME"
            flavor_flags "$2" >/dev/null
            prefix_of "$2"
            exit 0 ;;
        -h|--help) usage; exit 0 ;;
        -*) usage >&2; die "unknown option '$1'" ;;
        *) flavor_flags "$1" >/dev/null; names+=("$1") ;;
    esac
    shift
done
[[ ${#names[@]} -gt 0 ]] || names=("${ALL_NAMES[@]}")

# Keep the outside environment from leaking into the built interpreters.
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP

# ---- build what is missing ----
todo=()
for name in "${names[@]}"; do
    if [[ -f $(stamp_of "$name") ]]; then
        say "skipping $name: already built ($(stamp_of "$name") exists)"
    else
        todo+=("$name")
    fi
done

if [[ ${#todo[@]} -gt 0 ]]; then
    mkdir -p "$root"
    # One builder at a time per root.
    exec 9>"$root/.lock"
    flock 9
    check_build_deps
    fetch_source
    for name in "${todo[@]}"; do
        # Another run may have built it while we waited for the lock.
        [[ -f $(stamp_of "$name") ]] || build_one "$name"
    done
fi

# ---- summary: name, python path, sys.version, flavour property ----
for name in "${names[@]}"; do
    py="$(prefix_of "$name")/bin/python3"
    info=$("$py" -c "import sys; print(sys.version.replace(chr(10), ' '), end=' | '); $(flavor_check "$name")") ||
        die "$py does not work; remove $(stamp_of "$name") and re-run to rebuild"
    echo "$name | $py | $info"
done
