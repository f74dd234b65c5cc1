/*
 * nuwa_c_abi.h: the C interface of libnuwa_c_abi (examples/c_abi).
 *
 * Plain C functions that compute inside nuwa blocks: when the calling
 * thread holds the GIL of the CPython interpreter in the process, each block
 * releases it for its length and takes it back on every way out (normal end,
 * early return, `?`, panic). The library does not link libpython: it finds
 * CPython's functions at run time, so the same file works in every
 * interpreter (load it with ctypes.PyDLL) and in programs without Python,
 * where blocks just run.
 *
 * "N releases" below is how many times a call releases the GIL when the
 * calling thread holds it; on any other thread (one without a Python thread
 * state, a thread that has released the GIL, a process without Python) it
 * releases nothing. nuwa_counters() counts them.
 *
 * No panic leaves a function of this library: it is returned as
 * NUWA_ERR_PANIC. Every function may be called from any thread.
 */
#ifndef NUWA_C_ABI_H
#define NUWA_C_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Statuses. Functions that return an int return one of these unless said
 * otherwise; on an error, the out-parameters are not written. */
#define NUWA_OK 0
#define NUWA_STOPPED_EARLY 1 /* nuwa_early_return left its block early */
#define NUWA_ERR_NULL (-1)   /* a required pointer was NULL */
#define NUWA_ERR_PANIC (-2)  /* a panic was caught; the GIL is held again */
#define NUWA_ERR_OVERFLOW (-3) /* nuwa_checked_power overflowed */
#define NUWA_ERR_BREACH (-4) /* a promise of nuwa was broken: something was
                                released where nothing should have been, or
                                the GIL was not held again after a panic */
#define NUWA_ERR_THREAD (-5) /* no thread could be started */
#define NUWA_ERR_ARG (-6)    /* an argument is out of range */

/* ---- Computation ------------------------------------------------------ */

/* *out = data[0]^2 + data[1]^2 + ... + data[len-1]^2, added in that order
 * (the same double as `acc = 0.0; for x in data: acc += x * x`).
 * data may be NULL if len is 0. 1 release. */
int nuwa_sum_of_squares(const double *data, size_t len, double *out);

/* ---- What was found --------------------------------------------------- */

/* 1 if CPython's GIL functions were found in the process, else 0. */
int nuwa_python_found(void);

/* 1 if blocks can release the GIL here (Python found, with a way to tell
 * whether a thread holds the GIL), else 0. */
int nuwa_can_release(void);

/* Writes the one-line text of nuwa_ffi::init() into buf, truncated to len-1
 * bytes and NUL-terminated, as snprintf does, e.g.
 *   "CPython 3.12 found: held check _PyThreadState_UncheckedGet (thread-local)"
 *   "no Python found in the process (dlopen(NULL)): blocks run without releasing anything"
 * Returns the length of the whole text (without the NUL). buf may be NULL if
 * len is 0, to ask for the length. */
size_t nuwa_describe(char *buf, size_t len);

/* Process-wide counts of the GIL releases made by this library's blocks and
 * of the reacquires that completed. Equal whenever no block is running; the
 * reacquires are read first, so releases >= reacquires always. Either
 * pointer may be NULL. Returns NUWA_OK. */
int nuwa_counters(uint64_t *releases, uint64_t *reacquires);

/* ---- Flags: proving that the GIL is released -------------------------- */

/* *flag = 1, with an atomic store. While a wait below reads a flag, write it
 * only with this function (or another atomic store). */
int nuwa_set_flag(uint8_t *flag);

/* How many threads are inside nuwa_wait_for_flag (counted once its block has
 * released the GIL) or nuwa_wait_for_flag_holding. A setter can wait for
 * this to be non-zero before setting the flag. */
uint32_t nuwa_waiters(void);

