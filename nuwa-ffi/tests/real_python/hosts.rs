//! Builds the embedding hosts for the interpreter under test: the static
//! library of `tests/hosts/testlib` (once, with cargo, in its own target
//! directory), then with the C compiler:
//!
//! - a plugin (`libnuwa_plugin.so`): the static library linked with the
//!   interpreter's shared libpython, so that its `NEEDED` names libpython;
//! - `static_host`: `tests/hosts/static_host.c` linked with the static
//!   library and `libpython3.X.a`, without `--export-dynamic`.
//!
//! The paths (or why a host could not be built) reach the children in
//! `NUWA_RP_PLUGIN` and `NUWA_RP_STATIC_HOST`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What the runner learned from sysconfig that the hosts need.
#[derive(Default)]
pub(crate) struct BuildVars {
    pub(crate) label: String,
    pub(crate) include: String,
    pub(crate) libdir: String,
    pub(crate) ldlibrary: String,
    pub(crate) libpl: String,
    pub(crate) library: String,
    pub(crate) libs: String,
    pub(crate) syslibs: String,
    /// The libraries of the modules built into `libpython3.X.a` (zlib,
    /// expat, ... on Debian's).
    pub(crate) modlibs: String,
}

/// Why the static host was not built when the interpreter's static
/// libpython needs libraries its build does not provide.
pub(crate) const UNLINKABLE: &str = "this static libpython does not link as shipped";

/// A host that was built, or why not.
pub(crate) type Built = Result<PathBuf, String>;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = text.lines().rev().take(15).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!(
        "{what} failed ({}): {}",
        out.status,
        tail.join(" | ")
    ))
}

/// The static library of `tests/hosts/testlib`, built with cargo. Where
/// there is no cargo (the matrix runs this binary in a chroot for some
/// interpreters), the one an earlier run built is used.
fn testlib(root: &Path) -> Built {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = scratch().join("cargo");
    // Cross builds (scripts/cross-linux.sh) name the target this way, and
    // cargo puts its output under the target's name.
    let lib = match env::var("CARGO_BUILD_TARGET") {
        Ok(triple) if !triple.is_empty() => target.join(triple),
        _ => target.clone(),
    }
    .join("debug")
    .join("libnuwa_embed_testlib.a");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--quiet",
            "-p",
            "nuwa-embed-testlib",
            "--target-dir",
        ])
        .arg(&target);
    match cmd.stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => Ok(lib),
        Ok(out) => Err(format!(
            "cargo build -p nuwa-embed-testlib failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(_) if lib.is_file() => Ok(lib),
        Err(e) => Err(format!(
            "no cargo here ({e}) and no {} built by an earlier run",
            lib.display()
        )),
    }
}

/// Where the hosts are built: under cargo's target directory, which
/// honours CARGO_TARGET_DIR (the matrix keeps that inside the project tree,
/// where its chroot sees it).
fn scratch() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("embed-hosts")
}

/// The native libraries a Rust static library needs on Linux.
const RUST_LIBS: &[&str] = &["-lgcc_s", "-lpthread", "-ldl", "-lm", "-lrt", "-lutil"];

/// The same, for a fully static link (no `libgcc_s.so`).
const RUST_LIBS_STATIC: &[&str] = &["-lgcc_eh", "-lpthread", "-ldl", "-lm", "-lrt", "-lutil"];

fn cc() -> Command {
    Command::new(env::var("CC").unwrap_or_else(|_| "cc".into()))
}

/// The words of a sysconfig flags variable, without the `\\` of Makefile
/// line continuations that some builds leave in (Debian's `MODLIBS`).
fn split(flags: &str) -> impl Iterator<Item = &str> {
    flags.split_whitespace().filter(|w| *w != "\\")
}

/// Builds both hosts; either may fail on its own.
pub(crate) fn build(vars: &BuildVars) -> (Built, Built) {
    let root = workspace();
    let lib = match testlib(&root) {
        Ok(lib) => lib,
        Err(e) => return (Err(e.clone()), Err(e)),
    };
    let out = scratch().join(&vars.label);
    if let Err(e) = std::fs::create_dir_all(&out) {
        let e = format!("mkdir {}: {e}", out.display());
        return (Err(e.clone()), Err(e));
    }
    (
        plugin(vars, &lib, &out),
        static_host(vars, &lib, &out, &root),
    )
}

