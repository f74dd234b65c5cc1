//! Builds the C frame that keeps CPython's thread exit at shutdown from
//! unwinding Rust frames (see `src/restore_shim.c`), and tells the code what
//! the target's dynamic loader and C library can do.
//!
//! - `nuwa_restore_shim`: the C frame is linked (Unix, not wasm).
//! - `nuwa_exit_unwinds`: `pthread_exit` unwinds the stack, so the frame's
//!   cleanup runs (glibc, FreeBSD). Elsewhere (musl, macOS, the other BSDs)
//!   the thread just ends, and nuwa checks for finalization instead.
//! - `nuwa_check_finalizing`: the C frame is linked but `pthread_exit` does
//!   not unwind (musl, macOS, the other BSDs): where nuwa checks.
//! - `nuwa_part_cleanup`: glibc's `_pthread_cleanup_push`, whose handlers
//!   the forced unwind of `pthread_exit` calls frame by frame, parks a
//!   thread CPython ends inside a `with_gil` part.
//! - `nuwa_dl_noload`: `dlopen` has `RTLD_NOLOAD` and `RTLD_NODELETE`.
//! - `nuwa_dl_iterate`: the C library has `dl_iterate_phdr`.
//! - `nuwa_weak_linked`: the C frame also holds weak references to CPython's
//!   functions (ELF targets, whose linkers leave an undefined weak reference
//!   null; Mach-O's would refuse to link it).
//!
//! On Linux with glibc, the integration-test executables export `pause`
//! (`--export-dynamic-symbol`: GNU ld 2.35 or later, lld): the
//! real-interpreter suite defines its own `pause()`, which notes the threads
//! that CPython or nuwa's C frame park at shutdown, and libpython, opened
//! with `dlopen`, must bind to it (`tests/real_python/paused.rs`). GNU ld
//! 2.40 and lld 22 export it even without the option, because libc.so
//! defines the same name; the option says so rather than relying on that,
//! and the suite's `pause_probe` checks it. The other test executables do not
//! define `pause`, and their dynamic symbols stay the same.
//!
//! This needs a C compiler, and no Python.

fn main() {
    for cfg in [
        "nuwa_restore_shim",
        "nuwa_exit_unwinds",
        "nuwa_check_finalizing",
        "nuwa_part_cleanup",
        "nuwa_dl_noload",
        "nuwa_dl_iterate",
        "nuwa_weak_linked",
    ] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }
    println!("cargo::rerun-if-changed=src/restore_shim.c");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let (family, arch, os, env) = (
        var("CARGO_CFG_TARGET_FAMILY"),
        var("CARGO_CFG_TARGET_ARCH"),
        var("CARGO_CFG_TARGET_OS"),
        var("CARGO_CFG_TARGET_ENV"),
    );
    let unix = family.split(',').any(|f| f == "unix");
    let elf = unix
        && [
            "linux",
            "android",
            "freebsd",
            "dragonfly",
            "netbsd",
            "openbsd",
        ]
        .contains(&os.as_str());
    if unix && !arch.starts_with("wasm") {
        let mut build = cc::Build::new();
        build
            .file("src/restore_shim.c")
            .flag("-fexceptions")
            .warnings(true);
        if elf {
            build.define("NUWA_WEAK_LINKED", None);
            println!("cargo::rustc-cfg=nuwa_weak_linked");
        }
        build.compile("nuwa_ffi_restore_shim");
        println!("cargo::rustc-cfg=nuwa_restore_shim");
        if (os == "linux" && env == "gnu") || os == "freebsd" {
            println!("cargo::rustc-cfg=nuwa_exit_unwinds");
        } else {
            println!("cargo::rustc-cfg=nuwa_check_finalizing");
        }
        if os == "linux" && env == "gnu" {
            println!("cargo::rustc-cfg=nuwa_part_cleanup");
        }
    }
    // Only where the tests are: a packaged crate has none, and cargo refuses
    // a test link argument for a package without a test target.
    let tests = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join("tests");
    if os == "linux" && env == "gnu" && tests.is_dir() {
        println!("cargo::rustc-link-arg-tests=-Wl,--export-dynamic-symbol=pause");
    }
    let elf_dl = [
        "linux",
        "android",
        "freebsd",
        "dragonfly",
        "netbsd",
        "openbsd",
    ];
    // Where `src/sys.rs` knows the flag values (not NetBSD, whose
    // RTLD_NODELETE it does not declare, nor Linux on MIPS, whose values
    // differ).
    let noload = [
        "linux",
        "android",
        "freebsd",
        "dragonfly",
        "openbsd",
        "macos",
        "ios",
    ];
    if unix && noload.contains(&os.as_str()) && !arch.starts_with("mips") {
        println!("cargo::rustc-cfg=nuwa_dl_noload");
    }
    if unix && elf_dl.contains(&os.as_str()) {
        println!("cargo::rustc-cfg=nuwa_dl_iterate");
    }
}
