//! Awaits that `nogil!`'s token scan cannot see: the `.await` comes from a
//! macro expanded inside the block. `cargo clippy` with this crate's
//! `clippy.toml` must report `clippy::await_holding_invalid_type` here.

/// Awaits its argument; the `.await` is in this macro, not in the block.
macro_rules! wait_for {
    ($future:expr) => {
        $future.await
    };
}

async fn ready() -> u32 {
    1
}

/// The block's guard is alive across the suspension point.
pub async fn awaits_inside_a_block() -> u32 {
    nuwa_ffi::nogil! {
        let value = wait_for!(ready());
        value + 1
    }
}

/// The same with a mock backend, through the core macro.
pub async fn awaits_inside_a_mock_block(gil: &nuwa_ffi::ThreadCheckedMock) -> u32 {
    nuwa_ffi::nogil!(gil => { wait_for!(ready()) })
}

/// A control: awaiting outside any block is fine.
pub async fn awaits_outside() -> u32 {
    let value = ready().await;
    nuwa_ffi::nogil! { value + 1 }
}
