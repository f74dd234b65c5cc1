//! `nogil!`, `with_gil!`, and their hidden helpers.

/// Runs a block with the GIL released and takes it back on every way out.
///
/// ```text
/// nogil!(OPS => { BODY })
/// nogil!(OPS, hide(name, ...) => { BODY })
/// ```
///
/// `OPS` is any [`GilOps`](crate::GilOps) value or place; it is borrowed, not
/// moved, so a mock can be inspected after the block. The macro evaluates to
/// the value of `BODY`.
///
/// The block is expanded in place behind a [`Guard`](crate::Guard), not
/// wrapped in a closure, so `return`, `?`, and `break`/`continue` to labels
/// outside it work as in any block, and each of them, like an unwinding
/// panic, takes the GIL back exactly once on its way out. If the thread does
/// not hold the GIL (a nested block, a thread Python does not know), nothing
/// is released and the block simply runs.
///
/// # What the block must not do, and what is checked
///
/// While the block runs, the thread does not hold the GIL: the block must not
/// touch Python objects or call the Python API, except inside a
/// [`with_gil!`](crate::with_gil!) part, which takes the GIL back.
///
/// - **`.await` is rejected.** A future suspended inside the block would
///   return to its executor, or to Python, without the GIL, and
///   `mem::forget` of it would never take the GIL back. Every `.await`
///   written in the block (in nested blocks, closures and macro arguments
///   too) is a compile error; so is any `async` in it. Two kinds of `.await`
///   cannot be seen by a macro: one that a macro called in the block
///   generates itself, and one inside a fragment (`$e:expr`, `$b:block`)
///   that another macro forwards into the block. The
///   [lint setup in the README](https://github.com/nuwa-rs/nuwa#async-code)
///   (clippy's `await_holding_invalid_type` for [`Guard`](crate::Guard))
///   catches both, and [`Nogil::nogil`](crate::Nogil::nogil) is the form for `async`
///   code.
/// - **The guard stays in the block.** The block cannot name it; what
///   [`with_gil!`](crate::with_gil!) and [`released!`](crate::released!) use
///   is a `&mut` to it, so a closure (even a `move` one) that uses them
///   cannot leave the block, and forgetting such a closure forgets a
///   reference, not the guard.
/// - **`hide(a, b)` checks names, not types.** Inside the block, each named
///   binding is shadowed by a
///   [`HiddenWhileGilReleased`](crate::HiddenWhileGilReleased), so writing
///   that name (to call, pass, format or borrow it) fails to compile. It does
///   not reach the handle by any other path: a closure or reference made
///   before the block, a field of another binding (`ctx.py`), what a method
///   of another binding returns, a global, a `Copy` handle copied out of a
///   `with_gil!` part (`let p = with_gil! { *py }`). `hide(self)` is a
///   compile error that says what to write instead. For a guarantee by type,
///   use the strict form [`Nogil::nogil`](crate::Nogil::nogil), whose closure must be
///   `Send`.
///
/// # Examples
///
/// ```
/// use nuwa_core::{mock::MockGil, nogil};
///
/// fn sum_of_squares(gil: &MockGil, data: &[f64]) -> f64 {
///     let total = nogil!(gil => {
///         data.iter().map(|x| x * x).sum::<f64>()
///     });
///     total.sqrt()
/// }
///
/// let gil = MockGil::new();
/// assert_eq!(sum_of_squares(&gil, &[3.0, 4.0]), 5.0);
/// assert_eq!((gil.releases(), gil.reacquires()), (1, 1));
/// ```
///
/// `?` leaves the block and the function, with the GIL taken back first:
///
/// ```
/// use nuwa_core::{mock::MockGil, nogil};
///
/// fn parse_all(gil: &MockGil, items: &[&str]) -> Result<u64, core::num::ParseIntError> {
///     nogil!(gil => {
///         let mut sum = 0;
///         for item in items {
///             sum += item.parse::<u64>()?;
///         }
///         Ok(sum)
///     })
/// }
///
/// let gil = MockGil::new();
/// assert!(parse_all(&gil, &["1", "x"]).is_err());
/// gil.done(); // held again, one release, one reacquire
/// ```
///
/// A hidden binding cannot be used inside the block:
///
/// ```compile_fail
/// use nuwa_core::{mock::MockGil, nogil};
/// type PyObject = core::ffi::c_void;
/// fn needs_gil(_: *mut PyObject) {}
///
/// let (gil, obj) = (MockGil::new(), core::ptr::null_mut::<PyObject>());
/// nogil!(gil, hide(obj) => { needs_gil(obj) }); // error: found `HiddenWhileGilReleased<'_, *mut c_void>`
/// ```
///
/// With PyO3, no PyO3 code may run inside the block (`Python::attach`, a
/// dropped `Py<T>`, `py.detach`, any `Bound` method), hidden or not: PyO3
/// still counts the thread as attached and crashes the interpreter. Release
/// with PyO3's `py.detach` there, or through a [`Nogil`](crate::Nogil) built
/// on it.
///
/// Nor can the block await:
///
/// ```compile_fail
/// use nuwa_core::{mock::MockGil, nogil};
/// async fn work(gil: &MockGil, ready: impl core::future::Future<Output = u32>) -> u32 {
///     nogil!(gil => { ready.await }) // error: `.await` inside a nogil! block
/// }
/// ```
#[macro_export]
macro_rules! nogil {
    ($ops:expr => { $($body:tt)* }) => {
        $crate::__nuwa_nogil!(($) $ops, [] { $($body)* })
    };
    ($ops:expr, hide($($hidden:ident),+ $(,)?) => { $($body:tt)* }) => {
        $crate::__nuwa_nogil!(($) $ops, [$($hidden),+] { $($body)* })
    };
    // Near-misses: say what the accepted forms are.
    ($ops:expr, hide $($rest:tt)*) => {
        ::core::compile_error!(
            "nogil!: `hide` takes names in parentheses, then `=>` and the block in braces: \
             `nogil!(OPS, hide(obj, callback) => { ... })`"
        )
    };
    ($ops:expr => $($rest:tt)*) => {
        ::core::compile_error!(
            "nogil!: after `=>` comes the block, in braces, and nothing else: \
             `nogil!(OPS => { ... })`"
        )
    };
    ($ops:expr, $($rest:tt)*) => {
        ::core::compile_error!(
            "nogil!: after the backend comes `=> { ... }`, or `, hide(name, ...) => { ... }`"
        )
    };
    ($($tokens:tt)*) => {
        ::core::compile_error!(
            "nuwa_core::nogil! needs a backend and a block: `nogil!(OPS => { ... })` \
             or `nogil!(OPS, hide(name, ...) => { ... })`; \
             for CPython, `nuwa_ffi::nogil! { ... }` supplies the backend"
        )
    };
}

