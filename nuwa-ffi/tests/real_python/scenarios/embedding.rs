//! Embedding hosts: libpython loaded `RTLD_LOCAL`, a static libpython, and
//! libpython unloaded with `dlclose` after finalization.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::process::Command;
use std::time::Duration;

use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_LOCAL, RTLD_NOW};
use nuwa_ffi::__private::{Details, Via};
use nuwa_ffi::CPython;
use nuwa_ffi::nuwa_core::__private::{release, released};

use crate::harness::*;

type InitializeExFn = unsafe extern "C" fn(c_int);
type IntFn = unsafe extern "C" fn() -> c_int;
type RunStringFlagsFn = unsafe extern "C" fn(*const c_char, *mut c_void) -> c_int;
type BlockFn = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;
type DescribeFn = unsafe extern "C" fn(*mut c_char, usize) -> usize;

/// An interpreter opened by this scenario alone (not the harness's leaked,
/// `RTLD_GLOBAL` one): with the flags given, closable.
struct Local {
    lib: Library,
    finalize_ex: IntFn,
    run_simple_string_flags: RunStringFlagsFn,
    gilstate_check: IntFn,
}

impl Local {
    fn open(target: &Target, flags: c_int) -> Result<Local, String> {
        // SAFETY: libpython's initialisers only set up its own static data.
        let lib = unsafe { Library::open(Some(&target.lib), flags) }
            .map_err(|e| format!("dlopen({}): {e}", target.lib))?;
        // SAFETY: each type is the C signature of the function of that name
        // in CPython 3.8 and later; they are used only while `lib` is open.
        let (init, local) = unsafe {
            let get = |name: &str| {
                lib.get::<*mut c_void>(name.as_bytes())
                    .map(|s| *s)
                    .map_err(|e| format!("{name}: {e}"))
            };
            let init: InitializeExFn = std::mem::transmute(get("Py_InitializeEx")?);
            let finalize_ex: IntFn = std::mem::transmute(get("Py_FinalizeEx")?);
            let run: RunStringFlagsFn = std::mem::transmute(get("PyRun_SimpleStringFlags")?);
            let gilstate_check: IntFn = std::mem::transmute(get("PyGILState_Check")?);
            (
                init,
                Local {
                    lib,
                    finalize_ex,
                    run_simple_string_flags: run,
                    gilstate_check,
                },
            )
        };
        // SAFETY: called once, on this (the main) thread, before the
        // interpreter exists; PYTHONHOME was set by the runner.
        unsafe { init(0) };
        ensure!(
            local.gil_check() == 1,
            "after Py_InitializeEx(0) the main thread does not hold the GIL"
        );
        Ok(local)
    }

    fn gil_check(&self) -> c_int {
        // SAFETY: PyGILState_Check may be called at any time.
        unsafe { (self.gilstate_check)() }
    }

    fn run(&self, code: &str) -> Result<(), String> {
        ensure!(self.gil_check() == 1, "running Python code without the GIL");
        let code = CString::new(code).map_err(|e| e.to_string())?;
        // SAFETY: the interpreter is initialised, this thread holds the GIL
        // (checked above), `code` is NUL-terminated, null flags are allowed.
        let rc = unsafe { (self.run_simple_string_flags)(code.as_ptr(), std::ptr::null_mut()) };
        ensure!(rc == 0, "Python raised (traceback on stderr)");
        Ok(())
    }

    fn finalize(&self) -> Result<(), String> {
        ensure!(self.gil_check() == 1, "finalizing without the GIL");
        // SAFETY: on the thread that initialised, holding the GIL.
        let rc = unsafe { (self.finalize_ex)() };
        ensure!(rc == 0, "Py_FinalizeEx() returned {rc}");
        Ok(())
    }
}

/// Whether the object at `path` is still loaded (`RTLD_NOLOAD` loads nothing).
fn still_loaded(path: &str) -> bool {
    let Ok(path) = CString::new(path) else {
        return false;
    };
    // SAFETY: `RTLD_NOLOAD` never loads anything; the new reference it may
    // return is closed at once.
    unsafe {
        let h = libc::dlopen(path.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD);
        if h.is_null() {
            false
        } else {
            libc::dlclose(h);
            true
        }
    }
}

const WAIT: Duration = Duration::from_secs(10);
const CONTROL_WAIT_MS: c_int = 1500;

