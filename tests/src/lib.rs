//! Shared helpers for nuwa's cross-crate tests (the tests live in `tests/tests/`).