/// Takes the GIL back for a part of a [`nogil!`](crate::nogil!) block, then
/// releases it again: Cython's `with gil:` inside `with nogil:`.
///
/// ```text
/// nogil!(OPS, hide(obj) => {
///     ...                              // GIL released
///     let r = with_gil! { BODY };      // GIL held; `obj` usable again
///     ...                              // GIL released again
/// })
/// ```
///
/// Write it **unqualified**, inside the braces of a `nogil!` block: each
/// block defines its own `with_gil!`, bound to its own guard. (This item,
/// `nuwa_core::with_gil!`, only exists to document it and to give a clear
/// error when it is used anywhere else.)
///
/// It evaluates to `Result<T, GilUnavailable>`, where `T` is the value of
/// `BODY`:
///
/// - If the block released the GIL, it restores exactly the thread state the
///   block saved (so it is right in a subinterpreter), runs `BODY` in place,
///   and releases again on every way out of `BODY`: its end, `return`, `?`,
///   `break`, a panic. `Ok(value)`.
/// - If the block released nothing but the thread holds the GIL (a block
///   that chose not to release, [`ReleaseIf`](crate::ReleaseIf)), `BODY` just
///   runs: `Ok(value)`.
/// - Otherwise (a nested block, a thread Python does not know, no Python)
///   `BODY` does not run: `Err(GilUnavailable)`.
///
/// Inside `BODY`, the names hidden by the block's `hide(...)` are usable
/// again, as shared references (`&T`) that live no longer than `BODY`: it
/// is Python-side code. Write `*obj` where the value is needed. Calling
/// `with_gil!` inside `BODY` again does not compile (the guard is borrowed);
/// the GIL is held there anyway. A `move` closure that uses `with_gil!`
/// takes the block's handle with it: later parts of the same block then
/// need a closure that is not `move`.
///
/// # Examples
///
/// ```
/// use nuwa_core::{mock::MockGil, nogil};
///
/// let gil = MockGil::new();
/// let log = std::cell::RefCell::new(Vec::new()); // stands for a Python list
/// let total = nogil!(gil, hide(log) => {
///     let mut total = 0u64;
///     for chunk in 0..3u64 {
///         total += chunk * 100; // the work, GIL released
///         with_gil! { log.borrow_mut().push(total) }.unwrap(); // report, GIL held
///     }
///     total
/// });
/// assert_eq!(total, 300);
/// assert_eq!(*log.borrow(), [0, 100, 300]);
/// assert_eq!((gil.releases(), gil.reacquires()), (4, 4));
/// gil.done();
/// ```
///
/// Used outside a block, it does not compile:
///
/// ```compile_fail
/// use nuwa_core::with_gil;
/// let _ = with_gil! { 1 }; // error: with_gil! exists only inside a nogil! block
/// ```
#[macro_export]
macro_rules! with_gil {
    ($($tokens:tt)*) => {
        ::core::compile_error!(
            "with_gil! takes the GIL back inside a nogil! block, and exists only there: \
             write it unqualified (`with_gil! { ... }`, not `nuwa_ffi::with_gil!`) inside \
             the braces of a nogil! block; in the strict form, use the closure's argument: \
             `ops.nogil(|gil| gil.with_gil(|| ...))`"
        )
    };
}

