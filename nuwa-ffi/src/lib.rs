#![doc = include_str!("../README.md")]
#![deny(missing_docs, missing_debug_implementations)]

// Where the code is. The GIL is released and taken back in one place,
// `block` (`CPython`'s `GilOps`: every block's release and take-back),
// which follows the `plan` the lookup made once:
// - `plan`: the per-block plan (which CPython functions, which way);
// - `resolve`: the one-time lookup (`resolve/mod.rs`), the version policy
//   that makes the plan (`resolve/decide.rs`: pure, tested with fake symbol
//   tables), the platform code (`resolve/unix.rs`, `windows.rs`,
//   `loaded.rs`), the report (`resolve/report.rs`: `Resolution`);
// - `shutdown`: interpreter shutdown (the C frame of `restore_shim.c`, its
//   entries, parking); `capi`: CPython's function types; `sys`: the C
//   library's declarations (Unix);
// - `token`: `GilHeld`; `signals`: Ctrl-C checks; `embed`; `recording`
//   (`stats`).
mod block;
mod capi;
#[cfg(feature = "pyo3")]
mod detach;
pub mod embed;
mod plan;
#[cfg(feature = "stats")]
#[path = "stats.rs"]
mod recording;
mod resolve;
mod shutdown;
mod signals;
#[cfg(unix)]
mod sys;
// The counters are 64-bit atomics. Every target nuwa is tested on has them
// (x86_64, i686, aarch64, s390x, and armv7 too); 32-bit PowerPC, MIPS and
// SPARC, among others, do not: there the feature says so instead of failing
// in the middle of the module.
#[cfg(all(feature = "stats", not(target_has_atomic = "64")))]
compile_error!(
    "nuwa-ffi's `stats` feature needs 64-bit atomics (AtomicU64), which this \
     target lacks: build without it"
);
mod token;

pub use block::{CPython, gil_is_held};
#[cfg(feature = "pyo3")]
pub use detach::Detach;
pub use resolve::Resolution;
pub use signals::{Interrupted, SignalCheck};
pub use token::GilHeld;

pub use nuwa_core::{
    self, GilOps, GilUnavailable, HiddenWhileGilReleased, Nogil, ReleaseIf, Released, WithGil,
    mock, released, with_gil,
};
pub use nuwa_std::{self, Panicked, ThreadCheckedMock};

/// Release statistics, per call site and per process (feature `stats`).
///
/// With the feature on, every block written with this crate's
/// [`nogil!`](crate::nogil!) (whatever its backend) or run by
/// [`nogil()`](crate::nogil()) counts, for its call site: blocks, blocks that
/// released nothing, time released and waiting to take the GIL back (total
/// and longest), and releases shorter than [`short_threshold`](crate::stats::short_threshold) (default
/// 10 µs: releases that cost more than they gave). A block counts once, as
/// it begins, however it ends; each `with_gil!` part ends one released
/// stretch and starts another. With the feature off this module does not
/// exist and the blocks cost what they did without it; the cost with it on
/// is in BENCHMARKS.md.
///
/// # Examples
///
/// ```
/// use nuwa_ffi::stats;
/// stats::reset();
/// for _ in 0..3 {
///     nuwa_ffi::nogil! { (0..1000u64).sum::<u64>() };
/// }
/// let site = stats::sites().into_iter().find(|s| s.line == line!() - 2).unwrap();
/// assert_eq!(site.stats.blocks, 3);
/// // No interpreter in a test binary: nothing was released.
/// assert_eq!(site.stats.not_released, 3);
/// ```
#[cfg(feature = "stats")]
pub mod stats {
    pub use crate::recording::{
        SiteStats, Stats, reset, set_short_threshold, short_threshold, sites, total,
    };
}

/// What the macros' expansions, nuwa's own tests and its examples' test
/// helpers use. Not public API: no semver promise covers anything here.
#[doc(hidden)]
pub mod __private {
    pub use crate::block::SavedThreadState;
    #[cfg(feature = "stats")]
    pub use crate::recording::{CallSite, Recorded, RegistryPoint, set_registry_hook};
    pub use crate::resolve::{Details, HeldCheck, RestorePath, Status, Via};
}