/* Waits inside a block, with the GIL released, until *flag != 0 or
 * timeout_ms milliseconds have passed. Returns 1 if the flag was seen, 0 on
 * timeout, NUWA_ERR_NULL. 1 release.
 *
 * If the flag can only be set by code that needs the GIL (Python code on
 * another thread), a 1 proves that the GIL was released. */
int nuwa_wait_for_flag(const uint8_t *flag, uint32_t timeout_ms);

/* The same wait without a block: the GIL stays held, so no other Python
 * thread can set the flag meanwhile (the negative control). 0 releases. */
int nuwa_wait_for_flag_holding(const uint8_t *flag, uint32_t timeout_ms);

/* ---- Every way out of a block ----------------------------------------- */

/* A long block: *out = sum(i * i for i in range(n)) mod 2**64, by a loop.
 * 1 release. */
int nuwa_spin_sum(uint64_t n, uint64_t *out);

/* An empty block, then *out = x. 1 release. */
int nuwa_empty_block(uint64_t x, uint64_t *out);

/* Blocks nested three deep: *out = spin_sum(n) + 3 * n mod 2**64. Only the
 * outer block releases: 1 release. NUWA_ERR_BREACH if an inner one did. */
int nuwa_nested_blocks(uint64_t n, uint64_t *out);

/* Sums 0, 1, ..., n-1 in a block and leaves it with `return` on reaching
 * stop: NUWA_STOPPED_EARLY with *out = sum(range(stop)) if stop < n, else
 * NUWA_OK with *out = sum(range(n)). 1 release. */
int nuwa_early_return(uint64_t n, uint64_t stop, uint64_t *out);

/* *out = base ** exp, in a block that it leaves with `?` on overflow:
 * NUWA_OK, or NUWA_ERR_OVERFLOW with *out untouched. 1 release. */
int nuwa_checked_power(uint64_t base, uint32_t exp, uint64_t *out);

/* Panics inside a block after sleeping delay_ms in it, and catches the
 * panic. site 0: a nogil! block; 1: the strict form under Panicked::catch;
 * 2: the inner block of two nested ones. Returns NUWA_ERR_PANIC if the
 * panic was caught and the GIL is held again exactly as before the block,
 * NUWA_ERR_BREACH if not, NUWA_ERR_ARG if site > 2. 3 releases (a probe, the block, a probe). */
int nuwa_panic_in_block(uint32_t site, uint32_t delay_ms);

/* Starts a Rust thread (it has no Python thread state), which runs blocks:
 * long, nested, left by `return`, and, if panic_in_thread, one that panics;
 * joins it inside a block. *out = spin_sum(n) + n + sum(range(n // 2))
 * mod 2**64, or NUWA_ERR_PANIC, NUWA_ERR_BREACH (a block on the new thread
 * released something), NUWA_ERR_THREAD. 1 release (the calling thread's). */
int nuwa_blocks_in_rust_thread(uint64_t n, int panic_in_thread, uint64_t *out);

/* ---- Probes ----------------------------------------------------------- */

/* Starts and ends a block: 1 if it released the GIL, else 0. 1 release. */
int nuwa_probe_release(void);

/* Sleeps delay_ms (not in a block), then does what nuwa_probe_release does.
 * Called through ctypes.CDLL, which releases the GIL around the call, the
 * sleep lets another Python thread take the GIL: the probe then runs on a
 * Python thread that does not hold the GIL while another one does. */
int nuwa_probe_release_after(uint32_t delay_ms);

/* nuwa_probe_release on a new Rust thread, joined: 0 unless nuwa released a
 * GIL that thread does not hold. 0 releases. */
int nuwa_probe_release_in_rust_thread(void);

/* A block and one nested in it: bit 0 set if the outer one released the
 * GIL, bit 1 if the inner one did (never, if nuwa keeps its promise).
 * 1 release. */
int nuwa_probe_nested(void);

#ifdef __cplusplus
}
#endif

#endif /* NUWA_C_ABI_H */
