#include "kernels.h"

#include <float.h>
#include <math.h>

#include "clones.h"
#include "expf.h"
#include "team.h"

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
#define EXP_NONPOSITIVE ff_exp_nonpositive_f32
#define LOG logf
#include "update_impl.h"
#include "passes_impl.h"
#include "softmax_impl.h"
#undef EXP_NONPOSITIVE
#undef LOG
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
#define EXP_NONPOSITIVE exp
#define LOG log
#include "update_impl.h"
#include "passes_impl.h"
#include "softmax_impl.h"
#undef EXP_NONPOSITIVE
#undef LOG
#undef T
#undef SUFFIX
#undef SQRT
#undef FABS
#undef T_MIN_NORMAL
