//! Misuses of nuwa that must not compile, and documented limits that must,
//! checked with `trybuild`.
//!
//! Each file in `tests/ui/` is one misuse; its `.stderr` pins the error, so a
//! change that lets the misuse compile, or that makes it fail for another
//! reason, fails this test. Each file in `tests/ui-pass/` compiles on
//! purpose (a limit the docs state). Regenerate the `.stderr` files with
//! `TRYBUILD=overwrite cargo test -p nuwa-tests --test compile_fail`, then
//! read them.
//!
//! A `.stderr` that points into the standard library says `$RUST/...`:
//! trybuild writes that for the paths rustup's toolchains report
//! (`/rustc/HASH/library/...`). A distribution's own rustc may report
//! another (Debian's: `/usr/src/rustc-VERSION/library/...`, with line
//! numbers), which trybuild leaves as it is, so those cases cannot match
//! there. This test asks rustc first; on such a toolchain it leaves those
//! cases out, names them in `compile_fail.skipped` in the target's tmp
//! folder, and `make test` prints that file last. The other cases still run.

use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn ui() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mark = Path::new(env!("CARGO_TARGET_TMPDIR")).join("compile_fail.skipped");
    let _ = std::fs::remove_file(&mark);
    let std_path = std_path_left_as_is();

    let mut misuses: Vec<PathBuf> = std::fs::read_dir(manifest.join("ui"))
        .expect("tests/ui")
        .map(|entry| entry.expect("tests/ui entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .collect();
    misuses.sort();
    let total = misuses.len();
    let mut skipped = Vec::new();
    let cases = trybuild::TestCases::new();
    for case in misuses {
        let relative = case
            .strip_prefix(manifest)
            .expect("under the crate")
            .to_path_buf();
        let expected = std::fs::read_to_string(case.with_extension("stderr")).unwrap_or_default();
        if std_path.is_some() && expected.contains("$RUST/") {
            skipped.push(relative.display().to_string());
        } else {
            cases.compile_fail(relative);
        }
    }
    cases.pass("ui-pass/*.rs");

    if let Some(std_path) = std_path
        && !skipped.is_empty()
    {
        let report = format!(
            "compile_fail: {} of {total} misuse cases not checked: this rustc reports the \
             standard library's source as {std_path}, which trybuild does not turn into \
             $RUST, so their .stderr cannot match (rustup's toolchains check them): {}\n",
            skipped.len(),
            skipped.join(", "),
        );
        print!("{report}");
        std::fs::write(&mark, report).expect("write compile_fail.skipped");
    }
    // `cases` runs the checks when it is dropped, here.
}

/// The path of a standard-library file as this rustc reports it in a
/// diagnostic, if trybuild would leave it unchanged; `None` if it would
/// turn it into `$RUST/...`, or if no such path was found (then every case
/// runs, and a mismatch shows for itself).
fn std_path_left_as_is() -> Option<String> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("compile_fail_probe");
    std::fs::create_dir_all(&dir).expect("probe folder");
    let source = dir.join("probe.rs");
    // Sending an `Rc` to a thread: the error notes `spawn`'s bound, in std.
    std::fs::write(
        &source,
        "fn main() { let r = std::rc::Rc::new(1); std::thread::spawn(move || drop(r)); }\n",
    )
    .expect("write the probe");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let output = Command::new(rustc)
        .args(["--edition", "2021", "--emit", "metadata", "--out-dir"])
        .arg(&dir)
        .arg(&source)
        .output()
        .expect("run rustc");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let path = stderr
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("--> "))
        .find(|path| path.contains("/std/src/"))?;
    let normalized = path.starts_with("/rustc/") || path.contains("/rustlib/src/rust/");
    (!normalized).then(|| path.to_string())
}
