#!/usr/bin/env bash
# CPython 3.14 and 3.15, default and debug builds, for nuwa's tests, from
# Debian sid's binary packages, in a minimal sid root run with chroot:
#
#   /usr/bin/python3.14   /usr/bin/python3.14d   (python3.14, python3.14-dbg)
#   /usr/bin/python3.15   /usr/bin/python3.15d   (python3.15, python3.15-dbg)
#
# Their sources cannot be fetched here, and the packages need a newer glibc
# (2.38 or later) than Debian 12's 2.36, so they cannot run on the host:
# `debootstrap --variant=minbase sid` makes a root with them, their -dev,
# -venv and libpython*-dbg packages, and gcc (the C-ABI suite compiles a C
# program). Programs built on the host (the real-interpreter test binary, the
# C-ABI library, the abi3 wheel) run in the root as they are: they need only
# the older glibc.
#
# Usage:
#   scripts/sid-pythons.sh                 make the root (once: cached, reused)
#   scripts/sid-pythons.sh run [--] CMD... run CMD in the root, in the current
#                                          directory (which must be inside the
#                                          project tree)
#   scripts/sid-pythons.sh --print-root
#
# `run` mounts /proc, /dev, /dev/shm and the project tree (at the same path)
# into the root, in a mount namespace of its own when `unshare` allows it (so
# the host never sees them, and the kernel drops them even if this script is
# killed), and unmounts them when CMD ends or fails (trap). It copies the
# host's /etc/resolv.conf and CA bundle (the files named by PIP_CERT,
# SSL_CERT_FILE, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, or
# /etc/ssl/certs/ca-certificates.crt) into the root, so that pip inside works
# as on the host; PIP_* and the rest of the environment pass through. The
# Rust toolchain is not needed inside.
#
# Layout under ${NUWA_PYTHONS:-$HOME/.cache/nuwa-pythons}:
#   sid/                        the root
#   sid/.nuwa-root-complete     stamp: written only after the smoke test
#   sid.log                     the log of the last setup
#   sid.lock                    one setup at a time
#
# The host's apt configuration is left untouched: debootstrap gets the mirror
# on its command line (NUWA_SID_MIRROR, default http://deb.debian.org/debian).
# debootstrap itself is installed with apt-get if missing (as root).
set -euo pipefail

ROOT_NAME=sid
SUITE=sid
MIRROR=${NUWA_SID_MIRROR:-http://deb.debian.org/debian}
PYTHONS=(python3.14 python3.14d python3.15 python3.15d)
PACKAGES=(python3.14 python3.14-dev python3.14-venv python3.14-dbg libpython3.14-dbg
          python3.15 python3.15-dev python3.15-venv python3.15-dbg libpython3.15-dbg
          gcc libc6-dev valgrind)
CA_VARS=(PIP_CERT SSL_CERT_FILE REQUESTS_CA_BUNDLE CURL_CA_BUNDLE)

base=$(realpath -m "${NUWA_PYTHONS:-$HOME/.cache/nuwa-pythons}")
dir="$base/$ROOT_NAME"
stamp="$dir/.nuwa-root-complete"
project=$(realpath "$(dirname "$0")/..")

die() { echo "sid-pythons: error: $*" >&2; exit 1; }
say() { echo "sid-pythons: $*" >&2; }

usage() {
    sed -n 's/^#   scripts/  scripts/p' "$0"
    echo "  root: $dir (override the parent with NUWA_PYTHONS)"
}

# The mount points under the root that are mounted now (in this namespace).
mounts_under_root() {
    awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts
}

# ---- run: mounts, chroot, and their undoing ----
mounted=()
unmount_all() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" ||
            echo "sid-pythons: warning: could not unmount ${mounted[i]}" >&2
    done
    mounted=()
    local left
    left=$(mounts_under_root)
    [[ -z $left ]] || echo "sid-pythons: warning: still mounted: $left" >&2
}

mount_in_root() { # mount_in_root TARGET MOUNT-ARGS...
    local target="$dir$1"
    shift
    mkdir -p "$target"
    mount "$@" "$target"
    mounted+=("$target")
}

# Copies a host file to the same path in the root (resolv.conf, CA bundles).
copy_in() {
    local file=$1
    [[ -f $file ]] || return 0
    mkdir -p "$(dirname "$dir$file")"
    cp -fL "$file" "$dir$file"
}

