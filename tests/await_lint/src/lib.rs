//! Awaits that `nogil!`'s token scan cannot see: an `.await` that comes from
//! a macro expanded inside the block, or one inside a fragment that another
//! macro forwards into a block. `cargo clippy` with this crate's
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

/// Wraps a block around what it is given: `$body` reaches `nogil!` as one
/// opaque fragment, which the token scan cannot look into.
macro_rules! off_the_gil {
    ($body:expr) => {
        nuwa_ffi::nogil! { $body }
    };
}

/// The `.await` is written by the caller, in the fragment.
pub async fn awaits_in_a_forwarded_fragment() -> u32 {
    off_the_gil!(ready().await + 1)
}

/// A control: awaiting outside any block is fine.
pub async fn awaits_outside() -> u32 {
    let value = ready().await;
    nuwa_ffi::nogil! { value + 1 }
}

/// Inside a `with_gil!` part: the block's guard is alive there too, so the
/// one type in `clippy.toml` covers parts.
pub async fn awaits_inside_a_part() -> u32 {
    nuwa_ffi::nogil! {
        with_gil! { wait_for!(ready()) }.unwrap_or(0)
    }
}
