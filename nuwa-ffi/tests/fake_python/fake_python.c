/*
 * A stand-in for CPython's shared library, for nuwa's tests on targets where
 * no real CPython runs (Windows under wine, musl): the functions nuwa looks
 * up at run time, over a GIL of its own, every call written to a log in the
 * order it came.
 *
 * Built once per version family by build.rs:
 *   FAKE_MINOR=8..15   python3XY.dll (Windows) or libpython3.XY.so (Unix)
 *   FAKE_FORWARDER     python3.dll: the stable-ABI forwarder, with the GIL
 *                      pair but neither current-state getter (they are not
 *                      in the stable ABI)
 *
 * It is not CPython: it only follows what CPython documents for these calls
 * and what nuwa relies on. Per version family:
 *   - 3.8-3.11: the current state (_PyThreadState_UncheckedGet) is
 *     process-global, the GIL holder's; PyThreadState_Swap only swaps that
 *     pointer and never takes or drops the GIL.
 *   - 3.12+: the current state is the calling thread's attached state;
 *     PyThreadState_Swap(NULL) detaches it and drops the GIL,
 *     PyThreadState_Swap(state) takes the GIL and attaches state.
 *   - Py_Version from 3.11, Py_GetVersion always;
 *     PyThreadState_GetUnchecked and Py_IsFinalizing from 3.13,
 *     _Py_IsFinalizing before.
 *
 * A call CPython would not survive (saving without a state, restoring with a
 * state attached, waiting for a GIL nobody gives back) aborts the process
 * with a message: the test sees a failed child.
 *
 * The log, one letter per call:
 *   S PyEval_SaveThread        R PyEval_RestoreThread
 *   G PyThreadState_GetUnchecked
 *   U _PyThreadState_UncheckedGet
 *   T PyGILState_GetThisThreadState
 *   I PyThread_get_thread_ident
 *   W PyThreadState_Swap(NULL) w PyThreadState_Swap(state)
 *   F Py_IsFinalizing / _Py_IsFinalizing
 *   C PyErr_CheckSignals       V Py_GetVersion
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#include <windows.h>
#define EXPORT __declspec(dllexport)
#else
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <time.h>
#define EXPORT __attribute__((visibility("default")))
#endif

#ifdef FAKE_FORWARDER
#define FAKE_MINOR 13
#endif
#ifndef FAKE_MINOR
#error "FAKE_MINOR (8..15) or FAKE_FORWARDER must be defined"
#endif

/* How long a wait for the GIL may take before the fake calls it a deadlock. */
#define GIL_WAIT_MS 60000

/* PyThreadState, as far as nuwa reads it: big enough for the thread_id
 * offsets nuwa knows (64-bit Linux, 3.8-3.11), with thread_id there. */
typedef struct {
    unsigned char bytes[256];
} fake_state;

#if FAKE_MINOR <= 10
#define THREAD_ID_OFFSET 176
#else
#define THREAD_ID_OFFSET 152
#endif

static void fatal(const char *what) {
    fprintf(stderr, "fake python 3.%d: fatal: %s\n", FAKE_MINOR, what);
    fflush(stderr);
    abort();
}

/* ---- platform: lock, GIL, thread id ---- */
#ifdef _WIN32
static CRITICAL_SECTION log_lock;
static HANDLE gil;
static INIT_ONCE once = INIT_ONCE_STATIC_INIT;
static BOOL CALLBACK init_once(PINIT_ONCE o, PVOID p, PVOID *c) {
    (void)o; (void)p; (void)c;
    InitializeCriticalSection(&log_lock);
    gil = CreateSemaphoreA(NULL, 1, 1, NULL);
    return gil != NULL;
}
static void setup(void) {
    if (!InitOnceExecuteOnce(&once, init_once, NULL, NULL)) fatal("setup");
}
static void lock(void) { setup(); EnterCriticalSection(&log_lock); }
static void unlock(void) { LeaveCriticalSection(&log_lock); }
static int gil_take(int ms) {
    setup();
    return WaitForSingleObject(gil, (DWORD)ms) == WAIT_OBJECT_0;
}
static void gil_drop(void) {
    if (!ReleaseSemaphore(gil, 1, NULL)) fatal("the GIL was dropped twice");
}
static unsigned long this_thread_id(void) { return (unsigned long)GetCurrentThreadId(); }
#else
static pthread_mutex_t log_lock_m = PTHREAD_MUTEX_INITIALIZER;
static sem_t gil;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static void init_once(void) {
    if (sem_init(&gil, 0, 1) != 0) fatal("sem_init");
}
static void setup(void) { pthread_once(&once, init_once); }
static void lock(void) { setup(); pthread_mutex_lock(&log_lock_m); }
static void unlock(void) { pthread_mutex_unlock(&log_lock_m); }
static int gil_take(int ms) {
    setup();
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) { until.tv_sec++; until.tv_nsec -= 1000000000L; }
    int r;
    while ((r = sem_timedwait(&gil, &until)) != 0 && errno == EINTR) {}
    return r == 0;
}
static void gil_drop(void) {
    int value = 0;
    sem_getvalue(&gil, &value);
    if (value != 0) fatal("the GIL was dropped twice");
    sem_post(&gil);
}
static unsigned long this_thread_id(void) { return (unsigned long)pthread_self(); }
#endif

