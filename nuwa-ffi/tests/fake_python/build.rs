//! Builds `fake_python.c` into the fake CPython libraries the test loads:
//! `python3XY.dll` and `python3.dll` for Windows, `libpython3.XY.so` for
//! Linux (glibc and musl). Elsewhere (macOS: no SDK here) nothing is built
//! and the test reports that it did not run.

use std::path::PathBuf;
use std::process::Command;

/// The versions built: one or two per family nuwa tells apart
/// (3.8-3.10 with `Py_GetVersion`, 3.11 with `Py_Version`, 3.12, 3.13, 3.14+).
const MINORS: [u32; 7] = [8, 10, 11, 12, 13, 14, 15];

fn main() {
    println!("cargo::rerun-if-changed=fake_python.c");
    // Both declared before any early return (macOS builds no fake).
    println!("cargo::rustc-check-cfg=cfg(nuwa_fake_python)");
    println!("cargo::rustc-check-cfg=cfg(nuwa_fake_many_segments)");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let os = var("CARGO_CFG_TARGET_OS");
    let windows = os == "windows";
    if !(windows || os == "linux") {
        return;
    }
    let compiler = cc::Build::new().get_compiler();
    if compiler.is_like_msvc() {
        // Only GCC-like drivers (MinGW-w64, gcc, clang) are set up here.
        return;
    }
    let src = PathBuf::from("fake_python.c");
    let build_with = |defines: &[String], extra: &[String], name: &str| {
        let mut cmd: Command = compiler.to_command();
        cmd.args(["-shared", "-O1", "-Wall", "-Wextra", "-Werror"]);
        cmd.args(defines.iter().map(|d| format!("-D{d}")));
        cmd.args(extra);
        if windows {
            cmd.arg("-static-libgcc");
        } else {
            cmd.args(["-fPIC", "-pthread"]);
        }
        cmd.arg("-o").arg(out.join(name)).arg(&src);
        let status = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(status.success(), "{cmd:?} failed");
    };
    let build = |defines: &[String], name: &str| build_with(defines, &[], name);
    for minor in MINORS {
        let name = if windows {
            format!("python3{minor}.dll")
        } else {
            format!("libpython3.{minor}.so.1.0")
        };
        build(&[format!("FAKE_MINOR={minor}")], &name);
    }
    if windows {
        build(&["FAKE_FORWARDER".into()], "python3.dll");
    }
    // 3.12 again, with 20 PT_LOAD segments, the code in the 19th (a GNU ld
    // script; x86-64 glibc only): `many_segments/libpython3.12.so.1.0`.
    println!("cargo::rerun-if-changed=many_segments.ld");
    if os == "linux"
        && var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
    {
        std::fs::create_dir_all(out.join("many_segments")).unwrap();
        let script = PathBuf::from(var("CARGO_MANIFEST_DIR")).join("many_segments.ld");
        build_with(
            &["FAKE_MINOR=12".into()],
            &[
                "-fno-asynchronous-unwind-tables".into(),
                "-Wl,--no-eh-frame-hdr".into(),
                format!("-Wl,-T,{}", script.display()),
            ],
            "many_segments/libpython3.12.so.1.0",
        );
        println!("cargo::rustc-cfg=nuwa_fake_many_segments");
    }
    println!("cargo::rustc-cfg=nuwa_fake_python");
    println!("cargo::rustc-env=NUWA_FAKE_PYTHON_DIR={}", out.display());
}
