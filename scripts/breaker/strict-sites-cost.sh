#!/bin/sh
# Breaker reproducer (issue 22 review, not run by default; NUWA_BREAKER=1):
# with the `stats` feature, the strict form (`nuwa_ffi::nogil`) looks its
# call site up in a singly linked list, newest first, comparing each entry's
# key and then dereferencing its site to compare file/line/column. So every
# strict block pays a walk of the sites registered after its own: the first
# (usually hottest) call site pays for all the others.
#
# Prints the cost per strict block (no interpreter: the lookup dominates)
# of the oldest and newest call site with 100 and 1000 strict call sites.
# Usage: NUWA_BREAKER=1 scripts/breaker/strict-sites-cost.sh [repo-dir]
set -eu
[ "${NUWA_BREAKER:-}" = 1 ] || { echo "set NUWA_BREAKER=1 to run"; exit 0; }
repo=$(cd "${1:-$(dirname "$0")/../..}" && pwd)
dir=$(mktemp -d /tmp/nuwa-strict-sites.XXXXXX)
mkdir -p "$dir/src"
cat > "$dir/Cargo.toml" <<TOML
[package]
name = "strict-sites"
version = "0.0.0"
edition = "2024"
[dependencies]
nuwa-ffi = { path = "$repo/nuwa-ffi", features = ["stats"] }
[workspace]
TOML
python3 - "$dir/src/main.rs" <<'PY'
import sys
n = 1000
out = ["use std::time::Instant;"]
for i in range(n):
    out.append(f"#[inline(never)] fn site{i}() -> u64 {{ nuwa_ffi::nogil(|_| {i}u64) }}")
out.append("fn per_block(f: fn() -> u64) -> std::time::Duration {")
out.append("    let t = Instant::now(); let mut s = 0; for _ in 0..200_000 { s += std::hint::black_box(f()); }")
out.append("    std::hint::black_box(s); t.elapsed() / 200_000 }")
out.append("fn main() {")
out.append("    site0();")
out.append("    println!(\"1 site:     oldest {:?}\", per_block(site0));")
out.append("    " + " ".join(f"site{i}();" for i in range(1, 100)))
out.append("    println!(\"100 sites:  oldest {:?}, newest {:?}\", per_block(site0), per_block(site99));")
out.append("    " + " ".join(f"site{i}();" for i in range(100, n)))
out.append(f"    println!(\"{n} sites: oldest {{:?}}, newest {{:?}}\", per_block(site0), per_block(site{n-1}));")
out.append("}")
open(sys.argv[1], "w").write("\n".join(out) + "\n")
PY
cd "$dir" && CARGO_TARGET_DIR="$dir/target" cargo run --release -q
rm -rf "$dir"
