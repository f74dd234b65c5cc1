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