/// The expansion of `nogil!`. Not public API.
///
/// `$d` is a `$` token, for the local macros' own metavariables.
#[doc(hidden)]
#[macro_export]
macro_rules! __nuwa_nogil {
    (($d:tt) $ops:expr, [$($hidden:ident),*] { $($body:tt)* }) => {{
        $crate::__nuwa_no_await! { $($body)* }
        let __nuwa_ops = &$ops;
        // SAFETY: the guard is a temporary that lives to the end of this
        // block, reached only through a `&mut` that the block cannot name
        // (macro hygiene); `with_gil!`/`released!()` reborrow it, so even a
        // `move` closure captures only a reference, which cannot leave the
        // block: the guard is neither moved nor leaked. The block cannot
        // `.await` (rejected above), so it cannot be suspended. The guard is
        // dropped on this thread whichever way the block is left.
        let __nuwa_guard = &mut unsafe { $crate::__private::release(__nuwa_ops) };
        $( $crate::__nuwa_hide_one!($hidden); )*
        #[allow(unused_macros)]
        macro_rules! __nuwa_unhide_ident {
            $( ($d reentered:ident $d name:ident $hidden) => {
                #[allow(unused_variables)]
                let $d name = $crate::__private::Unhide::unhide(&$d name, &$d reentered);
            }; )*
            ($d reentered:ident $d name:ident $d other:ident) => {};
        }
        #[allow(unused_macros)]
        macro_rules! with_gil {
            ($d($d part:tt)*) => {{
                // Bound, not a temporary of the `match`: the GIL is released
                // again at the end of this block, not at the end of the
                // enclosing statement, so that two parts fit in one
                // expression (`with_gil! {..}? + with_gil! {..}?`).
                let __nuwa_gil_taken_back = $crate::__private::reenter(&mut *__nuwa_guard);
                match __nuwa_gil_taken_back {
                    // A part that diverges (`return`, `?`, a panic) makes the
                    // `Ok` unreachable; that is no mistake of the caller's.
                    #[allow(unreachable_code)]
                    ::core::result::Result::Ok(__nuwa_reentered) => {
                        // SAFETY: bound in this arm, which the part cannot
                        // name (macro hygiene): it is not moved, and is
                        // dropped at the end of the arm.
                        unsafe { $crate::__private::Reentered::begin(&__nuwa_reentered) };
                        $crate::__nuwa_unhide_scan! { (__nuwa_reentered) $d($d part)* }
                        // The part's own temporaries end here, the GIL held.
                        // (A part may diverge: `return`, `?`, a panic.)
                        #[allow(clippy::diverging_sub_expression)]
                        let __nuwa_value = { $d($d part)* };
                        ::core::result::Result::Ok(__nuwa_value)
                    }
                    ::core::result::Result::Err(unavailable) => {
                        ::core::result::Result::Err(unavailable)
                    }
                }
            }};
        }
        #[allow(unused_macros)]
        macro_rules! released {
            () => {
                $crate::Released::new(&mut *__nuwa_guard)
            };
        }
        { $($body)* }
    }};
}

