//! Misuses of nuwa that must not compile, and documented limits that must,
//! checked with `trybuild`.
//!
//! Each file in `tests/ui/` is one misuse; its `.stderr` pins the error, so a
//! change that lets the misuse compile, or that makes it fail for another
//! reason, fails this test. Each file in `tests/ui-pass/` compiles on
//! purpose (a limit the docs state). Regenerate the `.stderr` files with
//! `TRYBUILD=overwrite cargo test -p nuwa-tests --test compile_fail`, then
//! read them.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/*.rs");
    cases.pass("ui-pass/*.rs");
}
