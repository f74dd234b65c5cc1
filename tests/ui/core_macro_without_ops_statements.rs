//! The core macro needs a backend: bare statements are a clear error.

use nuwa_core::nogil;

fn main() {
    nogil! { let x = 1; }
}
