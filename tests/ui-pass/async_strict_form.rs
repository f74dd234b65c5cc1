//! The form for async code: the strict closure, awaited around, not inside.
//! (An in-place block without `.await` compiles in an `async fn` too.)

use nuwa_core::Nogil;
use nuwa_std::ThreadCheckedMock;

async fn fetch() -> Vec<u32> {
    vec![1, 2, 3]
}

async fn work(gil: &ThreadCheckedMock) -> u32 {
    let data = fetch().await;
    let sum = gil.nogil(|_| data.iter().sum::<u32>());
    let doubled = nuwa_core::nogil!(gil => { sum * 2 });
    fetch().await.len() as u32 + doubled
}

fn main() {
    let _ = work;
}
