/* The C peer: `cycles(n)` runs n empty blocks between Py_BEGIN_ALLOW_THREADS
 * and Py_END_ALLOW_THREADS, what a C extension writes by hand: the baseline
 * of bench/peers.py. Built with -DRELEASE=0, the same loop without the
 * release (the twin whose size and import cost are subtracted). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Keeps `i` (the block's "work") from being optimised away. */
#define SINK(i) __asm__ volatile("" : : "r"(i) : "memory")

static PyObject *cycles(PyObject *self, PyObject *arg) {
    (void)self;
    unsigned long long n = PyLong_AsUnsignedLongLong(arg);
    if (n == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    for (unsigned long long i = 0; i < n; i++) {
#if RELEASE
        Py_BEGIN_ALLOW_THREADS
        SINK(i);
        Py_END_ALLOW_THREADS
#else
        SINK(i);
#endif
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"cycles", cycles, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "bench_m", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

/* Exported by hand: 3.8's PyMODINIT_FUNC does not say so, and the module is
 * built with -fvisibility=hidden. */
__attribute__((visibility("default"))) PyMODINIT_FUNC PyInit_bench_m(void) {
    PyObject *m = PyModule_Create(&module);
#ifdef Py_GIL_DISABLED
    if (m)
        PyUnstable_Module_SetGIL(m, Py_MOD_GIL_NOT_USED);
#endif
    return m;
}
