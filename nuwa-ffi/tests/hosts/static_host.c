/*
 * A program with CPython linked in statically (libpython3.X.a, no
 * --export-dynamic), so that nuwa finds none of its functions, and a
 * built-in module, nuwa_embed, whose functions run nuwa blocks (from the
 * static library of tests/hosts/testlib). Built and run by real_python's
 * embedding scenarios; PYTHONHOME must point at the interpreter's prefix.
 *
 *   static_host provide   hand nuwa the functions, then prove a block
 *                         releases; provide again (same: ok; other: error)
 *   static_host linked    no handover: nuwa finds the functions linked in
 *                         (its weak references), and the block releases
 *   static_host control   no block: the same wait with the GIL held times
 *                         out (the proof can fail)
 *   static_host late      a block first (it releases: linked in), then the
 *                         handover: a clear error
 *   static_host version_race
 *                         nuwa's first block while another thread is inside
 *                         Py_GetVersion (see race_snprintf below): the
 *                         version must still be found
 *
 * Prints "key: value" lines; exits 0 if the mode ran to the end.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int nuwa_testlib_block_wait(int entered, int done, int timeout_ms);
int nuwa_testlib_wait_holding(int entered, int done, int timeout_ms);
size_t nuwa_testlib_describe(char *buf, size_t len);
int nuwa_testlib_via(void);
int nuwa_testlib_provide(int major, int minor, const void *save, const void *restore,
                         const void *current, const void *gilstate_this_thread,
                         const void *is_finalizing, char *err, size_t err_len);

#if PY_VERSION_HEX >= 0x030d0000
#define CURRENT_STATE ((const void *)&PyThreadState_GetUnchecked)
#define IS_FINALIZING ((const void *)&Py_IsFinalizing)
#else
#define CURRENT_STATE ((const void *)&_PyThreadState_UncheckedGet)
#define IS_FINALIZING ((const void *)&_Py_IsFinalizing)
#endif

/* ---- version_race ----
 * CPython 3.8-3.11 write Py_GetVersion's text into one static buffer again
 * at every call (PyOS_snprintf; glibc's vsnprintf first stores a NUL at its
 * start), so a reader on one thread can find it empty while another thread
 * is inside Py_GetVersion (3.12.1+ write it once). The host is linked with
 * --wrap=PyOS_snprintf: while `race_armed`, the version's snprintf on the
 * other thread begins (the NUL) right after the main thread's has ended and
 * before the main thread reads the text, the interleaving made certain. */
static atomic_int race_armed;
static atomic_int race_entered;
static pthread_t race_main;
static sem_t race_in, race_start, race_ack, race_go;

/* Waits for `s`, at most 10 s; 0 if it timed out. */
static int race_wait(sem_t *s) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    int r;
    while ((r = sem_timedwait(s, &until)) != 0 && errno == EINTR) {}
    return r == 0;
}

/* The other thread's write begins (at most once); returns once it did. */
static void race_let_other_start(void) {
    if (atomic_exchange(&race_armed, 0)) {
        sem_post(&race_start);
        race_wait(&race_ack);
    }
}

int __wrap_PyOS_snprintf(char *str, size_t size, const char *format, ...);
int __wrap_PyOS_snprintf(char *str, size_t size, const char *format, ...) {
    int version = race_armed && size > 0 && strcmp(format, "%.80s (%.80s) %.80s") == 0;
    int main_thread = pthread_equal(pthread_self(), race_main);
    if (version && !main_thread) {
        /* The other thread: its write begins once the main thread's ended. */
        race_entered = 1;
        sem_post(&race_in);
        if (race_wait(&race_start)) {
            str[0] = '\0';
            sem_post(&race_ack);
            race_wait(&race_go);
        }
    }
    va_list va;
    va_start(va, format);
    int n = PyOS_vsnprintf(str, size, format, va);
    va_end(va);
    if (version && main_thread) race_let_other_start();
    return n;
}

static void *race_other(void *arg) {
    (void)arg;
    (void)Py_GetVersion();
    /* Returned without writing (3.12.1+): the main thread goes on. */
    if (!race_entered) sem_post(&race_in);
    return NULL;
}

/* Prints "race: raced" (the interleaving happened), or "race: once" (this
 * CPython's Py_GetVersion writes only once: nothing to race). */
