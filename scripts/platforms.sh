#!/usr/bin/env bash
# nuwa built, linted and tested for targets other than the host's, with
# Debian sid's Rust toolchain inside the sid root of scripts/sid-pythons.sh
# (the host's rustc has no other target):
#
#   windows  x86_64-pc-windows-gnu: build (every example that runs there),
#            clippy and rustdoc -D warnings; unit, cross-crate and doc tests
#            under wine; the fake-python3XY.dll test (nuwa-ffi/tests/fake_python)
#   musl     x86_64-unknown-linux-musl, static and dynamic: unit,
#            cross-crate and doc tests; the dynamic build also runs the
#            fake-libpython test
#   macos    aarch64-apple-darwin, x86_64-apple-darwin: clippy and rustdoc
#            -D warnings (check only: no SDK, nothing links)
#
# Usage (as root, like scripts/sid-pythons.sh):
#   scripts/platforms.sh setup               the root's extra packages (cached)
#   scripts/platforms.sh windows|musl|macos  setup, then that target's checks
#   scripts/platforms.sh all                 setup, then all three
#
# sid has no prebuilt std for these targets, so std is built from rust-src
# (`-Zbuild-std`, allowed on a stable rustc by RUSTC_BOOTSTRAP=1; std's own
# dependencies come from crates.io). The toolchain, mingw-w64, wine and
# musl-tools are installed into the sid root with apt-get, once: the package
# list is kept in the root's stamp file .nuwa-platforms, and a root whose
# stamp names the same list is used as it is. Cargo's home and the target
# directories live in the root too (/var/cache/nuwa-platforms), so a fresh
# clone rebuilds only nuwa's own crates. Another script may install into the
# same root at the same time: apt-get waits for dpkg's lock.
set -euo pipefail

project=$(realpath "$(dirname "$0")/..")
sid="$project/scripts/sid-pythons.sh"
# Inside the root, where cargo keeps its downloads and builds.
CACHE=${NUWA_PLATFORMS_CACHE:-/var/cache/nuwa-platforms}
PACKAGES=(rustc cargo rust-src rust-clippy gcc-mingw-w64-x86-64 wine wine64 musl-tools
          musl-dev binutils xz-utils ca-certificates)
WINDOWS=x86_64-pc-windows-gnu
MUSL=x86_64-unknown-linux-musl
MACOS=(aarch64-apple-darwin x86_64-apple-darwin)
# The crates a user depends on and the cross-crate tests.
LIB_CRATES=(-p nuwa-core -p nuwa-std -p nuwa-ffi -p nuwa-tests)

die() { echo "platforms: error: $*" >&2; exit 1; }
say() { echo "platforms: $*" >&2; }

# ---------------------------------------------------------------- host side

root_dir() { "$sid" --print-root; }

