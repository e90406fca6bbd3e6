/* CPU and operating-system support for AVX-512, checked without loading any BLAS. */
#ifndef FASTFIT_CPU_FEATURES_H
#define FASTFIT_CPU_FEATURES_H

/* 1 when the CPU reports AVX-512 F/CD/BW/DQ/VL (what OpenBLAS's SkylakeX kernels use)
   and the OS saves the opmask and ZMM register state (XCR0 bits 1,2,5,6,7); else 0. */
int fastfit_avx512_usable(void);

/* 1 when the CPU reports the AVX-512 feature bits, whatever the OS does; else 0. */
int fastfit_cpu_has_avx512(void);

/* 1 when the OS has enabled XSAVE of the AVX-512 state; else 0. */
int fastfit_os_saves_avx512(void);

/* The instruction set of the element-wise loops the loader chose: "avx512f",
   "avx2", "default" (baseline x86-64), or "single" (a build without versions). */
const char *fastfit_loop_clone(void);

#endif