/// 1. A host (this process, which does not link libpython) opens libpython
///    `RTLD_LOCAL` and initialises it, then loads a plugin that uses nuwa
///    and links libpython: the plugin's blocks release (nuwa finds the
///    functions through the plugin's own dependencies), and this program's
///    own nuwa finds the loaded libpython by name.
pub(crate) fn rtld_local_host(target: &Target) -> Outcome {
    let plugin_path = target
        .plugin
        .clone()
        .map_err(|why| format!("no plugin: {why}"))?;
    let py = Local::open(target, RTLD_NOW | RTLD_LOCAL)?;
    // SAFETY: the plugin's initialisers are Rust's and libc's only.
    let plugin = unsafe { Library::open(Some(&plugin_path), RTLD_NOW | RTLD_LOCAL) }
        .map_err(|e| format!("dlopen({plugin_path}): {e}"))?;
    // SAFETY: the signatures of tests/hosts/testlib's functions.
    let (block_wait, wait_holding, describe, via) = unsafe {
        (
            *plugin
                .get::<BlockFn>(b"nuwa_testlib_block_wait")
                .map_err(|e| e.to_string())?,
            *plugin
                .get::<BlockFn>(b"nuwa_testlib_wait_holding")
                .map_err(|e| e.to_string())?,
            *plugin
                .get::<DescribeFn>(b"nuwa_testlib_describe")
                .map_err(|e| e.to_string())?,
            *plugin
                .get::<IntFn>(b"nuwa_testlib_via")
                .map_err(|e| e.to_string())?,
        )
    };
    let mut buf = [0 as c_char; 512];
    // SAFETY: `buf` has room for 512 bytes.
    unsafe { describe(buf.as_mut_ptr(), buf.len()) };
    // SAFETY: NUL-terminated by `describe`.
    let text = unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    let (major, minor, _) = target.version;
    ensure!(
        text.starts_with(&format!("CPython {major}.{minor} found: held check")),
        "the plugin's nuwa_ffi::init(): {text}"
    );
    // SAFETY: no arguments.
    let how = unsafe { via() };
    ensure!(
        how == 2,
        "the plugin found Python via {how} (2: its own object): {text}"
    );

    // The control: the plugin waits without a block; the helper cannot run.
    let control = Pipes::new()?;
    py.run(&control.helper_code("nuwa_control_helper"))?;
    // SAFETY: plain descriptors; the GIL is held, as the function expects.
    let r = unsafe { wait_holding(control.entered.1, control.done.0, CONTROL_WAIT_MS) };
    ensure!(
        r == 0,
        "control: the Python helper ran while the plugin waited holding the GIL ({r}): \
         the proof would prove nothing"
    );

    let pipes = Pipes::new()?;
    py.run(&pipes.helper_code("nuwa_helper"))?;
    let ms = WAIT.as_millis() as c_int;
    // SAFETY: as above.
    let r = unsafe { block_wait(pipes.entered.1, pipes.done.0, ms) };
    ensure!(
        r == 3,
        "the plugin's block: {r} (3: released and the Python helper ran; 0: nothing \
         released, the helper never ran within {WAIT:?}); {text}"
    );
    ensure!(
        py.gil_check() == 1,
        "the GIL is not held after the plugin's block"
    );

    // This program's own nuwa: no NEEDED libpython here, so the loaded
    // objects are searched by name.
    let own = nuwa_ffi::init();
    ensure!(
        own.via() == Via::LoadedObject && own.can_release(),
        "this program's nuwa_ffi::init(): {own:#}"
    );
    let pipes = Pipes::new()?;
    py.run(&pipes.helper_code("nuwa_helper2"))?;
    let (seen, released) = nuwa_ffi::nogil! {
        (pipes.enter_and_wait(WAIT), !nuwa_ffi::gil_is_held())
    };
    ensure!(
        seen && released,
        "this program's block: helper ran {seen}, released {released}: {own:#}"
    );
    py.run("nuwa_x = 1")?;
    py.finalize()?;
    drop(plugin);
    std::mem::forget(py.lib);
    Ok(Pass::Ok(format!("plugin: {text}")))
}

/// Runs `static_host MODE` with a timeout; its stdout, or why it failed.
fn run_static_host(target: &Target, mode: &str) -> Result<String, String> {
    let exe = target
        .static_host
        .clone()
        .map_err(|why| format!("no static host: {why}"))?;
    run_host(&exe, mode)
}

/// Runs `exe MODE` (a build of `static_host.c`) with a timeout.
fn run_host(exe: &str, mode: &str) -> Result<String, String> {
    let (status, stdout, stderr) =
        run_bounded(Command::new(exe).arg(mode), Duration::from_secs(30))
            .map_err(|e| format!("static_host {mode}: {e}"))?;
    ensure!(
        status.success() && stdout.contains(&format!("end: {mode}")),
        "static_host {mode}: {status}; stdout: {} | stderr: {}",
        stdout.replace('\n', " | "),
        stderr.replace('\n', " | ")
    );
    Ok(stdout)
}

fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
        .map(str::trim)
        .unwrap_or("(missing)")
}

/// 2. A program with libpython linked in statically, exporting nothing:
///    the control (a wait with the GIL held) times out; without a handover
///    nuwa finds the functions linked into the program (its weak
///    references) and blocks release; with `embed::provide` before the
///    first block, they release with the functions handed over; a second
///    call with other values, and a call after a block that found the linked
///    functions, are errors.
pub(crate) fn static_embedding(target: &Target) -> Outcome {
    if let Err(why) = &target.static_host {
        if why.starts_with("no static libpython")
            && std::env::var("NUWA_REQUIRE_PYTHON").as_deref() != Ok("1")
        {
            return Ok(Pass::Skipped(format!(
                "{why} (a failure with NUWA_REQUIRE_PYTHON=1)"
            )));
        }
        if why.starts_with(crate::hosts::UNLINKABLE) {
            let first = why.split(" | ").take(2).collect::<Vec<_>>().join(" | ");
            return Ok(Pass::Skipped(first));
        }
    }
    let (major, minor, _) = target.version;
    let found = format!("CPython {major}.{minor} found: held check");
    let control = run_static_host(target, "control")?;
    ensure!(
        line(&control, "proof") == "done=0 released=0",
        "control (the wait with the GIL held): {}",
        control.replace('\n', " | ")
    );
    let linked = run_static_host(target, "linked")?;
    ensure!(
        line(&linked, "proof") == "done=1 released=1"
            && line(&linked, "describe").starts_with(&found)
            && line(&linked, "describe")
                .contains("via the functions linked into the same object as nuwa"),
        "no handover (the functions linked in): {}",
        linked.replace('\n', " | ")
    );
    let provided = run_static_host(target, "provide")?;
    ensure!(
        line(&provided, "provide") == "0"
            && line(&provided, "proof") == "done=1 released=1"
            && line(&provided, "describe").starts_with(&found)
            && line(&provided, "describe").contains("via the embedder"),
        "with embed::provide: {}",
        provided.replace('\n', " | ")
    );
    ensure!(
        line(&provided, "again_same") == "0",
        "provide again with the same functions: {}",
        line(&provided, "again_same")
    );
    ensure!(
        line(&provided, "again_other")
            .starts_with("-1 nuwa_ffi::embed::provide: called again with other functions"),
        "provide again with another version: {}",
        line(&provided, "again_other")
    );
    let late = run_static_host(target, "late")?;
    ensure!(
        line(&late, "proof") == "done=1 released=1"
            && line(&late, "late").starts_with(
                "-1 nuwa_ffi::embed::provide: called after nuwa had already found a Python"
            ),
        "provide after a block that found the linked functions: {}",
        late.replace('\n', " | ")
    );
    Ok(Pass::Ok(line(&linked, "describe").to_string()))
}

/// 2c. The program of [`static_embedding`], its first block run while
///     another thread is inside `Py_GetVersion` (`static_host
///     version_race`): CPython 3.8-3.11 write that text again at every
///     call, starting with a NUL, so it may be read empty; nuwa still finds
///     the version (3.11: `Py_Version`, a constant). Skipped on 3.8-3.10
///     (no `Py_Version`: `Py_GetVersion` is the only source) and where
///     `Py_GetVersion` writes only once (3.12.1+).
pub(crate) fn static_embedding_version_race(target: &Target) -> Outcome {
    let Err(why) = &target.static_host else {
        return version_race(target);
    };
    Ok(Pass::Skipped(format!("no static host: {why}")))
}

fn version_race(target: &Target) -> Outcome {
    let (major, minor, _) = target.version;
    if (major, minor) < (3, 11) {
        return Ok(Pass::Skipped(
            "CPython 3.8-3.10: no Py_Version, the version is Py_GetVersion's text".into(),
        ));
    }
    let out = run_static_host(target, "version_race")?;
    if line(&out, "race") == "once" {
        return Ok(Pass::Skipped(
            "this CPython writes Py_GetVersion's text only once: nothing to race".into(),
        ));
    }
    let found = format!("CPython {major}.{minor} found: held check");
    ensure!(
        line(&out, "race") == "raced"
            && line(&out, "proof") == "done=1 released=1"
            && line(&out, "describe").starts_with(&found),
        "the first block while another thread is inside Py_GetVersion: {}",
        out.replace('\n', " | ")
    );
    Ok(Pass::Ok(line(&out, "describe").to_string()))
}