/* ---- the fake interpreter's state ---- */
static char call_log[4096];
static size_t log_len;
static fake_state *current;             /* the GIL holder's state (<= 3.11) */
static _Thread_local fake_state *attached; /* the state attached to this thread */
static _Thread_local fake_state *own;      /* this thread's GIL-state state */

static void note(char c) {
    lock();
    if (log_len + 1 < sizeof call_log) call_log[log_len++] = c;
    unlock();
}

static void take_gil_for(fake_state *st) {
    if (!gil_take(GIL_WAIT_MS)) fatal("waited too long for the GIL: nobody released it");
    attached = st;
    current = st;
}

static fake_state *drop_gil(void) {
    fake_state *st = attached;
    attached = NULL;
    current = NULL;
    gil_drop();
    return st;
}

/* ---- the CPython functions nuwa resolves ---- */
EXPORT void *PyEval_SaveThread(void) {
    note('S');
    if (attached == NULL) fatal("PyEval_SaveThread without a thread state");
    return drop_gil();
}

EXPORT void PyEval_RestoreThread(void *st) {
    note('R');
    if (st == NULL) fatal("PyEval_RestoreThread(NULL)");
    if (attached != NULL) fatal("PyEval_RestoreThread with a state already attached");
    take_gil_for((fake_state *)st);
}

EXPORT void *PyGILState_GetThisThreadState(void) {
    note('T');
    return own;
}

EXPORT void *PyThreadState_Swap(void *new_state) {
    note(new_state ? 'w' : 'W');
#if FAKE_MINOR >= 12
    fake_state *old = attached;
    if (old != NULL) drop_gil();
    if (new_state != NULL) take_gil_for((fake_state *)new_state);
    return old;
#else
    fake_state *old = current;
    current = (fake_state *)new_state;
    return old;
#endif
}

EXPORT int PyErr_CheckSignals(void) {
    note('C');
    return 0;
}

EXPORT unsigned long PyThread_get_thread_ident(void) {
    note('I');
    return this_thread_id();
}

#define STR2(x) #x
#define STR(x) STR2(x)
EXPORT const char *Py_GetVersion(void) {
    note('V');
    return "3." STR(FAKE_MINOR) ".0 (fake, for nuwa's tests)";
}

#if FAKE_MINOR >= 11
/* 0xMMmmPPRS: 3.minor.0, final release. */
EXPORT const unsigned long Py_Version = 0x030000F0UL | ((unsigned long)FAKE_MINOR << 16);
#endif

#ifndef FAKE_FORWARDER
EXPORT void *_PyThreadState_UncheckedGet(void) {
    note('U');
#if FAKE_MINOR >= 12
    return attached;
#else
    return current;
#endif
}

#if FAKE_MINOR >= 13
EXPORT void *PyThreadState_GetUnchecked(void) {
    note('G');
    return attached;
}
EXPORT int Py_IsFinalizing(void) {
    note('F');
    return 0;
}
#else
EXPORT int _Py_IsFinalizing(void) {
    note('F');
    return 0;
}
#endif
#endif /* !FAKE_FORWARDER */

/* ---- for the test, not CPython's ---- */

/* Makes a thread state for the calling thread and takes the GIL with it, as
 * Py_Initialize leaves the main thread (or PyGILState_Ensure a new one). */
EXPORT void fake_attach_new_state(void) {
    if (attached != NULL) fatal("fake_attach_new_state: a state is attached already");
    fake_state *st = calloc(1, sizeof *st);
    if (st == NULL) fatal("out of memory");
    unsigned long id = this_thread_id();
    memcpy(st->bytes + THREAD_ID_OFFSET, &id, sizeof id);
    own = st;
    take_gil_for(st);
}

/* Whether the calling thread holds the GIL through its attached state. */
EXPORT int fake_holds_gil(void) { return attached != NULL && current == attached; }

/* From another thread: takes the GIL (waiting at most ms milliseconds),
 * gives it back, and returns 1; 0 if it could not be had in time. */
EXPORT int fake_take_and_give_back(int ms) {
    if (!gil_take(ms)) return 0;
    gil_drop();
    return 1;
}

/* Copies the log into buf (NUL-terminated, cut to fit), then empties it. */
EXPORT size_t fake_take_log(char *buf, size_t cap) {
    lock();
    size_t n = log_len < cap ? log_len : (cap ? cap - 1 : 0);
    if (cap) {
        memcpy(buf, call_log, n);
        buf[n] = '\0';
    }
    log_len = 0;
    unlock();
    return n;
}