fn plugin(vars: &BuildVars, lib: &Path, out: &Path) -> Built {
    if vars.ldlibrary.is_empty() || vars.ldlibrary.ends_with(".a") {
        return Err(format!(
            "no shared libpython (LDLIBRARY={})",
            vars.ldlibrary
        ));
    }
    let so = out.join("libnuwa_plugin.so");
    let mut cmd = cc();
    cmd.arg("-shared").arg("-o").arg(&so);
    for symbol in [
        "nuwa_testlib_block_wait",
        "nuwa_testlib_wait_holding",
        "nuwa_testlib_describe",
        "nuwa_testlib_via",
        "nuwa_testlib_gil_is_held",
    ] {
        cmd.arg(format!("-Wl,-u,{symbol}"));
    }
    cmd.arg(lib)
        .arg("-Wl,--no-as-needed")
        .arg(format!("-L{}", vars.libdir))
        .arg(format!("-l:{}", vars.ldlibrary))
        .arg(format!("-Wl,-rpath,{}", vars.libdir))
        .args(RUST_LIBS);
    run(&mut cmd, "linking the plugin")?;
    Ok(so)
}

fn static_host(vars: &BuildVars, lib: &Path, out: &Path, root: &Path) -> Built {
    let archive = Path::new(&vars.libpl).join(&vars.library);
    if !vars.library.ends_with(".a") || !archive.is_file() {
        return Err(format!(
            "no static libpython ({} does not exist)",
            archive.display()
        ));
    }
    // Debian's 3.13 names archives of CPython's build tree in MODLIBS
    // (`Modules/_hacl/libHacl_Hash_SHA2.a`, a relative path): the static
    // libpython needs them, and no package ships them.
    if let Some(missing) = split(&vars.modlibs)
        .find(|w| !w.starts_with('-') && w.ends_with(".a") && !Path::new(w).is_file())
    {
        return Err(format!(
            "{UNLINKABLE}: MODLIBS names {missing}, which is not here (a file of CPython's build tree)"
        ));
    }
    let exe = out.join("static_host");
    let source = root.join("nuwa-ffi/tests/hosts/static_host.c");
    let link_to = |exe: &Path, pie: bool, full: bool| {
        let mut cmd = cc();
        if full {
            cmd.arg("-static");
        }
        if !pie {
            cmd.arg("-no-pie");
        }
        cmd.arg("-o")
            .arg(exe)
            .arg(&source)
            // For `static_host version_race` (see there).
            .arg("-Wl,--wrap=PyOS_snprintf")
            .arg(format!("-I{}", vars.include))
            .arg(lib)
            .arg(&archive)
            .args(split(&vars.modlibs))
            .args(split(&vars.libs))
            .args(split(&vars.syslibs))
            .args(if full { RUST_LIBS_STATIC } else { RUST_LIBS });
        cmd
    };
    let link = |pie: bool| link_to(&exe, pie, false);
    // The same host linked fully static (`-static`: no dynamic loader, so
    // no `dladdr`), best effort, for `static_embedding_fully_static`; the
    // scenario skips where it could not be linked.
    let full = out.join("static_host_full");
    let _ = std::fs::remove_file(&full);
    let _ = run(&mut link_to(&full, false, true), "linking static_host_full");
    // A libpython3.X.a built without -fPIC cannot go into a PIE.
    match run(&mut link(true), "linking static_host")
        .or_else(|_| run(&mut link(false), "linking static_host (-no-pie)"))
    {
        Ok(()) => Ok(exe),
        // The archive itself needs what its build does not ship or name
        // (Debian sid's 3.14 refers to CPython's HACL archives, its 3.15 to
        // libzstd): it cannot be embedded as it is.
        Err(why)
            if why.contains(&format!("{}(", vars.library)) || why.contains("cannot find -l") =>
        {
            Err(format!("{UNLINKABLE}: {why}"))
        }
        Err(why) => Err(why),
    }
}
