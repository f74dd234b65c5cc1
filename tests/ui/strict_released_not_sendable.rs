//! The strict closure's `Released` stays with it: a nested strict block
//! cannot capture it (it is not `Send`), so it cannot take back a GIL that is
//! not its own.

fn main() {
    nuwa_ffi::nogil(|outer| {
        nuwa_ffi::nogil(|_| outer.with_gil(|| ()));
    });
}