run_in_root() {
    [[ $# -gt 0 ]] || die "run: no command given"
    # The smoke test runs before the stamp exists (NUWA_SID_SETUP=1).
    [[ -f $stamp || ${NUWA_SID_SETUP:-} == 1 ]] ||
        die "no sid root at $dir: run scripts/sid-pythons.sh (or make pythons) first"
    local cwd
    cwd=$(pwd -P)
    [[ $cwd == "$project" || $cwd == "$project"/* ]] ||
        die "run: the current directory ($cwd) must be inside the project tree ($project)"

    # A mount namespace of our own: the mounts below are invisible to the
    # host and die with this process whatever happens to it.
    if [[ -z ${NUWA_SID_NAMESPACE:-} ]] && unshare --mount --propagation private true 2>/dev/null; then
        NUWA_SID_NAMESPACE=1 exec unshare --mount --propagation private -- "$0" run -- "$@"
    fi

    trap unmount_all EXIT
    mount_in_root /proc -t proc proc
    mount_in_root /dev --bind /dev
    mount_in_root /dev/shm --bind /dev/shm
    mount_in_root "$project" --bind "$project"

    copy_in /etc/resolv.conf
    local var copied=0
    for var in "${CA_VARS[@]}"; do
        if [[ -n ${!var:-} && -f ${!var} ]]; then
            copy_in "${!var}"
            copied=1
        fi
    done
    [[ $copied -eq 1 ]] || copy_in /etc/ssl/certs/ca-certificates.crt

    # The host's PATH names pyenv and cargo folders that the root has not;
    # a host venv or PYTHONPATH must not leak in.
    # In the background, so that a signal to this script runs its trap at
    # once (bash runs traps only between commands): the trap passes the
    # signal on, waits for CMD, and the EXIT trap unmounts.
    local status=0 child
    # shellcheck disable=SC2016  # "$1" and "$@" are the inner shell's
    env -u VIRTUAL_ENV -u PYTHONPATH -u PYTHONHOME -u PYTHONSTARTUP -u LD_LIBRARY_PATH \
        PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin \
        chroot "$dir" /bin/sh -c 'cd "$1" && shift && exec "$@"' sh "$cwd" "$@" <&0 &
    child=$!
    trap 'kill -INT "$child" 2>/dev/null; wait "$child"; exit 130' INT
    trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 143' TERM
    wait "$child" || status=$?
    trap - INT TERM
    unmount_all
    return "$status"
}

# ---- setup ----

# Installs debootstrap with apt-get (as root) if it is missing.
check_tools() {
    local tool
    for tool in chroot unshare mount; do
        command -v "$tool" >/dev/null || die "$tool not found (coreutils, util-linux, mount)"
    done
    command -v debootstrap >/dev/null && return
    [[ $(id -u) -eq 0 ]] || die "debootstrap is missing; install it with: sudo apt-get install debootstrap"
    command -v apt-get >/dev/null || die "debootstrap is missing and there is no apt-get to install it"
    say "installing debootstrap with apt-get"
    if ! DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends debootstrap >>"$log" 2>&1; then
        apt-get -o DPkg::Lock::Timeout=600 update >>"$log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends debootstrap >>"$log" 2>&1 ||
            { tail -n 20 "$log" >&2; die "could not install debootstrap (log: $log)"; }
    fi
}

# Each interpreter starts, has the modules the tests use, is the build its
# name says, and has its shared libpython (the real-interpreter tests load
# it); gcc compiles.
SMOKE='
import sys, sysconfig, os, ssl, ctypes, venv, ensurepip, zlib, bz2, lzma
debug = hasattr(sys, "gettotalrefcount")
assert debug == sys.argv[1].endswith("d"), f"{sys.argv[1]}: debug={debug}"
assert not sysconfig.get_config_var("Py_GIL_DISABLED"), "free-threaded"
lib = os.path.join(sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME"))
assert os.path.isfile(lib), f"no {lib}"
print(sys.argv[1], sys.version.split()[0], "debug" if debug else "default", lib)
'
smoke_test() {
    local py
    for py in "${PYTHONS[@]}"; do
        (cd "$project" && "$0" run -- "/usr/bin/$py" -c "$SMOKE" "$py") || return 1
    done
    (cd "$project" && "$0" run -- cc --version) | head -n 1
}

# The package list a root was made (or last completed) with, from its stamp.
stamp_packages() { sed -n 's/^packages=//p' "$stamp" 2>/dev/null; }

# A root made with an older PACKAGES list gets the packages it lacks, with
# apt-get inside the root (the mirror's index may be older than the clock).
add_missing_packages() {
    local want
    want=$(IFS=' '; echo "${PACKAGES[*]}")
    [[ $(stamp_packages) == "$want" ]] && return
    say "adding packages to the root: ${PACKAGES[*]}"
    local apt=(apt-get -o Acquire::Check-Valid-Until=false -o APT::Get::List-Cleanup=false)
    (cd "$project" && "$0" run -- "${apt[@]}" update -qq) >&2 &&
        (cd "$project" && "$0" run -- env DEBIAN_FRONTEND=noninteractive \
            "${apt[@]}" install -y -qq --no-install-recommends "${PACKAGES[@]}") >&2 ||
        die "could not add packages to the root; remove $dir and re-run to make it again"
    rm -f "$dir"/var/cache/apt/archives/*.deb
    sed -i '/^packages=/d' "$stamp"
    echo "packages=$want" >>"$stamp"
}

setup() {
    if [[ -f $stamp ]]; then
        add_missing_packages
        say "skipping: the root is ready ($stamp exists)"
        return
    fi
    mkdir -p "$base"
    log="$base/$ROOT_NAME.log"
    exec 9>"$base/$ROOT_NAME.lock"
    flock 9
    [[ -f $stamp ]] && { say "another run made the root meanwhile"; return; }
    : >"$log"
    check_tools
    local start=$SECONDS left
    # A root without its stamp is half made: start again, but never remove
    # a tree that has something mounted in it (it could be the host's).
    if [[ -e $dir ]]; then
        left=$(mounts_under_root)
        [[ -z $left ]] || die "$dir has mounts under it ($left); unmount them, then re-run"
        say "removing the unfinished root $dir"
        rm -rf --one-file-system "$dir"
    fi
    say "debootstrap $SUITE into $dir from $MIRROR (log: $log)"
    local include
    include=$(IFS=,; echo "${PACKAGES[*]}")
    # In mount and PID namespaces of its own: the /proc and /sys it mounts
    # inside the root are gone when it ends, even half way, and if this
    # script is stopped, unshare's --kill-child ends debootstrap and every
    # process it started (dpkg, ...). In the background, so that the trap
    # runs at once.
    local status=0 child
    unshare --mount --propagation private --pid --fork --kill-child -- \
        debootstrap --variant=minbase --include="$include" "$SUITE" "$dir" "$MIRROR" >>"$log" 2>&1 &
    child=$!
    trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 130' INT
    trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 143' TERM
    wait "$child" || status=$?
    trap - INT TERM
    if [[ $status -ne 0 ]]; then
        tail -n 30 "$log" >&2
        die "debootstrap failed (log: $log); re-run to start again"
    fi
    # The downloaded packages are installed; their files are 0.3 GB.
    rm -f "$dir"/var/cache/apt/archives/*.deb
    say "smoke test"
    if ! NUWA_SID_SETUP=1 smoke_test >>"$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "the smoke test failed (log: $log)"
    fi
    {
        echo "suite=$SUITE"
        echo "mirror=$MIRROR"
        echo "made=$(date -u +%FT%TZ)"
        echo "packages=$(IFS=' '; echo "${PACKAGES[*]}")"
        grep -E '^python3\.1[45]d? ' "$log"
    } >"$stamp"
    local t=$((SECONDS - start))
    say "made the root in $((t / 60))m$((t % 60))s"
}

# ---- command line ----
case ${1:-} in
    -h|--help|--print-root) ;;
    *) [[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, mount and chroot)" ;;
esac
case ${1:-} in
    run)
        shift
        [[ ${1:-} == -- ]] && shift
        run_in_root "$@"
        ;;
    --print-root) echo "$dir" ;;
    -h|--help) usage ;;
    "")
        unset PYTHONPATH PYTHONHOME PYTHONSTARTUP
        setup
        cat "$stamp"
        ;;
    *) usage >&2; die "unknown argument '$1'" ;;
esac
