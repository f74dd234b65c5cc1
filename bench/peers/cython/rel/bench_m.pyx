# cython: language_level=3, freethreading_compatible=True
# The Cython peer: `cycles(n)` runs n empty `with nogil:` blocks.

def cycles(unsigned long long n):
    cdef unsigned long long i
    for i in range(n):
        with nogil:
            pass