setup() {
    local root stamp want
    # Makes the sid root if it is missing (cached; shared with the matrix).
    "$sid" >/dev/null
    root=$(root_dir)
    stamp="$root/.nuwa-platforms"
    want="packages=${PACKAGES[*]}"
    if [[ -f $stamp ]] && grep -qxF "$want" "$stamp"; then
        return
    fi
    local start=$SECONDS
    say "installing into the sid root: ${PACKAGES[*]}"
    local apt=(apt-get -o DPkg::Lock::Timeout=900 -o Acquire::Check-Valid-Until=false
               -o APT::Get::List-Cleanup=false)
    (cd "$project" && "$sid" run -- "${apt[@]}" update -qq) >&2 ||
        die "apt-get update failed in the sid root"
    (cd "$project" && "$sid" run -- env DEBIAN_FRONTEND=noninteractive \
        "${apt[@]}" install -y -qq --no-install-recommends "${PACKAGES[@]}") >&2 ||
        die "apt-get install failed in the sid root"
    # LLVM's unwinder for musl, unpacked, not installed (see inside_musl_setup).
    (cd "$project" && "$sid" run -- bash "$project/scripts/platforms.sh" --inside musl-unwinder) ||
        die "could not fetch LLVM's libunwind for musl"
    rm -f "$root"/var/cache/apt/archives/*.deb
    echo "$want" >"$stamp"
    say "root packages ready in $((SECONDS - start))s"
}

run_inside() { # run_inside WHAT
    (cd "$project" && "$sid" run -- bash "$project/scripts/platforms.sh" --inside "$1")
}

# ------------------------------------------------------------- inside the root

# Cargo with std built for the target.
xcargo() { # xcargo SUBCOMMAND TARGET ARGS...
    local sub=$1 target=$2
    shift 2
    cargo "$sub" -Zbuild-std=std,panic_unwind --target "$target" "$@"
}

inside_env() {
    export RUSTC_BOOTSTRAP=1
    export CARGO_HOME=$CACHE/cargo
    export CARGO_TARGET_DIR=$CACHE/target
    export CARGO_TERM_COLOR=never CARGO_TERM_PROGRESS_WHEN=never
    # The CA bundle sid-pythons.sh copied in (cargo's downloads).
    [[ -n ${SSL_CERT_FILE:-} && -f $SSL_CERT_FILE ]] && export CARGO_HTTP_CAINFO=$SSL_CERT_FILE
    unset RUSTFLAGS RUSTDOCFLAGS CARGO_BUILD_TARGET RUSTUP_TOOLCHAIN
    mkdir -p "$CACHE"
    cd "$project"
    step "rustc: $(rustc --version)"
}

step() { printf '\n--> [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*" >&2; }

inside_windows() {
    local t=$WINDOWS
    export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine
    export WINEPREFIX=$CACHE/wine WINEDEBUG=-all XDG_RUNTIME_DIR=$CACHE/xdg
    mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
    step "windows: clippy -D warnings (libraries, tests, examples)"
    xcargo clippy $t "${LIB_CRATES[@]}" -p nuwa-fake-python --all-targets -- -D warnings
    # The extensions on pyo3-ffi and PyO3 are checked, not linked: their link
    # needs a python3XY import library (pyo3-ffi's generate-import-lib
    # feature would pull in a crate the lock file does not have).
    PYO3_CROSS_PYTHON_VERSION=3.13 xcargo clippy $t -p my-extension -p minimal \
        -p pyo3-extension -p pyo3-extension-core -p nuwa-c-abi-example -p nuwa-c-abi-host \
        --all-targets -- -D warnings
    step "windows: rustdoc -D warnings"
    RUSTDOCFLAGS="-D warnings" xcargo doc $t -p nuwa-core -p nuwa-std -p nuwa-ffi --no-deps
    step "windows: build the examples that link without Python"
    xcargo build $t -p nuwa-ffi --examples
    xcargo build $t -p nuwa-c-abi-example -p nuwa-c-abi-host
    step "windows: the C ABI example's host under wine (no Python in the process)"
    wine "$CARGO_TARGET_DIR/$t/debug/nuwa-c-abi-host.exe" "$CARGO_TARGET_DIR/$t/debug/nuwa_c_abi.dll"
    step "windows: unit and doc tests under wine"
    xcargo test $t -p nuwa-core -p nuwa-std -p nuwa-ffi --lib
    xcargo test $t -p nuwa-core -p nuwa-std -p nuwa-ffi --doc
    xcargo test $t -p nuwa-ffi --features stats --lib
    # The cross-crate tests, but not compile_fail (trybuild) and await_lint:
    # they start cargo, which does not run under wine.
    step "windows: cross-crate tests under wine (not compile_fail, await_lint)"
    xcargo test $t -p nuwa-tests --test exit_paths --test std_adapter --test strict_and_with_gil
    step "windows: nuwa against fake python3XY.dll files, under wine"
    xcargo test $t -p nuwa-fake-python
}

# LLVM's unwinder for musl: build-std does not bring the libunwind.a that
# Rust's own musl std ships (self-contained), and GCC's libgcc_eh is built
# for glibc. Debian's libunwind-NN-dev has LLVM's libunwind.a: downloaded and
# unpacked into the cache, not installed (it would conflict with nothing,
# but it is only ever linked into musl programs).
inside_musl_unwinder() {
    local pkg dir=$CACHE/musl/llvm
    pkg=$(apt-cache search --names-only '^libunwind-[0-9]+-dev$' | cut -d' ' -f1 | sort -V | tail -n 1)
    [[ -n $pkg ]] || die "no libunwind-NN-dev package in the root's index"
    rm -rf "$dir" && mkdir -p "$dir"
    (cd "$dir" && apt-get download -qq "$pkg" && dpkg-deb -x ./*.deb . && rm -f ./*.deb)
    find "$dir" -name libunwind.a | grep -q . || die "$pkg has no libunwind.a"
    echo "$pkg" >"$dir/package"
}

# The musl link: musl-gcc (not Rust's bundled start files, which build-std
# lacks), and an unwinder made once from LLVM's libunwind.a, GCC's
# unwind-c.o (__gcc_personality_v0, for the C frame built with -fexceptions)
# and a shim for the two glibc fortify functions libunwind.a calls.
musl_unwinder() {
    local dir=$CACHE/musl
    [[ -f $dir/libunwind.a && -f $dir/dyn/libgcc_s.so.1 && -f $dir/dyn/unwind-c.o ]] && return
    local llvm gcc_eh work
    [[ -f $dir/llvm/package ]] || inside_musl_unwinder
    llvm=$(find "$dir/llvm" -name libunwind.a | head -n 1)
    [[ -n $llvm ]] || die "no LLVM libunwind.a under $dir/llvm (run scripts/platforms.sh setup)"
    gcc_eh=$(gcc -print-file-name=libgcc_eh.a)
    work=$(mktemp -d)
    (cd "$work" && ar x "$llvm" && ar x "$gcc_eh" unwind-c.o)
    cat >"$work/chk_shim.c" <<'EOF_C'
/* glibc's fortified printf entry points, which Debian's libunwind.a calls
 * and musl lacks: the plain functions, without the checks. */
#include <stdarg.h>
#include <stdio.h>
int __vfprintf_chk(FILE *f, int flag, const char *fmt, va_list ap) {
    (void)flag;
    return vfprintf(f, fmt, ap);
}
int __vsnprintf_chk(char *s, size_t n, int flag, size_t len, const char *fmt, va_list ap) {
    (void)flag; (void)len;
    return vsnprintf(s, n, fmt, ap);
}
EOF_C
    musl-gcc -O2 -fPIC -c "$work/chk_shim.c" -o "$work/chk_shim.o"
    mkdir -p "$dir/dyn"
    rm -f "$dir/libunwind.a"
    ar rcs "$dir/libunwind.a" "$work"/*.o
    # The dynamic build links -lgcc_s: the same unwinder as a shared library.
    musl-gcc -shared -o "$dir/dyn/libgcc_s.so.1" -Wl,-soname,libgcc_s.so.1 -Wl,--eh-frame-hdr \
        -Wl,--whole-archive "$dir/libunwind.a" -Wl,--no-whole-archive
    ln -sf libgcc_s.so.1 "$dir/dyn/libgcc_s.so"
    # GCC builds __gcc_personality_v0 hidden: the shared unwinder does not
    # export it, so a dynamic program links unwind-c.o itself.
    cp "$work/unwind-c.o" "$dir/dyn/unwind-c.o"
    rm -rf "$work"
}

inside_musl() {
    local t=$MUSL tu=X86_64_UNKNOWN_LINUX_MUSL kind
    musl_unwinder
    export "CARGO_TARGET_${tu}_LINKER=musl-gcc" CC_x86_64_unknown_linux_musl=musl-gcc
    for kind in static dynamic; do
        local flags="-C link-self-contained=no -L native=$CACHE/musl"
        if [[ $kind == dynamic ]]; then
            flags+=" -C target-feature=-crt-static -L native=$CACHE/musl/dyn"
            flags+=" -C link-arg=-Wl,-rpath,$CACHE/musl/dyn -C link-arg=$CACHE/musl/dyn/unwind-c.o"
        fi
        export "CARGO_TARGET_${tu}_RUSTFLAGS=$flags" RUSTDOCFLAGS=$flags
        # A target directory per kind: the flags differ.
        export CARGO_TARGET_DIR=$CACHE/target-musl-$kind
        step "musl $kind: build"
        xcargo build $t "${LIB_CRATES[@]}" -p nuwa-fake-python --all-targets
        step "musl $kind: unit and doc tests"
        xcargo test $t -p nuwa-core -p nuwa-std -p nuwa-ffi --lib
        xcargo test $t -p nuwa-core -p nuwa-std -p nuwa-ffi --doc
        # As on Windows, not compile_fail and await_lint (they start cargo
        # for the host, which is not this target).
        step "musl $kind: cross-crate tests (not compile_fail, await_lint)"
        xcargo test $t -p nuwa-tests --test exit_paths --test std_adapter --test strict_and_with_gil
        step "musl $kind: nuwa against fake libpython3.XY.so files"
        xcargo test $t -p nuwa-fake-python
    done
}

inside_macos() {
    local t
    # No SDK: the C frame of build.rs goes through a stand-in compiler that
    # writes an empty object (nothing is linked in a check).
    local fake_cc=$CACHE/bin/macos-stand-in-cc
    mkdir -p "$CACHE/bin"
    cat >"$fake_cc" <<'EOF'
#!/bin/sh
# A stand-in for a macOS C compiler: writes an empty object where -o says.
# The cc crate's compiler detection (-E, and -? for MSVC-style flags, which
# fails) goes to the root's gcc, so that the flags it then passes are GCC's.
case " $* " in *" -E "*|*" -? "*) exec gcc "$@" ;; esac
out=
while [ $# -gt 0 ]; do
    case $1 in
        -o) out=$2; shift ;;
        -o*) out=${1#-o} ;;
    esac
    shift
done
[ -n "$out" ] || exit 1
: >"$out"
EOF
    chmod +x "$fake_cc"
    for t in "${MACOS[@]}"; do
        local env_t=${t//-/_}
        export "CC_$env_t=$fake_cc" "AR_$env_t=ar"
        step "macos $t: clippy -D warnings"
        xcargo clippy "$t" "${LIB_CRATES[@]}" -p nuwa-fake-python --all-targets -- -D warnings
        step "macos $t: rustdoc -D warnings"
        RUSTDOCFLAGS="-D warnings" xcargo doc "$t" -p nuwa-core -p nuwa-std -p nuwa-ffi --no-deps
    done
}

case ${1:-} in
    --inside)
        what=${2:?}
        inside_env
        "inside_${what//-/_}"
        ;;
    setup) setup ;;
    windows|musl|macos)
        setup
        run_inside "$1"
        ;;
    all)
        setup
        for what in windows macos musl; do run_inside "$what"; done
        ;;
    *) sed -n 's/^#   scripts/  scripts/p' "$0" >&2; exit 2 ;;
esac
