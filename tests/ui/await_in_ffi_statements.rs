//! The same through `nuwa_ffi::nogil! { ... }`, the CPython form the README
//! shows, with the `.await` in a nested block.

async fn next() -> u32 {
    1
}

async fn work() -> u32 {
    nuwa_ffi::nogil! {
        let mut total = 0;
        for _ in 0..3 {
            if total < 10 {
                total += next().await;
            }
        }
        total
    }
}

fn main() {
    let _ = work;
}