/// The functions stay valid after the host unloads libpython: init, a block
/// (proved to release), finalize, `dlclose`, then blocks again.
pub(crate) fn dlclose_then_block(target: &Target) -> Outcome {
    let py = Local::open(target, RTLD_NOW | RTLD_GLOBAL)?;
    let pipes = Pipes::new()?;
    py.run(&pipes.helper_code("nuwa_helper"))?;
    let found = nuwa_ffi::init();
    ensure!(found.can_release(), "nuwa_ffi::init(): {found:#}");
    let seen = nuwa_ffi::nogil! { pipes.enter_and_wait(WAIT) };
    ensure!(
        seen,
        "the block did not release (the helper never ran): {found}"
    );
    py.finalize()?;
    drop(py.lib);
    let pinned = still_loaded(&target.lib);
    // Without nuwa's pin, the next lines call into unmapped memory on the
    // interpreters where dlclose unloads libpython (see the control).
    // SAFETY: dropped at the end of the statement, on this thread.
    let released = released(&unsafe { release(CPython) });
    ensure!(
        !released,
        "a block released after Py_FinalizeEx and dlclose"
    );
    let value = nuwa_ffi::nogil! { 40 + 2 };
    ensure!(value == 42, "nogil! evaluated to {value}");
    ensure!(!nuwa_ffi::gil_is_held(), "gil_is_held() after dlclose");
    ensure!(
        pinned,
        "libpython was unloaded although nuwa holds pointers into it"
    );
    Ok(Pass::Ok(
        "libpython stayed mapped after dlclose (pinned by nuwa)".into(),
    ))
}

/// The control for [`dlclose_then_block`]: without nuwa, `dlclose` after
/// finalization does unload this libpython; otherwise the scenario above
/// proves nothing on this interpreter.
pub(crate) fn dlclose_unloads_without_nuwa(target: &Target) -> Outcome {
    let py = Local::open(target, RTLD_NOW | RTLD_GLOBAL)?;
    py.run("import gc\ngc.collect()")?;
    py.finalize()?;
    drop(py.lib);
    if still_loaded(&target.lib) {
        return Ok(Pass::Skipped(
            "this libpython stays loaded after dlclose even without nuwa (something else \
             holds it), so dlclose_then_block cannot fail here"
                .into(),
        ));
    }
    Ok(Pass::Ok("dlclose unloaded libpython".into()))
}

/// 3. A program that runs a block before it loads libpython (a host calling
///    a library that uses nuwa, then loading Python for a plugin): that
///    first block finds nothing and releases nothing; once libpython is
///    loaded and initialised, a block releases (proved by a Python thread
///    that can only run while it does), and `init()` reports the
///    interpreter.
pub(crate) fn python_loaded_after_a_block(target: &Target) -> Outcome {
    let before = nuwa_ffi::init();
    ensure!(
        !before.python_found(),
        "before libpython is loaded, nuwa_ffi::init(): {before}"
    );
    // SAFETY: dropped at the end of the statement, on this thread.
    let released = released(&unsafe { release(CPython) });
    ensure!(!released, "a block released with no Python in the process");
    let py = crate::harness::load(target)?;
    py.initialize()?;
    prove_release(py, &CPython, "a block after libpython was loaded")?;
    let text = check_resolution(target)?;
    py.finalize()?;
    ensure!(
        before
            .to_string()
            .contains("looked for again when the process loads a library named like libpython"),
        "what init() said while no Python was found: {before}"
    );
    Ok(Pass::Ok(format!("after loading: {text}")))
}

/// 2b. The program of [`static_embedding`] linked fully static (`-static`,
///     the usual "one binary with Python inside" on musl): nuwa's code and
///     libpython are in the one object there is, so the functions linked
///     in are found without a handover, and blocks release.
pub(crate) fn static_embedding_fully_static(target: &Target) -> Outcome {
    let Ok(host) = &target.static_host else {
        return Ok(Pass::Skipped("no static host here".into()));
    };
    let full = std::path::Path::new(host).with_file_name("static_host_full");
    if !full.is_file() {
        return Ok(Pass::Skipped(
            "static_host could not be linked with -static here".into(),
        ));
    }
    let linked = run_host(&full.to_string_lossy(), "linked")?;
    ensure!(
        line(&linked, "proof") == "done=1 released=1",
        "a fully static program with libpython linked in, no handover: {}",
        linked.replace('\n', " | ")
    );
    Ok(Pass::Ok(line(&linked, "describe").to_string()))
}
