//! A `Guard` is not `Send`, even over a backend that is `Send + Sync` with a
//! `Send` state: the GIL must be taken back by the thread that released it.

use nuwa_core::Guard;
use nuwa_std::ThreadCheckedMock;

fn main() {
    let gil: &'static ThreadCheckedMock = Box::leak(Box::new(ThreadCheckedMock::new()));
    // SAFETY: not run; this must not compile.
    let guard: Guard<&'static ThreadCheckedMock> = unsafe { nuwa_core::__private::release(gil) };
    std::thread::spawn(move || drop(guard)).join().unwrap();
}
