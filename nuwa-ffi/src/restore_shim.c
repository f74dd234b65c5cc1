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
 * A normal return clears the flag first, so the cleanup does nothing (the
 * compiler folds the flag away: the frame costs the call, one stack
 * adjustment and the return). The state comes first, the function second:
 * the state is then already in the register the call passes it in. The
 * restore function is passed by reference, as the address of nuwa's plan,
 * which the caller has in a register already.
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
void nuwa_ffi_0_1_restore_thread(void *tstate, const nuwa_restore_fn *restore) {
    int unwinding __attribute__((cleanup(nuwa_park_if_unwinding))) = 1;
    (*restore)(tstate);
    unwinding = 0;
}

/* The same for PyThreadState_Swap(tstate), which nuwa uses to take the GIL
 * back on CPython 3.13 (it attaches the state exactly as
 * PyEval_RestoreThread does, after detaching any state left attached, and
 * returns that one). */
__attribute__((visibility("hidden")))
void *nuwa_ffi_0_1_swap_thread(void *tstate, nuwa_swap_fn swap) {
    int unwinding __attribute__((cleanup(nuwa_park_if_unwinding))) = 1;
    void *previous = swap(tstate);
    unwinding = 0;
    return previous;
}

/*
 * Weak references to CPython's functions, for a program that links
 * libpython3.X.a into the same object as nuwa's code without exporting its
 * symbols (no --export-dynamic): dlsym cannot find them there, but the
 * static linker binds these references to them. Where nothing defines them,
 * they are null. nuwa uses an address only if it lies inside a PT_LOAD
 * segment of the very object that contains this code, as dl_iterate_phdr
 * reports it (see nuwa_weak_linked in build.rs and src/resolve/unix.rs; it
 * works in a fully static program, where dladdr knows no object): in a
 * shared object the dynamic loader may bind a
 * weak reference to whatever the global scope exports, which this check
 * rejects, and two static libpythons cannot be linked into one object, so
 * the functions come from one interpreter.
 *
 * Only the addresses are taken; nothing here calls them.
 *
 * In a shared object (every extension module) each weak reference is a
 * dynamic symbol that the loader binds when it loads the object: one lookup
 * through every loaded object per name, about 600 instructions on every
 * import, most of them for names no object defines (the table holds both
 * names of a function that was renamed), only for nuwa to reject an address
 * outside its own object. So the table holds only what the lookup needs,
 * and the names are compared here rather than with strcmp, one imported
 * symbol fewer. Py_Version (3.11+) stays although Py_GetVersion tells the
 * same: 3.8-3.11 write Py_GetVersion's text into one static buffer again at
 * every call, starting with a NUL, so while another thread is inside it
 * (a Cython module's import calls it) the text may read empty and the
 * version unknown (real_python's static_embedding_version_race). Protected or hidden references would leave no
 * dynamic symbol where nothing defines the function, but the visibility
 * merges with every other reference to the name in the link: a crate that
 * calls the function itself (PyO3's detach calls PyEval_SaveThread, pyo3-ffi
 * users Py_GetVersion) then fails to link ("undefined protected symbol",
 * lld), and a static libpython's exports would change.
 */
#if defined(NUWA_WEAK_LINKED)
#include <stddef.h>

#define NUWA_WEAK(name) extern void name(void) __attribute__((weak));
NUWA_WEAK(PyEval_SaveThread)
NUWA_WEAK(PyEval_RestoreThread)
NUWA_WEAK(PyThreadState_GetUnchecked)
NUWA_WEAK(_PyThreadState_UncheckedGet)
NUWA_WEAK(PyGILState_GetThisThreadState)
NUWA_WEAK(PyThreadState_Swap)
NUWA_WEAK(PyErr_CheckSignals)
NUWA_WEAK(Py_IsFinalizing)
NUWA_WEAK(_Py_IsFinalizing)
NUWA_WEAK(Py_GetVersion)
extern const unsigned long Py_Version __attribute__((weak));

/* Whether two NUL-terminated strings are equal. */
static int nuwa_same_name(const char *a, const char *b) {
    while (*a != '\0' && *a == *b) {
        a++;
        b++;
    }
    return *a == *b;
}

/* The address the static link gave `name` (null if none, or not one of the
 * names above). */
__attribute__((visibility("hidden")))
const void *nuwa_ffi_0_1_linked(const char *name) {
#define NUWA_ENTRY(sym) {#sym, (const void *)&sym}
    const struct {
        const char *name;
        const void *addr;
    } table[] = {
        NUWA_ENTRY(PyEval_SaveThread),
        NUWA_ENTRY(PyEval_RestoreThread),
        NUWA_ENTRY(PyThreadState_GetUnchecked),
        NUWA_ENTRY(_PyThreadState_UncheckedGet),
        NUWA_ENTRY(PyGILState_GetThisThreadState),
        NUWA_ENTRY(PyThreadState_Swap),
        NUWA_ENTRY(PyErr_CheckSignals),
        NUWA_ENTRY(Py_IsFinalizing),
        NUWA_ENTRY(_Py_IsFinalizing),
        NUWA_ENTRY(Py_GetVersion),
        NUWA_ENTRY(Py_Version),
    };
#undef NUWA_ENTRY
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (nuwa_same_name(name, table[i].name)) {
            return table[i].addr;
        }
    }
    return 0;
}
#endif

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