/// Finds CPython's functions now instead of at the first block, and says
/// what was found.
///
/// Blocks resolve on first use anyway (nothing is looked up at import);
/// call this from `PyInit_*` to move the cost (a few `dlsym` calls and one
/// walk of the loaded objects, see BENCHMARKS.md) out of the first call, or
/// to log the result.
/// An answer that can release is final. One that cannot (no Python yet) is
/// kept only as long as the process loads and unloads no library: after a
/// `dlopen`, the next block or call looks again, so a libpython loaded later
/// is found (where the C library counts loaded objects: glibc, musl, the
/// BSDs; elsewhere the first answer stays). The `Display` form says which.
///
/// # Examples
///
/// ```
/// let found = nuwa_ffi::init();
/// // In a plain Rust test binary there is no interpreter:
/// println!("{found}");
/// if !found.python_found() {
///     assert!(!found.can_release());
/// }
/// ```
pub fn init() -> &'static Resolution {
    resolve::resolution()
}

/// Runs `f` with the GIL of the CPython interpreter released (if this thread
/// holds it) and takes the GIL back before returning: the strict form.
///
/// [`Nogil::nogil`] with the [`CPython`] backend. The closure and its result
/// must be `Send`, so the closure cannot capture a Python handle (a raw
/// `*mut PyObject`, PyO3's `Python<'py>` or `Bound<'py, T>`): the compiler
/// checks it by type. It is not `async`, so it cannot `.await`: this is the
/// form for async code. `return` and `?` leave the closure only. The
/// closure's argument takes the GIL back for a part of the work
/// ([`Released::with_gil`]).
///
/// In a process where PyO3 runs, use PyO3's `py.detach` instead (or a
/// [`Nogil`] backend built on it; see [Using nuwa with PyO3]): PyO3 keeps its
/// own record of which threads are attached, which this function does not
/// update.
///
/// [Using nuwa with PyO3]: https://github.com/nuwa-rs/nuwa#using-nuwa-with-pyo3
///
/// # Examples
///
/// ```
/// let data = vec![1u64, 2, 3];
/// let total = nuwa_ffi::nogil(|_| data.iter().sum::<u64>());
/// assert_eq!(total, 6);
/// ```
///
/// A raw Python pointer cannot be captured:
///
/// ```compile_fail
/// let object: *mut core::ffi::c_void = core::ptr::null_mut(); // a *mut PyObject
/// nuwa_ffi::nogil(|_| object.is_null()); // error: cannot be shared between threads safely
/// ```
#[cfg_attr(feature = "stats", track_caller)]
pub fn nogil<T, F>(f: F) -> T
where
    F: FnOnce(&mut Released<'_, CPython>) -> T + Send,
    T: Send,
{
    #[cfg(feature = "stats")]
    return recording::Recorded {
        ops: CPython,
        site: recording::site_of(core::panic::Location::caller()),
    }
    .nogil(f);
    #[cfg(not(feature = "stats"))]
    CPython.nogil(f)
}

/// Runs a block with the GIL released, and takes the GIL back on every way
/// out of the block: `return`, `?`, `break`, a panic, its end.
///
/// ```text
/// nogil! { BODY }                        // the CPython interpreter's GIL
/// nogil!(hide(obj, args) => { BODY })    // the same; `obj` and `args` unusable inside
/// nogil!(OPS => { BODY })                // another backend: a mock, `&mut` a GilHeld, a ReleaseIf
/// nogil!(OPS, hide(obj) => { BODY })
/// ```
///
/// `BODY` is any block body, expanded in place; the macro's value is its
/// value. If the thread does not hold the GIL (a thread the extension
/// spawned, a nested block, no Python in the process), nothing is released
/// and the block just runs. Inside, [`with_gil!`] takes the GIL back for a
/// part. What the block may not do, and what the compiler checks (`.await`
/// and `async` are rejected; `hide` checks names, not types), is in
/// [`nuwa_core::nogil!`]. With the `stats` feature, every block written with
/// this macro is counted in the `stats` module (whatever the backend).
///
/// In a PyO3 module, no PyO3 code may run in the block: see [Using nuwa with
/// PyO3].
///
/// [Using nuwa with PyO3]: https://github.com/nuwa-rs/nuwa#using-nuwa-with-pyo3
///
/// # Examples
///
/// ```
/// fn invert(pixels: &mut [u8]) {
///     nuwa_ffi::nogil! {
///         for p in pixels.iter_mut() {
///             *p ^= 0xff;
///         }
///     }
/// }
///
/// let mut pixels = vec![0, 128, 255];
/// invert(&mut pixels);
/// assert_eq!(pixels, [255, 127, 0]);
/// ```
///
/// Called with braces in statement position, the macro is a statement, as
/// every brace-called macro is: bind its value (`let x = nogil! { .. };`) or
/// call it with parentheses (`nogil!({ .. }) + 1`).
#[macro_export]
macro_rules! nogil {
    // `=>` at the top level, among the first 32 tokens, makes the form one
    // with a backend (or `hide`); without it the tokens are a block body,
    // never parsed as a backend expression (which could fail on a valid
    // body). A block body has no `=>` outside brackets.
    ($($tokens:tt)*) => {
        $crate::__nuwa_scan!(
            [$($tokens)*] []
            [@ @ @ @ @ @ @ @ @ @ @ @ @ @ @ @ @ @ @ @ @ @ @ @ @ @ @ @ @ @ @ @]
            $($tokens)*
        )
    };
}

/// Looks for `=>` at the top level of [`nogil!`]'s tokens. Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __nuwa_scan {
    ([$($all:tt)*] [$($head:tt)*] [$($n:tt)*] => $($rest:tt)*) => {
        $crate::__nuwa_backend!([$($head)*] => $($rest)*)
    };
    ([$($all:tt)*] [$($head:tt)*] [@ $($n:tt)*] $t:tt $($rest:tt)*) => {
        $crate::__nuwa_scan!([$($all)*] [$($head)* $t] [$($n)*] $($rest)*)
    };
    ([$($all:tt)*] $($x:tt)*) => {
        $crate::__nuwa_body!([$($all)*] $($all)*)
    };
}

