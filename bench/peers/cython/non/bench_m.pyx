# cython: language_level=3, freethreading_compatible=True
# The Cython peer's twin without the release (bench/cython/rel/bench_m.pyx
# less its `with nogil:`): what the release adds is the difference.

def cycles(unsigned long long n):
    cdef unsigned long long i
    for i in range(n):
        pass
