//! The runner: finds the interpreter, runs each scenario in a child process
//! under a hard timeout, and judges what the child printed and how it ended.

#![allow(unused_imports)]
use std::env;
use std::ffi::{CStr, CString, c_char, c_int, c_longlong, c_void};
use std::hint::black_box;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI64, Ordering::SeqCst};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
use nuwa_ffi::__private::{Details, HeldCheck};
use nuwa_ffi::{CPython, GilHeld, GilOps};

use crate::harness::*;
use crate::hosts::{self, BuildVars, Built};
use crate::scenarios::shutdown::UNWOUND_MARKER;
use crate::scenarios::{SCENARIOS, Scenario};

// -----------------------------------------------------------------------
// The runner
// -----------------------------------------------------------------------

/// libtest's command line, as far as it matters here.
#[derive(Default)]
pub(crate) struct Options {
    pub(crate) filters: Vec<String>,
    pub(crate) skips: Vec<String>,
    pub(crate) exact: bool,
    pub(crate) list: bool,
    pub(crate) terse: bool,
    pub(crate) ignored_only: bool,
}

impl Options {
    fn parse(args: &[String]) -> Options {
        let mut opts = Options::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if arg.starts_with("--") => (flag, Some(value.to_string())),
                _ => (arg.as_str(), None),
            };
            let mut value = || inline.clone().or_else(|| args.next().cloned());
            match flag {
                "--list" => opts.list = true,
                "--exact" => opts.exact = true,
                "--ignored" => opts.ignored_only = true,
                "--format" => opts.terse = value().as_deref() == Some("terse"),
                "--skip" => opts.skips.extend(value()),
                // Flags with a value, ignored.
                "--test-threads" | "--color" | "--logfile" | "--shuffle-seed" | "-Z" => {
                    let _ = value();
                }
                // Any other flag (`--nocapture`, `-q`, `--include-ignored`, ...).
                _ if flag.starts_with('-') => {}
                _ => opts.filters.push(arg.clone()),
            }
        }
        opts
    }

    fn selects(&self, name: &str) -> bool {
        let matches = |f: &String| {
            if self.exact {
                name == f
            } else {
                name.contains(f.as_str())
            }
        };
        (self.filters.is_empty() || self.filters.iter().any(matches))
            && !self.skips.iter().any(matches)
    }
}

/// What the runner learned about the interpreter.
pub(crate) struct PythonInfo {
    pub(crate) version: String,
    pub(crate) full_version: String,
    pub(crate) build: String,
    pub(crate) free_threaded: bool,
    pub(crate) debug: bool,
    pub(crate) lib: PathBuf,
    pub(crate) home: String,
    /// For building the embedding hosts.
    pub(crate) build_vars: BuildVars,
}

pub(crate) const QUERY: &str = r#"
import sys, sysconfig
def v(name):
    x = sysconfig.get_config_var(name)
    return "" if x is None else str(x)
print("version=%d.%d.%d" % sys.version_info[:3])
print("full_version=" + sys.version.replace("\n", " "))
print("abiflags=" + getattr(sys, "abiflags", ""))
print("prefix=" + sys.prefix)
print("exec_prefix=" + sys.exec_prefix)
for name in ("LIBDIR", "LDLIBRARY", "INSTSONAME", "Py_ENABLE_SHARED", "Py_GIL_DISABLED", "Py_DEBUG",
             "INCLUDEPY", "LIBPL", "LIBRARY", "LIBS", "SYSLIBS", "MODLIBS"):
    print(name + "=" + v(name))
"#;

/// Asks `python` for its shared library.
pub(crate) fn discover(python: &str) -> Result<PythonInfo, String> {
    let out = Command::new(python)
        .args(["-I", "-c", QUERY])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run it: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "it failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or("")
            .to_string()
    };
    let version = get("version");
    let mut numbers = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if (major, minor) < (3, 8) {
        return Err(format!(
            "it is Python {version}; nuwa-ffi is tested with 3.8 and later"
        ));
    }
    let libdir = get("LIBDIR");
    let candidates: Vec<PathBuf> = [get("LDLIBRARY"), get("INSTSONAME")]
        .into_iter()
        .filter(|name| !name.is_empty() && !name.ends_with(".a"))
        .map(|name| Path::new(&libdir).join(name))
        .collect();
    let Some(lib) = candidates.iter().find(|p| p.is_file()).cloned() else {
        return Err(format!(
            "Python {version}, Py_ENABLE_SHARED={}, LDLIBRARY={}, INSTSONAME={}: \
             none of {candidates:?} exists",
            get("Py_ENABLE_SHARED"),
            get("LDLIBRARY"),
            get("INSTSONAME")
        ));
    };
    let free_threaded = get("Py_GIL_DISABLED") == "1";
    let debug = get("Py_DEBUG") == "1" || get("abiflags").contains('d');
    let build = match (free_threaded, debug) {
        (true, true) => "free-threaded+debug",
        (true, false) => "free-threaded",
        (false, true) => "debug",
        (false, false) => "gil",
    };
    let (prefix, exec_prefix) = (get("prefix"), get("exec_prefix"));
    let home = if prefix == exec_prefix {
        prefix
    } else {
        format!("{prefix}:{exec_prefix}")
    };
    Ok(PythonInfo {
        version,
        full_version: get("full_version"),
        build: build.to_string(),
        free_threaded,
        debug,
        lib,
        home,
        build_vars: BuildVars {
            label: format!("{}-{}", get("version"), build),
            include: get("INCLUDEPY"),
            libdir,
            ldlibrary: get("LDLIBRARY"),
            libpl: get("LIBPL"),
            library: get("LIBRARY"),
            libs: get("LIBS"),
            syslibs: get("SYSLIBS"),
            modlibs: get("MODLIBS"),
        },
    })
}

