#!/usr/bin/env bash
# nuwa on Linux for other CPUs: i686 (32-bit), aarch64, and s390x (64-bit
# big-endian), built with Debian sid's Rust and cross compilers in the root
# of scripts/sid-pythons.sh and tested against each architecture's own
# libpython from Debian (i686 natively: the kernel runs 32-bit x86 programs;
# the others under qemu-user).
#
# Usage:
#   scripts/cross-linux.sh [setup]          add the tools to the sid root (once: cached)
#   scripts/cross-linux.sh test ARCH...     build, lint and test for each ARCH
#   scripts/cross-linux.sh unit ARCH...     the same without the real-interpreter suite
#   scripts/cross-linux.sh check ARCH...    build and lint only (no test runs)
#   scripts/cross-linux.sh run ARCH -- CMD  run CMD in the root, set up for ARCH
#                                           (cargo builds for it, its programs run)
#
# ARCH: i686, aarch64, s390x. armv7, ppc64le and riscv64 are mapped too
# (Debian has their std, compilers and libpython), for a setup made with
# NUWA_CROSS_ARCHES="i686 aarch64 s390x armv7 ppc64le"; CI does not take
# that path (time: about 3.5 minutes more per architecture). On 2026-12-07
# the setup took 1m44s and `test armv7 ppc64le` 7m08s, green; riscv64
# could not be installed beside the others that day (sid's riscv64
# libpython3.14 was one Debian revision behind, and Multi-Arch packages of
# one name must have one version). `test` runs, for each ARCH:
#   - cargo clippy --workspace --all-targets -D warnings (and nuwa-ffi with
#     its `stats` feature);
#   - the unit tests of the members that have some, the library crates'
#     doc tests, the cross-crate tests (not compile_fail and await_lint,
#     which start cargo to type-check: that is the same on every target),
#     and nuwa-ffi's unit tests with `stats`;
#   - the real-interpreter suite (nuwa-ffi/tests/real_python) against the
#     architecture's libpython3.14 and libpython3.15 (i686: 3.13 too),
#     NUWA_REQUIRE_PYTHON=1. Under qemu-user, /proc shows the host system
#     calls qemu makes, not the guest's, so the suite tells a thread parked
#     at shutdown by its own pause() (tests/real_python/paused.rs), not by
#     /proc. qemu runs the guest with the x86_64 host's memory order: weak
#     memory ordering (aarch64's) is not exercised.
# CI (make test-linux-arches) runs `test i686 s390x aarch64`.
#
# How: `setup` adds the architectures to the root's dpkg and installs sid's
# rustc, cargo, clippy, each architecture's Rust std (libstd-rust-dev:ARCH),
# cross gcc, libpython3.X-dev:ARCH and qemu-user; Debian cannot install
# python3.X:ARCH beside the root's own, so the interpreter that the suite asks
# for paths is python3.X-minimal:ARCH unpacked (dpkg-deb -x) under
# /opt/nuwa-cross/ARCH in the root. A stamp in the root records what was
# installed. `test` runs in a user namespace of its own (with a PID and a
# mount namespace): there the kernel (6.7 or later) gives a binfmt_misc of
# its own, and qemu is registered in it for the foreign architectures, so
# that a foreign test binary can start foreign programs (the suite re-runs
# itself per scenario) without the host's binfmt_misc changing.
#
# Builds go to target/cross inside the project tree (NUWA_CROSS_TARGET_DIR,
# inside it too, to change). Needs root (as
# scripts/sid-pythons.sh does).
set -euo pipefail

