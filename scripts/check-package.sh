#!/usr/bin/env bash
# The three library crates as crates.io would get them: `cargo package`
# builds each from its packaged sources (with the others from a local
# registry), and each package must hold only what a user builds or reads:
# sources, the build script, README, CHANGELOG and both license texts.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo="${CARGO:-cargo}"
crates=(nuwa-core nuwa-std nuwa-ffi)
args=()
for c in "${crates[@]}"; do args+=(-p "$c"); done
# cargo verifies each package against the others through a temporary local
# registry, and unpacks them under $CARGO_HOME/registry/src once per registry
# path: a second run at the same path would build against the first run's
# sources. Those unpacked copies (only nuwa's, and cargo unpacks any again
# from its cache when needed) go first.
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/nuwa-{core,std,ffi}-[0-9]*
# And cargo takes a registry crate's build from an earlier run as it is (a
# registry's sources are not expected to change): a target directory of
# this script's own, emptied each run, so that each package is built from
# what it holds.
export CARGO_TARGET_DIR="$PWD/target/package-check"
rm -rf "$CARGO_TARGET_DIR"
# --allow-dirty: CI's clone is clean, but a developer's need not be; the
# list check below still refuses any file that has no place in a package.
"$cargo" package --quiet --allow-dirty "${args[@]}"
dir=$("$cargo" metadata --format-version 1 --no-deps |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/package
version=$("$cargo" metadata --format-version 1 --no-deps |
          python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="nuwa-core"))')
status=0
for c in "${crates[@]}"; do
    files=$("$cargo" package --quiet --allow-dirty --list -p "$c")
    for need in README.md CHANGELOG.md LICENSE-MIT LICENSE-APACHE Cargo.toml src/lib.rs; do
        grep -qx "$need" <<<"$files" || { echo "check-package: $c lacks $need" >&2; status=1; }
    done
    extra=$(grep -vxE '\.cargo_vcs_info\.json|Cargo\.toml(\.orig)?|Cargo\.lock|README\.md|CHANGELOG\.md|LICENSE-(MIT|APACHE)|build\.rs|src/.*\.(rs|c)' <<<"$files" || true)
    if [ -n "$extra" ]; then
        echo "check-package: $c would ship files a user does not need:" >&2
        echo "$extra" >&2
        status=1
    fi
    crate="$dir/$c-$version.crate"
    printf 'check-package: %-10s %3d files, %6d bytes\n' "$c" "$(wc -l <<<"$files")" "$(stat -c %s "$crate")"
done
exit $status