/// The forms with `=>`: what comes before it is `hide(..)`, a backend, or a
/// backend and `hide(..)`. Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __nuwa_backend {
    ([hide ($($hidden:ident),+ $(,)?)] => { $($body:tt)* }) => {
        $crate::nuwa_core::nogil!(
            $crate::__nuwa_recorded!($crate::CPython), hide($($hidden),+) => { $($body)* }
        )
    };
    // `hide(..)` whose parentheses hold more than names: say so, rather
    // than read it as a call of a function `hide`.
    ([hide ($($x:tt)*)] => $($rest:tt)*) => {
        ::core::compile_error!(
            "nogil!: `hide` takes names in parentheses, then `=>` and the block in braces: \
             `nogil!(hide(obj, callback) => { ... })`"
        )
    };
    ([$ops:expr] => $($rest:tt)*) => {
        $crate::nuwa_core::nogil!($crate::__nuwa_recorded!(ref $ops) => $($rest)*)
    };
    ([$ops:expr, $($more:tt)*] => $($rest:tt)*) => {
        $crate::nuwa_core::nogil!($crate::__nuwa_recorded!(ref $ops), $($more)* => $($rest)*)
    };
    ([hide $($x:tt)*] => $($rest:tt)*) => {
        ::core::compile_error!(
            "nogil!: `hide` takes names in parentheses, then `=>` and the block in braces: \
             `nogil!(hide(obj, callback) => { ... })`"
        )
    };
    ([$($x:tt)*] => $($rest:tt)*) => {
        ::core::compile_error!(
            "nogil!: before `=>` comes a backend (`nogil!(OPS => { ... })`), `hide(name, ...)` \
             or both (`nogil!(OPS, hide(name, ...) => { ... })`)"
        )
    };
}