project=$(realpath "$(dirname "$0")/..")
sid="$project/scripts/sid-pythons.sh"
ALL_ARCHES=(i686 aarch64 s390x armv7 ppc64le riscv64)
PYTHON_VERSIONS=(3.14 3.15)
# i686 also gets Debian's 3.13 (native, so cheap): its sysconfig names files
# of CPython's build tree, which the suite must take as "cannot embed
# statically", not as a failure.
pythons_for() { # pythons_for ARCH
    if [[ $1 == i686 ]]; then echo 3.13 "${PYTHON_VERSIONS[@]}"; else echo "${PYTHON_VERSIONS[@]}"; fi
}
# Lock waits: scripts of other jobs may run apt-get in the same root.
APT=(apt-get -o DPkg::Lock::Timeout=900 -o Acquire::Check-Valid-Until=false
     -o APT::Get::List-Cleanup=false)

die() { echo "cross-linux: error: $*" >&2; exit 1; }
say() { echo "cross-linux: $*" >&2; }

# arch -> Debian architecture, Rust target, GNU triple (the cross gcc's
# prefix), qemu name ("" when it runs natively).
arch_info() {
    case $1 in
        i686) echo "i386 i686-unknown-linux-gnu i686-linux-gnu -" ;;
        aarch64) echo "arm64 aarch64-unknown-linux-gnu aarch64-linux-gnu aarch64" ;;
        s390x) echo "s390x s390x-unknown-linux-gnu s390x-linux-gnu s390x" ;;
        armv7) echo "armhf armv7-unknown-linux-gnueabihf arm-linux-gnueabihf arm" ;;
        ppc64le) echo "ppc64el powerpc64le-unknown-linux-gnu powerpc64le-linux-gnu ppc64le" ;;
        riscv64) echo "riscv64 riscv64gc-unknown-linux-gnu riscv64-linux-gnu riscv64" ;;
        *) die "unknown architecture '$1' (one of: ${ALL_ARCHES[*]})" ;;
    esac
}

# The architectures set up by `setup` (all that `check` accepts).
SETUP_ARCHES=(${NUWA_CROSS_ARCHES:-i686 aarch64 s390x})

packages_for() { # packages_for ARCH
    local deb rust gnu qemu v
    read -r deb rust gnu qemu < <(arch_info "$1")
    echo "libstd-rust-dev:$deb gcc-$gnu libc6-dev:$deb"
    for v in $(pythons_for "$1"); do
        echo "libpython$v-dev:$deb"
    done
}

root_dir() { "$sid" --print-root; }

in_root() { (cd "$project" && "$sid" run -- "$@"); }

