#!/usr/bin/env bash
# The bytes nuwa adds to a stripped extension, held to a budget: builds the
# two size contenders of bench/size (one function, one block, written with
# `nogil!` or with the raw pair), strips them as `make bench` does, prints
# both sizes and fails if nuwa adds more than the budget. A size is
# deterministic for one toolchain and target: this is not a timing test.
#
# The budget is what nuwa added on 2026-12-07 (12,216 B with rustc 1.95;
# 12,752 B on 2026-12-08) with about 1 KB of room, for another rustc's layout (the fresh root's is Debian's),
# so that growth fails here and is looked at; the goal of issue 24 is 4,096 B (see
# BENCHMARKS.md, section 5, for where the rest goes). NUWA_SIZE_BUDGET
# overrides it.
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${NUWA_SIZE_BUDGET:-13312}
# The toolchain the budget was measured with: another lays code out (and
# links its std) differently (Debian's rustc 1.97 gives the raw contender
# 14 KB where rustup's gives 316 KB), so elsewhere the sizes are printed,
# not held to the budget, unless NUWA_SIZE_BUDGET is set.
measured_with="rustc 1.95."
cargo build --release --quiet -p size-nuwa -p size-raw
target=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for kind in nuwa raw; do
    strip -o "$tmp/$kind.so" "$target/release/libsize_$kind.so"
done
nuwa=$(wc -c <"$tmp/nuwa.so")
raw=$(wc -c <"$tmp/raw.so")
added=$((nuwa - raw))
echo "size: stripped minimal extension with nuwa $nuwa B, with the raw pair $raw B:" \
    "nuwa adds $added B (budget $budget B)"
rustc_version=$(rustc --version)
if [ -z "${NUWA_SIZE_BUDGET:-}" ] && [[ $rustc_version != "$measured_with"* ]]; then
    echo "size: not held to the budget: it was measured with ${measured_with}x, this is $rustc_version"
    exit 0
fi
if [ "$added" -gt "$budget" ]; then
    echo "nuwa adds $added B, over its budget of $budget B" >&2
    exit 1
fi
