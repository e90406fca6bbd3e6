#include "kernels.h"

#include <float.h>
#include <math.h>

#include "team.h"

#if defined(__x86_64__) && defined(__GNUC__) && defined(__ELF__) && !defined(FASTFIT_NO_CLONES)
#define FF_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FF_CLONES
#endif
/* Loops inlined into each clone above, so they are compiled for its instruction set. */
#define FF_INLINE inline __attribute__((always_inline))

/* Below this many parameters an update runs on the calling thread alone:
 * waking a team thread costs more than the second core gives. */
#define FF_PARALLEL_MIN_PARAMS ((size_t)1 << 16)
/* The most parts one update is split into. */
#define FF_MAX_PARTS 64

#define T float
#define SUFFIX f32
#define SQRT sqrtf
#define FABS fabsf
#define T_MIN_NORMAL FLT_MIN
#include "update_impl.h"
#include "passes_impl.h"
#undef T
#undef SUFFIX
#undef SQRT
#undef FABS
#undef T_MIN_NORMAL

#define T double
#define SUFFIX f64
#define SQRT sqrt
#define FABS fabs
#define T_MIN_NORMAL DBL_MIN
#include "update_impl.h"
#include "passes_impl.h"
#undef T
#undef SUFFIX
#undef SQRT
#undef FABS
#undef T_MIN_NORMAL
