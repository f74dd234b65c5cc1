//! `hide(..)` takes binding names only: a field or an expression in it is a
//! near-miss error, not a call of some function `hide`.

struct S {
    x: i32,
}

fn main() {
    let s = S { x: 1 };
    let _ = nuwa_ffi::nogil!(hide(s.x) => { 1 });
    let _ = s.x;
}
