// The nanobind peer: `cycles(n)` runs n empty blocks, each inside an
// `nb::gil_scoped_release`. Built with -DRELEASE=0, the same loop without it.
#include <nanobind/nanobind.h>

namespace nb = nanobind;

#define SINK(i) __asm__ volatile("" : : "r"(i) : "memory")

static void cycles(unsigned long long n) {
    for (unsigned long long i = 0; i < n; i++) {
#if RELEASE
        nb::gil_scoped_release release;
#endif
        SINK(i);
    }
}

NB_MODULE(bench_m, m) {
    m.def("cycles", &cycles);
}