static int version_race(int (*run_block)(void)) {
    pthread_t other;
    if (sem_init(&race_in, 0, 0) || sem_init(&race_start, 0, 0) || sem_init(&race_ack, 0, 0) ||
        sem_init(&race_go, 0, 0))
        return 1;
    race_main = pthread_self();
    race_armed = 1;
    if (pthread_create(&other, NULL, race_other, NULL) != 0) return 1;
    if (!race_wait(&race_in)) return 1;
    int rc = 0;
    if (race_entered) {
        /* nuwa's first lookup runs in this block, on this thread. */
        rc = run_block();
        /* If nuwa did not read Py_GetVersion's text, the other thread is
         * still waiting to begin. */
        race_let_other_start();
        sem_post(&race_go);
    }
    pthread_join(other, NULL);
    printf("race: %s\n", race_entered ? "raced" : "once");
    return rc;
}

static PyObject *block_wait(PyObject *self, PyObject *args) {
    int entered, done, timeout_ms;
    (void)self;
    if (!PyArg_ParseTuple(args, "iii", &entered, &done, &timeout_ms)) return NULL;
    return PyLong_FromLong(nuwa_testlib_block_wait(entered, done, timeout_ms));
}

static PyObject *wait_holding(PyObject *self, PyObject *args) {
    int entered, done, timeout_ms;
    (void)self;
    if (!PyArg_ParseTuple(args, "iii", &entered, &done, &timeout_ms)) return NULL;
    return PyLong_FromLong(nuwa_testlib_wait_holding(entered, done, timeout_ms));
}

static PyObject *describe(PyObject *self, PyObject *args) {
    char buf[512];
    (void)self;
    (void)args;
    nuwa_testlib_describe(buf, sizeof buf);
    return PyUnicode_FromString(buf);
}

static PyMethodDef methods[] = {
    {"block_wait", block_wait, METH_VARARGS, "nuwa block: write entered, wait for done"},
    {"wait_holding", wait_holding, METH_VARARGS, "the same wait, no block"},
    {"describe", describe, METH_NOARGS, "what nuwa_ffi::init() found"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "nuwa_embed", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

static PyObject *init_module(void) { return PyModule_Create(&module); }

/* Hands nuwa this interpreter's functions; prints the outcome under `key`. */
static int handover(const char *key, int minor) {
    char err[512] = "";
    int rc = nuwa_testlib_provide(
        PY_MAJOR_VERSION, minor, (const void *)&PyEval_SaveThread,
        (const void *)&PyEval_RestoreThread, CURRENT_STATE,
        (const void *)&PyGILState_GetThisThreadState, IS_FINALIZING, err, sizeof err);
    printf("%s: %d %s\n", key, rc, err);
    return rc;
}

/* A Python thread that writes to `done` once it ran gc.collect(), which it
 * can only do while the main thread's block has released the GIL. */
static const char *PROOF =
    "import os, gc, _thread\n"
    "e_r, e_w = os.pipe()\n"
    "d_r, d_w = os.pipe()\n"
    "def helper():\n"
    "    os.read(e_r, 1)\n"
    "    gc.collect()\n"
    "    os.write(d_w, b'd')\n"
    "_thread.start_new_thread(helper, ())\n"
    "import nuwa_embed\n"
    "r = nuwa_embed.%s(e_w, d_r, %d)\n"
    "print('%s: done=%%d released=%%d' %% (r & 1, (r >> 1) & 1), flush=True)\n"
    "print('describe: ' + nuwa_embed.describe(), flush=True)\n";

static int prove(const char *wait, int timeout_ms, const char *key) {
    char code[2048];
    snprintf(code, sizeof code, PROOF, wait, timeout_ms, key);
    return PyRun_SimpleString(code);
}

static int prove_block(void) { return prove("block_wait", 10000, "proof"); }

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    setvbuf(stdout, NULL, _IONBF, 0);
    if (PyImport_AppendInittab("nuwa_embed", init_module) != 0) return 3;
    if (strcmp(mode, "provide") == 0 && handover("provide", PY_MINOR_VERSION) != 0) return 4;
    Py_InitializeEx(0);
    if (strcmp(mode, "provide") == 0) {
        if (prove("block_wait", 10000, "proof") != 0) return 5;
        handover("again_same", PY_MINOR_VERSION);
        handover("again_other", PY_MINOR_VERSION + 1);
    } else if (strcmp(mode, "linked") == 0) {
        if (prove("block_wait", 10000, "proof") != 0) return 5;
    } else if (strcmp(mode, "control") == 0) {
        if (prove("wait_holding", 1500, "proof") != 0) return 5;
    } else if (strcmp(mode, "version_race") == 0) {
        if (version_race(prove_block) != 0) return 5;
    } else if (strcmp(mode, "late") == 0) {
        if (prove("block_wait", 10000, "proof") != 0) return 5;
        handover("late", PY_MINOR_VERSION);
    } else {
        fprintf(stderr, "usage: static_host provide|linked|control|late|version_race\n");
        return 2;
    }
    printf("end: %s\n", mode);
    if (Py_FinalizeEx() != 0) return 6;
    return 0;
}
