//! An in-place block takes anything a Rust block takes, first statement
//! included: attributes, items, `const`, `fn`, `use`, `macro_rules!`, a
//! macro call, an `unsafe` block, a struct literal as the value.

#[derive(Debug, PartialEq)]
struct Point {
    x: i32,
}

fn main() {
    let x = 1;
    let gil = nuwa_ffi::mock::MockGil::new();
    let a = nuwa_ffi::nogil! {
        #[allow(unused_variables)]
        let unused = 1;
        2
    };
    let b = nuwa_ffi::nogil! { const N: i32 = 3; N };
    let c = nuwa_ffi::nogil! { fn twice(v: i32) -> i32 { v * 2 } twice(2) };
    let d = nuwa_ffi::nogil! { use core::cmp::max; max(5, 1) };
    let e = nuwa_ffi::nogil! { macro_rules! six { () => { 6 } } six!() };
    let f = nuwa_ffi::nogil! { println!("a macro call first"); 7 };
    let g = nuwa_ffi::nogil! { Point { x } };
    let h = nuwa_ffi::nogil! { static S: i32 = 8; S };
    let i = nuwa_ffi::nogil!(gil => { #[allow(unused_variables)] let unused = 1; 9 });
    let j = nuwa_ffi::nogil!(gil, hide(x) => { const T: i32 = 10; T });
    assert_eq!((a, b, c, d, e, f, h, i, j), (2, 3, 4, 5, 6, 7, 8, 9, 10));
    assert_eq!(g, Point { x: 1 });
    gil.done();
}