pub(crate) enum Verdict {
    Ok(String),
    Skipped(String),
    Failed(String),
}

/// What the runner keeps of a child.
pub(crate) struct Run {
    pub(crate) verdict: Verdict,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Output that means a crash even if the exit code says otherwise.
pub(crate) const CRASH_MARKERS: &[&str] = &[
    UNWOUND_MARKER,
    "panic in a function that cannot unwind",
    "Fatal Python error",
    "panicked while processing panic",
    "thread caused non-unwinding panic",
];

pub(crate) fn signal_name(signal: i32) -> &'static str {
    match signal {
        4 => " (SIGILL)",
        5 => " (SIGTRAP)",
        6 => " (SIGABRT)",
        7 => " (SIGBUS)",
        9 => " (SIGKILL)",
        11 => " (SIGSEGV)",
        _ => "",
    }
}

pub(crate) fn judge(status: Option<ExitStatus>, stdout: &str, stderr: &str) -> Verdict {
    let Some(status) = status else {
        return Verdict::Failed(format!(
            "timeout: killed after {} s",
            CHILD_TIMEOUT.as_secs()
        ));
    };
    let result = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(RESULT_MARK))
        .map(str::trim);
    if let Some(why) = result.and_then(|r| r.strip_prefix("fail")) {
        return Verdict::Failed(why.trim().to_string());
    }
    // What stderr says about a crash, to go with the exit status.
    let said: Vec<&str> = CRASH_MARKERS
        .iter()
        .copied()
        .filter(|m| stderr.contains(*m))
        .collect();
    let said = if said.is_empty() {
        String::new()
    } else {
        format!("; stderr says {}", said.join(" / "))
    };
    if let Some(signal) = status.signal() {
        return Verdict::Failed(format!(
            "killed by signal {signal}{}{said}",
            signal_name(signal)
        ));
    }
    if !status.success() {
        return Verdict::Failed(format!("{status} without a result"));
    }
    if !said.is_empty() {
        return Verdict::Failed(format!("exit code 0{said}"));
    }
    match result {
        Some(r) if r.starts_with("ok") => Verdict::Ok(r["ok".len()..].trim().to_string()),
        Some(r) if r.starts_with("skip") => Verdict::Skipped(r["skip".len()..].trim().to_string()),
        _ => Verdict::Failed("exit code 0 without a result".to_string()),
    }
}

pub(crate) fn read_all(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs one scenario in a child, under `CHILD_TIMEOUT`.
fn describe_built(built: &Built) -> String {
    match built {
        Ok(path) => path.display().to_string(),
        Err(why) => format!("not built: {why}"),
    }
}

/// The value of `NUWA_RP_PLUGIN` / `NUWA_RP_STATIC_HOST`: a path, or
/// `error: why`.
fn built_env(built: Option<&Built>) -> String {
    match built {
        Some(Ok(path)) => path.display().to_string(),
        Some(Err(why)) => format!("error: {why}"),
        None => "error: not built for this run".into(),
    }
}

pub(crate) fn run_child(
    exe: &Path,
    name: &str,
    info: &PythonInfo,
    hosts: Option<&(Built, Built)>,
) -> Run {
    let spawned = Command::new(exe)
        .env("NUWA_RP_PLUGIN", built_env(hosts.map(|h| &h.0)))
        .env("NUWA_RP_STATIC_HOST", built_env(hosts.map(|h| &h.1)))
        .args(["--scenario", name])
        .env("NUWA_RP_LIBPYTHON", &info.lib)
        .env("NUWA_RP_VERSION", &info.version)
        .env(
            "NUWA_RP_FREE_THREADED",
            if info.free_threaded { "1" } else { "0" },
        )
        .env("NUWA_RP_DEBUG", if info.debug { "1" } else { "0" })
        .env("PYTHONHOME", &info.home)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONSTARTUP")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            return Run {
                verdict: Verdict::Failed(format!("cannot start {}: {e}", exe.display())),
                stdout: String::new(),
                stderr: String::new(),
            };
        }
    };
    let stdout = read_all(child.stdout.take());
    let stderr = read_all(child.stderr.take());
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    Run {
        verdict: judge(status, &stdout, &stderr),
        stdout,
        stderr,
    }
}

