/*
 * Calls PyEval_RestoreThread so that a forced unwind started inside it never
 * reaches Rust frames.
 *
 * CPython 3.13 and older end a thread that tries to take the GIL back while
 * another thread is finalizing the interpreter: PyEval_RestoreThread calls
 * PyThread_exit_thread, which on glibc is pthread_exit, a forced unwind of
 * the whole stack. Unwinding Rust frames that way is undefined behaviour
 * (and the `extern "C"` entry point of an extension turns it into an abort).
 *
 * This frame is compiled with -fexceptions, so a forced unwind runs its
 * cleanup, which parks the thread for good, as CPython 3.14 does itself.
 * The frames above it (CPython's) are discarded; no Rust frame is unwound.
 * A normal return clears the flag first, so the cleanup does nothing.
 */
#include <unistd.h>

typedef void (*nuwa_restore_fn)(void *tstate);
typedef void *(*nuwa_swap_fn)(void *tstate);

static void nuwa_park_if_unwinding(const int *unwinding) {
    if (*unwinding) {
        for (;;) {
            pause();
        }
    }
}

__attribute__((visibility("hidden")))
void nuwa_ffi_0_1_restore_thread(nuwa_restore_fn restore, void *tstate) {
    int unwinding __attribute__((cleanup(nuwa_park_if_unwinding))) = 1;
    restore(tstate);
    unwinding = 0;
}

/* The same for PyThreadState_Swap(tstate), which nuwa uses to take the GIL
 * back on CPython 3.13 (it attaches the state exactly as
 * PyEval_RestoreThread does, after detaching any state left attached, and
 * returns that one). */
__attribute__((visibility("hidden")))
void *nuwa_ffi_0_1_swap_thread(nuwa_swap_fn swap, void *tstate) {
    int unwinding __attribute__((cleanup(nuwa_park_if_unwinding))) = 1;
    void *previous = swap(tstate);
    unwinding = 0;
    return previous;
}

/* Parks the calling thread for good. nuwa calls it at the end of a with_gil
 * part that finds the thread without the GIL while the interpreter
 * finalizes: CPython ended the thread inside the part (pthread_exit, a forced
 * unwind, which has already run the part's own cleanups) and the unwind must
 * go no further. */
__attribute__((visibility("hidden"), noreturn))
void nuwa_ffi_0_1_park_forever(void) {
    for (;;) {
        pause();
    }
}