/// The forms without `=>`: a block body, or a backend and a block with the
/// `=>` left out. The tokens come twice, a copy to match on and the caller's
/// own to emit (so that an `unsafe` or an attribute the caller wrote stays
/// the caller's, for lints such as `unsafe_code`). Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __nuwa_body {
    // `nogil!({ .. })`: the braces are the call's, not the body's.
    ([$($all:tt)*] { $($x:tt)* }) => { $crate::__nuwa_block!($($x)*) };
    // `hide(..) { .. }`, the `=>` left out (no block body reads so).
    ([$($all:tt)*] hide ($($h:tt)*) { $($x:tt)* }) => {
        ::core::compile_error!(
            "nogil!: `hide` takes names in parentheses, then `=>` and the block in braces: \
             `nogil!(hide(obj, callback) => { ... })`"
        )
    };
    // A keyword and a block, maybe borrowed: a body (`ident` matches
    // keywords too).
    ([$($all:tt)*] unsafe { $($x:tt)* }) => { $crate::__nuwa_block!($($all)*) };
    ([$($all:tt)*] loop { $($x:tt)* }) => { $crate::__nuwa_block!($($all)*) };
    ([$($all:tt)*] async { $($x:tt)* }) => { $crate::__nuwa_block!($($all)*) };
    ([$($all:tt)*] const { $($x:tt)* }) => { $crate::__nuwa_block!($($all)*) };
    ([$($all:tt)*] return { $($x:tt)* }) => { $crate::__nuwa_block!($($all)*) };
    ([$($all:tt)*] break { $($x:tt)* }) => { $crate::__nuwa_block!($($all)*) };
    ([$($all:tt)*] & unsafe { $($x:tt)* }) => { $crate::__nuwa_block!($($all)*) };
    ([$($all:tt)*] & loop { $($x:tt)* }) => { $crate::__nuwa_block!($($all)*) };
    ([$($all:tt)*] & async { $($x:tt)* }) => { $crate::__nuwa_block!($($all)*) };
    ([$($all:tt)*] & const { $($x:tt)* }) => { $crate::__nuwa_block!($($all)*) };
    ([$($all:tt)*] & return { $($x:tt)* }) => { $crate::__nuwa_block!($($all)*) };
    ([$($all:tt)*] & break { $($x:tt)* }) => { $crate::__nuwa_block!($($all)*) };
    ([$($all:tt)*] &mut unsafe { $($x:tt)* }) => { $crate::__nuwa_block!($($all)*) };
    ([$($all:tt)*] &mut loop { $($x:tt)* }) => { $crate::__nuwa_block!($($all)*) };
    ([$($all:tt)*] &mut async { $($x:tt)* }) => { $crate::__nuwa_block!($($all)*) };
    ([$($all:tt)*] &mut const { $($x:tt)* }) => { $crate::__nuwa_block!($($all)*) };
    ([$($all:tt)*] &mut return { $($x:tt)* }) => { $crate::__nuwa_block!($($all)*) };
    ([$($all:tt)*] &mut break { $($x:tt)* }) => { $crate::__nuwa_block!($($all)*) };
    // `BACKEND { .. }`, whose braces hold statements, not a struct literal's
    // fields: the `=>` is missing.
    ([$($all:tt)*] $name:ident { $($x:tt)* }) => {
        $crate::__nuwa_struct_or_missing_arrow!([$($all)*] ($name) $($x)*)
    };
    ([$($all:tt)*] & $name:ident { $($x:tt)* }) => {
        $crate::__nuwa_struct_or_missing_arrow!([$($all)*] (&$name) $($x)*)
    };
    ([$($all:tt)*] &mut $name:ident { $($x:tt)* }) => {
        $crate::__nuwa_struct_or_missing_arrow!([$($all)*] (&mut $name) $($x)*)
    };
    ([$($all:tt)*] $a:ident . $b:ident { $($x:tt)* }) => {
        $crate::__nuwa_struct_or_missing_arrow!([$($all)*] ($a.$b) $($x)*)
    };
    ([$($all:tt)*] $($x:tt)*) => { $crate::__nuwa_block!($($all)*) };
}

