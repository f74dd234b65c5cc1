//! The core macro needs a backend: a bare block is a clear error.

use nuwa_core::nogil;

fn main() {
    let _ = nogil!({ 1 });
}
