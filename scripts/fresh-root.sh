#!/usr/bin/env bash
# Checks the README's install line the way a newcomer would meet it: a new
# minimal Debian sid root (`debootstrap --variant=minbase sid`) gets only the
# packages that line names, installed with apt-get --no-install-recommends;
# a clean copy of the committed tree (`git archive HEAD`: no target/, no
# .venv, no uncommitted change) goes into a normal user's home; that user
# runs `make demo`, then `make test` with NUWA_REQUIRE_PYTHON=1 (the line
# installs a shared libpython, so the real-interpreter suite must run),
# with an empty environment (no PATH of the host, no PIP_* or CA settings).
#
# The packages are read from HEAD's README: every `sudo apt install ...`
# (or apt-get) in its text before the first section heading. So the root
# has what that line installs and nothing else besides minbase.
#
# Usage (as root: debootstrap, mount and chroot):
#   scripts/fresh-root.sh          make a new root, run make demo and make test
#   scripts/fresh-root.sh --keep   the same, and keep the root afterwards
#
# A new root each run: the one a run leaves behind (always after a failure,
# to look into) is removed by the next run first. The only cache is the
# Debian packages (.deb files), under ${NUWA_PYTHONS:-~/.cache/nuwa-pythons}:
# debootstrap (--cache-dir) and apt-get (the root's /var/cache/apt/archives,
# bind-mounted there) both check each cached file against the checksums of
# the index they have just downloaded and signed-checked, so a cached file
# is the very file the mirror would send. It saves most of the download
# (the toolchain is about 0.3 GB); files no longer installed are removed
# after each run. Nothing of cargo or pip is cached: the crates and the
# Python tools come from crates.io and PyPI each run, which is what proves
# that the line's packages are enough to fetch them (CA certificates).
#
# Layout under ${NUWA_PYTHONS:-$HOME/.cache/nuwa-pythons}:
#   fresh/          the root of the current (or last failed) run
#   fresh-debs/     the .deb cache
#   fresh.log       the log of the last run
#   fresh.lock      one run at a time (the sid root of sid-pythons.sh has
#                   its own lock and is never touched)
#
# Everything runs in mount and PID namespaces of its own: the mounts inside
# the root are never seen by the host and vanish, with every process the run
# started, when the script ends or is killed.
set -euo pipefail