/// `NAME { .. }` without `=>`: a struct literal (its braces begin with a
/// field, `..`, an attribute on a field, or nothing) is a block body that
/// builds it; anything else is a backend with the `=>` left out. Not public
/// API.
#[doc(hidden)]
#[macro_export]
macro_rules! __nuwa_struct_or_missing_arrow {
    ([$($all:tt)*] ($($name:tt)*)) => { $crate::__nuwa_block!($($all)*) };
    ([$($all:tt)*] ($($name:tt)*) $field:ident $(: $($x:tt)*)?) => {
        $crate::__nuwa_block!($($all)*)
    };
    ([$($all:tt)*] ($($name:tt)*) $field:ident , $($x:tt)*) => { $crate::__nuwa_block!($($all)*) };
    ([$($all:tt)*] ($($name:tt)*) $field:literal : $($x:tt)*) => { $crate::__nuwa_block!($($all)*) };
    ([$($all:tt)*] ($($name:tt)*) .. $($x:tt)*) => { $crate::__nuwa_block!($($all)*) };
    // An attribute first: decide by what follows it (a field, or a
    // statement).
    ([$($all:tt)*] ($($name:tt)*) # [$($attr:tt)*] $($x:tt)*) => {
        $crate::__nuwa_struct_or_missing_arrow!([$($all)*] ($($name)*) $($x)*)
    };
    ([$($all:tt)*] ($($name:tt)*) $($x:tt)*) => {
        ::core::compile_error!(concat!(
            "nogil!: `", stringify!($($name)*), " { ... }` needs `=>` between the backend and \
             the block: `nogil!(", stringify!($($name)*), " => { ... })`; the forms are \
             `nogil! { ... }`, `nogil!(hide(name, ...) => { ... })`, `nogil!(OPS => { ... })` \
             and `nogil!(OPS, hide(name, ...) => { ... })`"
        ))
    };
}

/// A block body run with the CPython backend. Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __nuwa_block {
    ($($body:tt)*) => {
        $crate::nuwa_core::nogil!($crate::__nuwa_recorded!($crate::CPython) => { $($body)* })
    };
}

/// `OPS`, recording its blocks in [`stats`](crate::stats) for this call
/// site when the `stats` feature is on. Not public API.
#[cfg(feature = "stats")]
#[doc(hidden)]
#[macro_export]
macro_rules! __nuwa_recorded {
    // A backend of the caller's, borrowed (`nogil!` borrows it too).
    (ref $ops:expr) => {
        $crate::__nuwa_recorded!(&$ops)
    };
    ($ops:expr) => {{
        static __NUWA_SITE: $crate::__private::CallSite =
            $crate::__private::CallSite::new(::core::file!(), ::core::line!(), ::core::column!());
        // A struct expression, not a call, so that a temporary in `OPS`
        // lives as long as the block's binding of it.
        $crate::__private::Recorded {
            ops: $ops,
            site: &__NUWA_SITE,
        }
    }};
}

/// `OPS` itself: the `stats` feature is off. Not public API.
#[cfg(not(feature = "stats"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __nuwa_recorded {
    (ref $ops:expr) => {
        $ops
    };
    ($ops:expr) => {
        $ops
    };
}

#[cfg(test)]
mod tests {
    //! Without Python in the process: everything runs, nothing is released.
    //! Where a test must see a release and a take-back, it uses a mock.

    use super::*;
    use crate::__private::{Details, HeldCheck};
    use nuwa_core::__private::{release, released};

    #[test]
    fn without_python_nothing_is_found() {
        let found = init();
        assert!(!found.python_found(), "{found}");
        assert!(!found.can_release());
        assert_eq!(found.held_check(), HeldCheck::Unavailable);
        assert!(std::ptr::eq(found, init()), "resolution is cached");
    }