# ---- setup ----
setup() {
    "$sid" # the root itself (cached)
    local root stamp want arch deb rust gnu qemu v
    root=$(root_dir)
    stamp="$root/.nuwa-cross-linux-complete"
    local pkgs=(rustc cargo rust-clippy qemu-user)
    local debs=()
    for arch in "${SETUP_ARCHES[@]}"; do
        read -r deb rust gnu qemu < <(arch_info "$arch")
        debs+=("$deb")
        # shellcheck disable=SC2207
        pkgs+=($(packages_for "$arch"))
    done
    want="packages=${pkgs[*]}"
    if [[ -f $stamp ]] && grep -qxF "$want" "$stamp"; then
        say "skipping: the cross tools are in the root ($stamp)"
        return
    fi
    local start=$SECONDS
    say "adding architectures ${debs[*]} and installing: ${pkgs[*]}"
    in_root dpkg --add-architecture "${debs[@]}" 2>/dev/null ||
        for deb in "${debs[@]}"; do in_root dpkg --add-architecture "$deb"; done
    in_root "${APT[@]}" update -qq
    in_root env DEBIAN_FRONTEND=noninteractive "${APT[@]}" install -y -qq \
        --no-install-recommends "${pkgs[@]}" >&2
    # The interpreters, unpacked (python3.X:ARCH cannot be installed beside
    # the root's python3.X).
    for arch in "${SETUP_ARCHES[@]}"; do
        read -r deb rust gnu qemu < <(arch_info "$arch")
        for v in $(pythons_for "$arch"); do
            in_root sh -c "set -e; d=\$(mktemp -d); cd \$d
                ${APT[*]} -o APT::Sandbox::User=root download -qq python$v-minimal:$deb
                mkdir -p /opt/nuwa-cross/$arch
                dpkg-deb -x python${v}-minimal_*_$deb.deb /opt/nuwa-cross/$arch
                cd /; rm -rf \$d"
        done
    done
    rm -f "$root"/var/cache/apt/archives/*.deb
    { echo "made=$(date -u +%FT%TZ)"; echo "$want"; } >"$stamp"
    local t=$((SECONDS - start))
    say "installed in $((t / 60))m$((t % 60))s"
}

# ---- test / check (outside: namespaces; inside: the work) ----
run_arches() { # run_arches MODE ARCH...
    local mode=$1
    shift
    [[ $# -gt 0 ]] || die "$mode: which architectures? (${ALL_ARCHES[*]})"
    local arch
    if [[ $mode == run ]]; then
        arch_info "$1" >/dev/null
        [[ ${2:-} == -- ]] && set -- "$1" "${@:3}"
        [[ $# -gt 1 ]] || die "run: no command given"
    else
        for arch in "$@"; do arch_info "$arch" >/dev/null; done
    fi
    [[ -f $(root_dir)/.nuwa-cross-linux-complete ]] ||
        die "the cross tools are not in the sid root: run scripts/cross-linux.sh setup"
    # A user namespace of our own (root in it is root outside), with its own
    # PID namespace (for a /proc of its own) and mount namespace: whatever
    # is mounted there goes when the last process ends.
    unshare --user --map-root-user --mount --propagation private --pid --fork --kill-child -- \
        bash "$project/scripts/cross-linux.sh" _enter "$mode" "$@"
}

# In the namespaces: the root's mounts, as `scripts/sid-pythons.sh run` does
# them (but /dev recursively: a user namespace may not bind it without the
# mounts under it), then chroot.
enter_root() {
    local root
    root=$(root_dir)
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mkdir -p "$root$project"
    mount --bind "$project" "$root$project"
    cp -fL /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
    local ca=${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}
    [[ -f $ca ]] && { mkdir -p "$root$(dirname "$ca")"; cp -fL "$ca" "$root$ca"; }
    exec env -u VIRTUAL_ENV -u PYTHONPATH -u PYTHONHOME -u LD_LIBRARY_PATH -u CARGO \
        -u CARGO_TARGET_DIR -u RUSTFLAGS -u RUSTUP_TOOLCHAIN -u CARGO_HOME -u RUSTUP_HOME \
        HOME=/root PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin \
        chroot "$root" /bin/bash -c 'cd "$1" && shift && exec bash scripts/cross-linux.sh _in-root "$@"' \
        sh "$project" "$@"
}

# Registers qemu for an architecture in this user namespace's binfmt_misc,
# with qemu-user's own entry (F: the interpreter is opened now, in the root).
register_qemu() { # register_qemu QEMU-NAME
    local conf=/usr/share/qemu/binfmt.d/qemu-$1.conf
    [[ -f $conf ]] || die "no $conf in the root (qemu-user)"
    [[ -e $BINFMT/qemu-$1 ]] || grep -v '^#' "$conf" | head -n 1 >"$BINFMT/register"
}

# Inside the root.
in_root_main() {
    local mode=$1
    shift
    export CARGO_TARGET_DIR=${NUWA_CROSS_TARGET_DIR:-$project/target/cross}
    export CARGO_TERM_COLOR=never
    local arch deb rust gnu qemu
    local arches=("$@")
    [[ $mode == run ]] && arches=("$1")
    if [[ $mode != check ]]; then
        BINFMT=$(mktemp -d)
        [[ $(uname -m) == x86_64 ]] || die "runs on x86_64 hosts only"
        mount -t binfmt_misc binfmt_misc "$BINFMT" ||
            die "cannot mount a binfmt_misc of our own (Linux 6.7 or later needed)"
        for arch in "${arches[@]}"; do
            read -r deb rust gnu qemu < <(arch_info "$arch")
            if [[ $qemu != - ]]; then register_qemu "$qemu"; fi
        done
    fi
    if [[ $mode == run ]]; then
        arch_env "$1"
        shift
        exec "$@"
    fi
    local failed=() status
    for arch in "$@"; do
        # Not in a condition, where bash would ignore the set -e inside.
        set +e
        one_arch "$mode" "$arch"
        status=$?
        set -e
        [[ $status -eq 0 ]] || failed+=("$arch")
    done
    [[ ${#failed[@]} -eq 0 ]] || die "$mode failed for: ${failed[*]}"
    say "$mode passed for: $*"
}

# The environment of a build for ARCH (cargo, cc, pyo3, the suite's hosts).
arch_env() { # arch_env ARCH
    local arch=$1 deb rust gnu qemu
    read -r deb rust gnu qemu < <(arch_info "$arch")
    local upper=${rust^^}
    upper=${upper//-/_}
    export "CARGO_TARGET_${upper}_LINKER=$gnu-gcc"
    export "CC_${rust//-/_}=$gnu-gcc"
    export CARGO_BUILD_TARGET=$rust
    # The C compiler the real-interpreter suite links its hosts with.
    export CC=$gnu-gcc
    # pyo3 (the examples) when cross-compiling: the target's sysconfig data.
    export PYO3_CROSS_LIB_DIR=/usr/lib/python${PYTHON_VERSIONS[0]}
    local multiarch=$gnu
    [[ $arch == i686 ]] && multiarch=i386-linux-gnu
    export _PYTHON_SYSCONFIGDATA_NAME=_sysconfigdata__linux_$multiarch
    export PYO3_PYTHON=/usr/bin/python${PYTHON_VERSIONS[0]}
}

one_arch() { # one_arch MODE ARCH
    local mode=$1 arch=$2 deb rust gnu qemu
    read -r deb rust gnu qemu < <(arch_info "$arch")
    local start=$SECONDS
    arch_env "$arch"
    step() { say "[$arch $(((SECONDS - start) / 60))m$(((SECONDS - start) % 60))s] $*"; }
    (
        set -e
        step "cargo clippy --target $rust -D warnings"
        cargo clippy --quiet --keep-going --workspace --all-targets -- -D warnings
        cargo clippy --quiet -p nuwa-ffi --all-targets --features stats -- -D warnings
        [[ $mode == check ]] && exit 0
        step "unit, doc and cross-crate tests"
        # The members with unit tests (the others, pyo3's among them, are
        # compiled by clippy above: building them again for nothing would
        # cost minutes per architecture).
        cargo test --quiet -p nuwa-ffi -p nuwa-tests -p pyo3-extension-core \
            -p nuwa-c-abi-host --lib --bins
        cargo test --quiet --doc -p nuwa-core -p nuwa-std -p nuwa-ffi
        cargo test --quiet -p nuwa-tests --test exit_paths --test std_adapter \
            --test strict_and_with_gil
        cargo test --quiet -p nuwa-ffi --features stats --lib
        [[ $mode == unit ]] && exit 0
        local v py
        for v in $(pythons_for "$arch"); do
            py=/opt/nuwa-cross/$arch/usr/bin/python$v
            if [[ ! -x $py ]]; then
                step "no python$v for $deb: skipped"
                continue
            fi
            step "real-interpreter suite, CPython $v ($deb)"
            NUWA_TEST_PYTHON=$py NUWA_REQUIRE_PYTHON=1 \
                cargo test --quiet -p nuwa-ffi --test real_python
        done
    )
    local status=$?
    step "$mode $([[ $status -eq 0 ]] && echo passed || echo FAILED)"
    return "$status"
}

case ${1:-setup} in
    setup) setup ;;
    test | unit | check | run) run_arches "$@" ;;
    _enter) shift; enter_root "$@" ;;
    _in-root) shift; in_root_main "$@" ;;
    -h | --help) sed -n 's/^#   scripts/  scripts/p' "$0" ;;
    *) die "unknown command '$1' (setup, test, unit, check, run)" ;;
esac