pub(crate) fn print_output(label: &str, text: &str, keep: usize) {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with(RESULT_MARK))
        .collect();
    if lines.is_empty() {
        return;
    }
    let skipped = lines.len().saturating_sub(keep);
    if skipped > 0 {
        println!("    | {label} ({skipped} earlier lines left out):");
    } else {
        println!("    | {label}:");
    }
    for line in &lines[skipped..] {
        println!("    |   {line}");
    }
}

pub(crate) fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--scenario") {
        return child(args.get(i + 1).map_or("", String::as_str));
    }
    let opts = Options::parse(&args);
    let selected: Vec<&Scenario> = SCENARIOS.iter().filter(|s| opts.selects(s.name)).collect();

    if opts.list {
        if !opts.ignored_only {
            for scenario in &selected {
                println!("{}: test", scenario.name);
            }
        }
        if !opts.terse {
            let n = if opts.ignored_only { 0 } else { selected.len() };
            println!("\n{n} tests, 0 benchmarks");
        }
        return ExitCode::SUCCESS;
    }
    if opts.ignored_only {
        println!("real_python: no ignored scenarios");
        return ExitCode::SUCCESS;
    }

    let python = env::var("NUWA_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let require = env::var("NUWA_REQUIRE_PYTHON").is_ok_and(|v| v == "1");
    let info = match discover(&python) {
        Ok(info) => info,
        Err(why) => {
            let line = format!("real_python: SKIPPED (no shared libpython for {python}: {why})");
            println!("{line}");
            mark_skipped(&line);
            if require {
                println!(
                    "real_python: FAILED: NUWA_REQUIRE_PYTHON=1 and no usable Python \
                     (set NUWA_TEST_PYTHON to an interpreter with a shared libpython)"
                );
                return ExitCode::FAILURE;
            }
            return ExitCode::SUCCESS;
        }
    };
    println!(
        "real_python: {python}: Python {} [{}], build: {}, {}",
        info.version,
        info.full_version,
        info.build,
        info.lib.display()
    );
    let exe = match env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            println!("real_python: FAILED: cannot find this test's executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    if selected.is_empty() {
        println!("real_python: no scenario matches {:?}", opts.filters);
    }
    let hosts = if selected.iter().any(|s| s.hosts) {
        let started = Instant::now();
        let built = hosts::build(&info.build_vars);
        println!(
            "real_python: embedding hosts built in {:.1} s (plugin: {}; static host: {})",
            started.elapsed().as_secs_f64(),
            describe_built(&built.0),
            describe_built(&built.1)
        );
        Some(built)
    } else {
        None
    };

    let (mut ok, mut failed, mut skipped) = (0, 0, 0);
    for scenario in selected {
        let started = Instant::now();
        let mut last = None;
        for run in 1..=scenario.runs {
            let result = run_child(&exe, scenario.name, &info, hosts.as_ref());
            let stop = !matches!(result.verdict, Verdict::Ok(_));
            last = Some((run, result));
            if stop {
                break;
            }
        }
        let Some((run, result)) = last else { continue };
        let took = started.elapsed().as_secs_f64();
        let runs = if scenario.runs > 1 {
            format!("{} runs, ", scenario.runs)
        } else {
            String::new()
        };
        match result.verdict {
            Verdict::Ok(note) => {
                ok += 1;
                let note = if note.is_empty() {
                    String::new()
                } else {
                    format!("; {note}")
                };
                println!(
                    "real_python: {} ... ok ({runs}{took:.2} s{note})",
                    scenario.name
                );
            }
            Verdict::Skipped(why) => {
                skipped += 1;
                println!("real_python: {} ... SKIPPED: {why}", scenario.name);
            }
            Verdict::Failed(why) => {
                failed += 1;
                let which = if scenario.runs > 1 {
                    format!("run {run} of {}: ", scenario.runs)
                } else {
                    String::new()
                };
                println!("real_python: {} ... FAILED: {which}{why}", scenario.name);
                print_output("stdout", &result.stdout, 20);
                print_output("stderr", &result.stderr, 40);
            }
        }
    }
    println!(
        "real_python (Python {}, build: {}): {ok} passed, {failed} failed, {skipped} skipped",
        info.version, info.build
    );
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Leaves the reason the whole suite was skipped where `make test` looks
/// for it at the end (`skipped` in this binary's scratch folder), so that a
/// skip is said again after every other test's output, not only here.
pub(crate) fn mark_skipped(line: &str) {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("real_python.skipped");
    if let Err(e) = std::fs::write(&path, format!("{line}\n")) {
        println!("real_python: could not write {}: {e}", path.display());
    }
}
