//! Nothing but a home for the `fake_python` test (`tests/fake_python.rs`)
//! and the fake CPython library it loads (`fake_python.c`, built by
//! `build.rs`).
