//! `#![forbid(unsafe_code)]` sees the caller's own `unsafe` inside a block,
//! whatever the body begins with: the macro passes the caller's tokens on
//! and never writes an `unsafe` of its own in their place. (nuwa's own
//! unsafe code in the expansion is not the caller's, and is not reported.)

#![forbid(unsafe_code)]

fn main() {
    let a = nuwa_ffi::nogil! { unsafe { 1 } };
    let b = nuwa_ffi::nogil! {
        #[allow(unused_variables)]
        let x = 1;
        unsafe { 2 }
    };
    let c = nuwa_ffi::nogil! {
        unsafe fn three() -> i32 {
            3
        }
        0
    };
    let _ = (a, b, c);
}
