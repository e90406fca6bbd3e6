/* Wide vectors from one portable build: on x86-64 with GCC or Clang, a function
 * marked FF_CLONES is compiled for AVX-512, AVX2 and baseline, and the loader
 * picks the best the CPU runs (target_clones). Elsewhere it is compiled once. */
#ifndef FASTFIT_CLONES_H
#define FASTFIT_CLONES_H

#if defined(__x86_64__) && defined(__GNUC__) && defined(__ELF__) && !defined(FASTFIT_NO_CLONES)
#define FF_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FF_CLONES
#endif
/* Loops inlined into each clone, so they are compiled for its instruction set. */
#define FF_INLINE inline __attribute__((always_inline))

#endif
