//! The `=>` left out after a backend that is a reference or a field: the
//! same near-miss error as after a plain name.

struct Ctx {
    gil: nuwa_ffi::mock::MockGil,
}

impl Ctx {
    fn work(&self) -> i32 {
        nuwa_ffi::nogil!(self.gil {
            let a = 1;
            a
        })
    }
}

fn main() {
    let gil = nuwa_ffi::mock::MockGil::new();
    let _ = nuwa_ffi::nogil!(&gil { let a = 1; a });
    let _ = nuwa_ffi::nogil!(&mut gil { let a = 1; a });
    let _ = Ctx { gil }.work();
}