    #[test]
    fn without_python_blocks_run_and_release_nothing() {
        // SAFETY: the guard is dropped at the end of the statement.
        assert!(!released(&unsafe { release(CPython) }));
        let value = nogil! { 6 * 7 };
        assert_eq!(value, 42);
        let value = nogil!({ "block" });
        assert_eq!(value, "block");
    }

    #[test]
    fn token_releases_nothing_without_python() {
        // SAFETY: there is no interpreter, so nothing can be released.
        let mut gil = unsafe { GilHeld::new() };
        // SAFETY: dropped at the end of the statement.
        assert!(!released(&unsafe { release(&mut gil) }));
        assert_eq!(nogil!(&mut gil => { 5 }), 5);
        #[allow(
            clippy::unnecessary_mut_passed,
            reason = "the backend is `&mut GilHeld`"
        )]
        let six = (&mut gil).nogil(|_| 6);
        assert_eq!(six, 6);
    }

    #[test]
    fn strict_form_runs_and_takes_nothing_back_without_python() {
        let data = [1u8, 2, 3];
        let (sum, again) = nogil(|gil| {
            let sum: u32 = data.iter().map(|&b| u32::from(b)).sum();
            // Nothing was released and no GIL is held: the part does not run.
            (sum, gil.with_gil(|| unreachable!()))
        });
        assert_eq!(sum, 6);
        assert_eq!(again, Err(GilUnavailable::new()));
        let in_place = nogil! { with_gil! { 1 } };
        assert_eq!(in_place, Err(GilUnavailable::new()));
    }

    #[test]
    fn every_macro_form_compiles_and_runs() {
        let gil = mock::MockGil::new();
        let py = "a Python handle";
        assert_eq!(nogil!(hide(py) => { 1 }), 1);
        assert_eq!(nogil!(gil => { 2 }), 2);
        assert_eq!(nogil!(gil, hide(py) => { 3 }), 3);
        assert_eq!(nogil!({ 4 }), 4);
        let x = 2;
        assert_eq!(nogil! { let y = x + 3; y * 2 }, 10);
        assert_eq!(nogil!(ReleaseIf::new(&gil, true) => { 5 }), 5);
        // SAFETY: a reference made from a live reference.
        assert_eq!(nogil!(unsafe { &*core::ptr::from_ref(&gil) } => { 6 }), 6);
        assert_eq!(py, "a Python handle");
        assert_eq!((gil.releases(), gil.reacquires()), (4, 4));
        gil.done();
    }

    /// Anything a Rust block accepts, first: the CPython form takes it.
    #[test]
    fn any_block_body_is_accepted() {
        #[derive(Debug, PartialEq)]
        struct Point {
            x: i32,
        }
        let x = 1;
        assert_eq!(nogil! { #[allow(unused_variables)] let y = 1; 2 }, 2);
        assert_eq!(nogil! { const N: i32 = 2; N }, 2);
        assert_eq!(nogil! { static S: i32 = 3; S }, 3);
        assert_eq!(nogil! { fn twice(v: i32) -> i32 { v * 2 } twice(2) }, 4);
        assert_eq!(nogil! { use core::cmp::max; max(5, 1) }, 5);
        assert_eq!(nogil! { struct P(i32); P(6).0 }, 6);
        assert_eq!(nogil! { enum E { A = 7 } E::A as i32 }, 7);
        assert_eq!(
            nogil! { trait T { fn v(&self) -> i32 { 8 } } impl T for () {} ().v() },
            8
        );
        assert_eq!(nogil! { type I = i32; let v: I = 9; v }, 9);
        assert_eq!(nogil! { mod m { pub(super) const V: i32 = 10; } m::V }, 10);
        let eleven = nogil! {
            /// # Safety
            /// None: it only returns a number.
            unsafe fn u() -> i32 {
                11
            }
            // SAFETY: `u` has no precondition.
            unsafe { u() }
        };
        assert_eq!(eleven, 11);
        #[allow(unused_unsafe)]
        // SAFETY: nothing unsafe is done.
        let twelve = nogil! { unsafe { 12 } };
        assert_eq!(twelve, 12);
        assert_eq!(nogil! { macro_rules! m { () => { 13 } } m!() }, 13);
        assert_eq!(nogil! { println!("a macro first"); 14 }, 14);
        assert_eq!(nogil! { loop { if x > 0 { break 15 } } }, 15);
        assert_eq!(nogil! { Point { x } }, Point { x: 1 });
        assert_eq!(nogil! { Point { x: 16 } }, Point { x: 16 });
        assert_eq!(nogil! { { 17 } }, 17);
        assert_eq!(nogil! { match x { 1 => 18, _ => 0 } }, 18);
        assert_eq!(nogil! { 'l: { break 'l 19 } }, 19);
        assert_eq!(nogil! { x + 19 }, 20);
        assert_eq!(nogil! {}, ());
        // A block-like statement, then an array: not an index expression.
        fn n0() {}
        let v = [1, 2];
        assert_eq!(nogil! { for _ in 0..1 {} [v[0], v[1]] }, [1, 2]);
        assert_eq!(nogil! { if x > 5 { n0() } [v[1], v[0]] }, [2, 1]);
        #[allow(unused_braces)]
        let braced = nogil! { {} [v[0]] };
        assert_eq!(braced, [1]);
        // Struct literals the near-miss check must not take for a block.
        struct Pair(i32, i32);
        #[allow(clippy::init_numbered_fields)]
        let pair = nogil! { Pair { 0: 3, 1: 4 } };
        assert_eq!((pair.0, pair.1), (3, 4));
        assert_eq!(nogil! { Point { #[allow(unused)] x: 21 } }, Point { x: 21 });
        // `hide` as a function, a variable, a backend's name.
        fn hide(v: &mut i32) {
            *v += 1;
        }
        let mut n = 21;
        assert_eq!(nogil! { hide(&mut n); n }, 22);
        let hide = mock::MockGil::new();
        assert_eq!(nogil!(hide => { 23 }), 23);
        let taken = nogil! { hide };
        taken.done();
        // A keyword and a block, and struct literals with field attributes.
        #[allow(unused_braces, clippy::needless_return)]
        let r = || -> i32 {
            nogil! { return { 24 } }
        };
        assert_eq!(r(), 24);
        let mut n = 24;
        #[allow(unused_braces)]
        let broke = loop {
            n += 1;
            if n == 25 {
                nogil! { break { n } }
            }
        };
        assert_eq!(broke, 25);
        #[derive(Debug, PartialEq)]
        struct Two {
            x: i32,
            y: i32,
        }
        let y = 2;
        #[rustfmt::skip]
        let two = nogil! { Two { #[allow(unused)] x, #[allow(unused)] #[allow(unused)] y } };
        assert_eq!(two, Two { x: 1, y: 2 });
    }

    /// Each exit takes back exactly what it released: a mock counts, so a
    /// guard that never took the GIL back fails here.
    #[test]
    fn exits_leave_through_the_guard() {
        let gil = mock::MockGil::new();
        let first_even = |xs: &[u32]| -> Option<u32> {
            nogil!(gil => {
                for &x in xs {
                    if x % 2 == 0 {
                        return Some(x);
                    }
                }
            });
            None
        };
        assert_eq!(first_even(&[1, 3, 4, 5]), Some(4));
        assert!(gil.is_held());
        assert_eq!(first_even(&[1]), None);
        assert!(gil.is_held());
        let caught = Panicked::catch(|| nogil!(gil => { panic!("inside") }));
        assert!(caught.is_err());
        assert!(gil.is_held());
        assert_eq!((gil.releases(), gil.reacquires()), (3, 3));
        gil.done();
    }

    #[test]
    fn panics_become_errors_around_either_form() {
        let gil = mock::MockGil::new();
        assert_eq!(Panicked::catch(|| nogil(|_| 7)).unwrap(), 7);
        let err = Panicked::catch(|| nogil!(gil => { panic!("boom {}", 1) })).unwrap_err();
        assert_eq!(err.message(), Some("boom 1"));
        gil.done();
    }
}
