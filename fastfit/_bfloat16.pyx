"""bfloat16 conversions for the compressed all-reduce (fastfit/_allreduce.py), in C.

Each call checks its arrays' lengths, then runs without the GIL, so the
all-reduce's thread converts while the training thread computes."""
from libc.stdint cimport uint16_t

cdef extern from "bfloat16.h" nogil:
    void ff_bf16_encode(const float *x, uint16_t *out, size_t n)
    void ff_bf16_decode(const uint16_t *h, float *out, size_t n)
    void ff_bf16_add(float *acc, const uint16_t *h, size_t n)
    void ff_bf16_sum(float *out, const uint16_t *a, const uint16_t *b, size_t n)


cdef int same_length(Py_ssize_t a, Py_ssize_t b, str what) except -1:
    if a != b:
        raise ValueError(f"{what}: the arrays have {a} and {b} elements; they must match")
    return 0


def encode(const float[::1] x, uint16_t[::1] out):
    """out = x rounded to bfloat16 (nearest, ties to even; NaN stays NaN)."""
    same_length(x.shape[0], out.shape[0], "bfloat16 encode")
    if x.shape[0]:
        with nogil:
            ff_bf16_encode(&x[0], &out[0], x.shape[0])


def decode(const uint16_t[::1] h, float[::1] out):
    """out = h widened to float32 (exact)."""
    same_length(h.shape[0], out.shape[0], "bfloat16 decode")
    if h.shape[0]:
        with nogil:
            ff_bf16_decode(&h[0], &out[0], h.shape[0])


def add(float[::1] acc, const uint16_t[::1] h):
    """acc += h widened, in place."""
    same_length(acc.shape[0], h.shape[0], "bfloat16 add")
    if h.shape[0]:
        with nogil:
            ff_bf16_add(&acc[0], &h[0], h.shape[0])


def sum_into(float[::1] out, const uint16_t[::1] a, const uint16_t[::1] b):
    """out = a widened + b widened."""
    same_length(a.shape[0], b.shape[0], "bfloat16 sum")
    same_length(out.shape[0], a.shape[0], "bfloat16 sum")
    if a.shape[0]:
        with nogil:
            ff_bf16_sum(&out[0], &a[0], &b[0], a.shape[0])