SUITE=sid
MIRROR=${NUWA_SID_MIRROR:-http://deb.debian.org/debian}
NEWCOMER=newcomer
NEWCOMER_ID=1000

base=$(realpath -m "${NUWA_PYTHONS:-$HOME/.cache/nuwa-pythons}")
dir="$base/fresh"
debs="$base/fresh-debs"
log="$base/fresh.log"
project=$(realpath "$(dirname "$0")/..")
home="/home/$NEWCOMER"
chroot=$(command -v chroot || true)

die() { echo "fresh-root: error: $*" >&2; exit 1; }
say() { echo "fresh-root: $*" >&2; }

usage() { sed -n 's/^#   scripts/  scripts/p' "$0"; }

# The packages of the README's install line(s): the words after
# `sudo apt install` / `sudo apt-get install` in code spans before the first
# `## ` heading, in the README of commit $1 (the tree the root gets).
readme_packages() {
    local spans
    spans=$(git -C "$project" show "$1:README.md" | sed '/^## /,$d' | tr '\n' ' ' |
        grep -oE '`sudo apt(-get)? install [^`]*`' || true)
    [[ -n $spans ]] || die "no \`sudo apt install ...\` in README.md before its first section"
    local word words=()
    for word in $(sed -E 's/`sudo apt(-get)? install //; s/`//' <<<"$spans"); do
        [[ $word =~ ^[a-z0-9][a-z0-9.+-]*$ ]] ||
            die "README.md's install line has '$word', which is not a package name"
        words+=("$word")
    done
    echo "${words[*]}"
}

mounts_under_root() {
    awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts
}

phase_start=$SECONDS
phase() {
    local t=$((SECONDS - phase_start))
    say "$(printf '[%dm%02ds] %s' $((t / 60)) $((t % 60)) "$*")"
}

# Runs a command in the root as root, with a clean environment.
in_root() {
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$chroot" "$dir" "$@"
}

# as_newcomer [VAR=VALUE...] CMD...: runs CMD in the root as the newcomer,
# in the project copy, with what a login would give and nothing else.
as_newcomer() {
    env -i HOME="$home" USER="$NEWCOMER" LOGNAME="$NEWCOMER" SHELL=/bin/sh \
        PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 \
        "$chroot" --userspec="$NEWCOMER_ID:$NEWCOMER_ID" --groups="$NEWCOMER_ID" "$dir" \
        /usr/bin/env -C "$home/nuwa" "$@"
}

# Inside the namespaces, with the lock held.
run() {
    local keep=$1 packages rev
    # One commit for both the package list and the copy.
    rev=$(git -C "$project" rev-parse --verify HEAD)
    packages=$(readme_packages "$rev")
    say "the README's packages: $packages"
    if [[ -n $(git -C "$project" status --porcelain --untracked-files=no) ]]; then
        say "note: the worktree has uncommitted changes; the root gets HEAD without them"
    fi

    if [[ -e $dir ]]; then
        [[ -z $(mounts_under_root) ]] || die "$dir has mounts under it; unmount them, then re-run"
        say "removing the root of the last run"
        rm -rf --one-file-system "$dir"
    fi
    mkdir -p "$dir" "$debs"

    phase "debootstrap --variant=minbase $SUITE (log: $log)"
    debootstrap --variant=minbase --cache-dir="$debs" "$SUITE" "$dir" "$MIRROR" >>"$log" 2>&1 ||
        { tail -n 30 "$log" >&2; die "debootstrap failed (log: $log)"; }

    mount -t proc proc "$dir/proc"
    mount --bind /dev "$dir/dev"
    mount --bind /dev/shm "$dir/dev/shm"
    mount --bind "$debs" "$dir/var/cache/apt/archives"
    cp -fL /etc/resolv.conf "$dir/etc/resolv.conf"

    phase "apt-get install --no-install-recommends $packages"
    local apt=(apt-get -o Acquire::Check-Valid-Until=false -o APT::Sandbox::User=root)
    # shellcheck disable=SC2086  # the package list is split on purpose
    { in_root "${apt[@]}" update -q && in_root "${apt[@]}" install -y -q --no-install-recommends $packages; } \
        >>"$log" 2>&1 || { tail -n 30 "$log" >&2; die "apt-get failed (log: $log)"; }
    prune_debs
    add_local_cas
    umount "$dir/var/cache/apt/archives"
    in_root sh -c 'rustc --version; cargo --version; python3 --version; cc --version | head -n 1; make --version | head -n 1' |
        tee -a "$log" >&2

    phase "a clean copy of HEAD (${rev:0:12}) for user $NEWCOMER"
    echo "$NEWCOMER:x:$NEWCOMER_ID:$NEWCOMER_ID::$home:/bin/sh" >>"$dir/etc/passwd"
    echo "$NEWCOMER:x:$NEWCOMER_ID:" >>"$dir/etc/group"
    mkdir -p "$dir$home/nuwa"
    git -C "$project" archive --format=tar "$rev" | tar -x -C "$dir$home/nuwa"
    chown -R "$NEWCOMER_ID:$NEWCOMER_ID" "$dir$home"

    phase "make demo"
    as_newcomer make demo 2>&1 | tee -a "$log"
    phase "make test"
    as_newcomer NUWA_REQUIRE_PYTHON=1 make test 2>&1 | tee -a "$log"
    phase "make demo and make test passed"

    umount "$dir/dev/shm" "$dir/dev" "$dir/proc"
    if [[ $keep == 1 ]]; then
        say "the root is kept at $dir"
    else
        rm -rf --one-file-system "$dir"
    fi
}

# The host's local certificate authorities (/usr/local/share/ca-certificates,
# where Debian keeps those an administrator adds, e.g. for a proxy that
# inspects TLS) are added to the root's store the same way. Without them,
# behind such a proxy, pip and cargo could not reach PyPI and crates.io; any
# machine on that network needs them too. The root's store itself comes from
# its own ca-certificates package: no bundle of the host is copied, and no
# variable points pip or cargo at one.
add_local_cas() {
    local src=/usr/local/share/ca-certificates
    [[ -n $(find "$src" -name '*.crt' 2>/dev/null | head -n 1) ]] || return 0
    if [[ ! -x $dir/usr/sbin/update-ca-certificates ]]; then
        say "note: the host has local CAs in $src but the root has no ca-certificates to add them to"
        return 0
    fi
    say "adding the host's local CAs: $(cd "$src" && find . -name '*.crt' | sed 's|^\./||' | tr '\n' ' ')"
    cp -a "$src/." "$dir$src/"
    in_root update-ca-certificates >>"$log" 2>&1
}

# Keeps in the .deb cache only the files of what the root has installed now
# (named as apt and debootstrap name them: NAME_VERSION_ARCH.deb, with an
# epoch's ':' as %3a).
prune_debs() {
    local keep
    keep=$(in_root dpkg-query -W -f '${Package}_${Version}_${Architecture}.deb\n' | sed 's/:/%3a/g')
    local f
    for f in "$debs"/*.deb; do
        [[ -e $f ]] || continue
        grep -qxF "$(basename "$f")" <<<"$keep" || rm -f "$f"
    done
}

case ${1:-} in
    -h|--help) usage; exit 0 ;;
    ""|--keep) ;;
    *) usage >&2; die "unknown argument '$1'" ;;
esac
[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, mount and chroot)"
for tool in debootstrap chroot unshare mount git flock; do
    command -v "$tool" >/dev/null ||
        die "$tool not found (debootstrap: apt-get install debootstrap, or run scripts/sid-pythons.sh once)"
done

if [[ -z ${NUWA_FRESH_INSIDE:-} ]]; then
    mkdir -p "$base"
    exec 9>"$base/fresh.lock"
    flock -n 9 || { say "waiting for another run (lock: $base/fresh.lock)"; flock 9; }
    : >"$log"
    # In the background, so that a signal to this script runs its trap at
    # once. unshare itself blocks INT and TERM while it waits, so the trap
    # sends it SIGKILL: --kill-child then kills the inner script, the
    # namespace's PID 1, and with it the kernel ends every process of the
    # namespace (debootstrap, dpkg, cargo, the tests) and drops its mounts.
    NUWA_FRESH_INSIDE=1 unshare --mount --propagation private --pid --fork --kill-child \
        -- "$0" "$@" &
    child=$!
    trap 'kill -KILL "$child" 2>/dev/null; wait "$child"; exit 130' INT
    trap 'kill -KILL "$child" 2>/dev/null; wait "$child"; exit 143' TERM
    status=0
    wait "$child" || status=$?
    exit "$status"
fi
trap 'status=$?; [[ $status -eq 0 ]] || say "failed; the root is left at $dir (log: $log)"' EXIT
run "$([[ ${1:-} == --keep ]] && echo 1 || echo 0)"
