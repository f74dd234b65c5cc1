// The pybind11 peer: `cycles(n)` runs n empty blocks, each inside a
// `py::gil_scoped_release`. Built with -DRELEASE=0, the same loop without it.
#include <pybind11/pybind11.h>

namespace py = pybind11;

#define SINK(i) __asm__ volatile("" : : "r"(i) : "memory")

static void cycles(unsigned long long n) {
    for (unsigned long long i = 0; i < n; i++) {
#if RELEASE
        py::gil_scoped_release release;
#endif
        SINK(i);
    }
}

PYBIND11_MODULE(bench_m, m, py::mod_gil_not_used()) {
    m.def("cycles", &cycles);
}