/// What takes the GIL back inside a [`nogil!`](crate::nogil!) block, as a
/// value: the same [`Released`](crate::Released) a strict-form closure gets.
///
/// ```text
/// nogil!(OPS => {
///     let mut gil = released!();     // Released<'_, Gil>, borrowing this block's guard
///     gil.with_gil(|| callback())?;  // or hand `&mut gil` to code written for the strict form
/// })
/// ```
///
/// Like [`with_gil!`](crate::with_gil!), write it **unqualified** inside the
/// braces of a `nogil!` block; this item only documents it and gives a clear
/// error elsewhere. Use it to call library code that takes a
/// `&mut Released` (a progress reporter; `nuwa_ffi`'s signal check, which
/// takes the interpreter's `Released<'_, CPython>`) from an in-place block; `with_gil!` is simpler for code written in the block itself (and
/// gives the hidden names back, which a `Released` cannot).
///
/// # Examples
///
/// ```
/// use nuwa_core::{mock::MockGil, nogil, Nogil, Released};
///
/// /// Written once for both forms (and any backend: it calls no Python).
/// fn report<L>(gil: &mut Released<'_, L>, log: &mut Vec<u32>, step: u32) {
///     gil.with_gil(|| log.push(step)).unwrap();
/// }
///
/// let gil = MockGil::new();
/// let mut log = Vec::new();
/// nogil!(gil => {
///     for step in 0..2 {
///         report(&mut released!(), &mut log, step);
///     }
/// });
/// gil.nogil(|released| report(released, &mut log, 2));
/// assert_eq!(log, [0, 1, 2]);
/// assert_eq!((gil.releases(), gil.reacquires()), (5, 5));
/// ```
#[macro_export]
macro_rules! released {
    ($($tokens:tt)*) => {
        ::core::compile_error!(
            "released!() gives the GIL-taking handle of a nogil! block, and exists only there: \
             write it unqualified (`released!()`, not `nuwa_ffi::released!()`) inside the \
             braces of a nogil! block; the strict form's closure gets one as its argument"
        )
    };
}

/// Rejects `.await` (and `async` blocks) anywhere in the tokens of a block.
/// Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __nuwa_no_await {
    ($($token:tt)*) => { $( $crate::__nuwa_no_await_token! { $token } )* };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __nuwa_no_await_token {
    (async) => {
        ::core::compile_error! {
            "`async` inside a nogil! block: a future made there could be polled, and \
             suspended, with the GIL released. Make the future outside the block, or use the \
             strict form `ops.nogil(|gil| ...)` (`nuwa_ffi::nogil(|gil| ...)`)."
        }
    };
    (await) => {
        ::core::compile_error! {
            "`.await` inside a nogil! block: the future could be suspended there with the GIL \
             released, and its thread would go back to the executor or to Python without it. \
             Await outside the block, or use the strict form `ops.nogil(|gil| ...)` \
             (`nuwa_ffi::nogil(|gil| ...)`), whose closure cannot await."
        }
    };
    (( $($token:tt)* )) => { $crate::__nuwa_no_await! { $($token)* } };
    ([ $($token:tt)* ]) => { $crate::__nuwa_no_await! { $($token)* } };
    ({ $($token:tt)* }) => { $crate::__nuwa_no_await! { $($token)* } };
    ($other:tt) => {};
}

/// Shadows one name named in `hide(...)`. Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __nuwa_hide_one {
    (self) => {
        ::core::compile_error!(
            "hide(self) cannot work: Rust does not let a block shadow `self`. Take what \
             holds the GIL out of `self` before the block and hide that \
             (`let obj = self.obj; nogil!(hide(obj) => { ... })`), or use the strict form \
             `ops.nogil(|gil| ...)`, whose closure cannot capture a `self` that holds a \
             Python handle (it is not `Send`)"
        );
    };
    ($name:ident) => {
        #[allow(unused_variables)]
        let $name = $crate::__private::hide(&$name);
    };
}

/// Gives the hidden names back in a `with_gil!` part: every identifier of
/// the part that a `hide(...)` named is bound again, with the part's own
/// token (so that the part's uses resolve to it). Not public API.
#[doc(hidden)]
#[macro_export]
macro_rules! __nuwa_unhide_scan {
    (($reentered:ident) $($token:tt)*) => {
        $( $crate::__nuwa_unhide_token! { ($reentered) $token } )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __nuwa_unhide_token {
    (($r:ident) ( $($token:tt)* )) => { $crate::__nuwa_unhide_scan! { ($r) $($token)* } };
    (($r:ident) [ $($token:tt)* ]) => { $crate::__nuwa_unhide_scan! { ($r) $($token)* } };
    (($r:ident) { $($token:tt)* }) => { $crate::__nuwa_unhide_scan! { ($r) $($token)* } };
    (($r:ident) $name:ident) => { __nuwa_unhide_ident! { $r $name $name } };
    (($r:ident) $other:tt) => {};
}
