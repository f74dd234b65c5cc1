//! Builds the C frame that keeps CPython's thread exit at shutdown from
//! unwinding Rust frames (see `src/restore_shim.c`).
//!
//! Unix `pthread_exit` may unwind the stack (glibc and the BSDs do); the shim
//! catches that. On Windows, `ExitThread` does not unwind, so no shim.
//! This needs a C compiler, and no Python.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(nuwa_restore_shim)");
    println!("cargo::rerun-if-changed=src/restore_shim.c");
    let family = std::env::var("CARGO_CFG_TARGET_FAMILY").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    if family.split(',').any(|f| f == "unix") && !arch.starts_with("wasm") {
        cc::Build::new()
            .file("src/restore_shim.c")
            .flag("-fexceptions")
            .warnings(true)
            .compile("nuwa_ffi_restore_shim");
        println!("cargo::rustc-cfg=nuwa_restore_shim");
    }
}
