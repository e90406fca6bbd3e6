/* Optimizer updates for one floating type; kernels.c includes this file twice,
 * with T = float, SUFFIX = f32 and with T = double, SUFFIX = f64.
 *
 * Every loop reads as its rule in docs/math.md, "Optimizers", one element i
 * at a time; the compiler vectorizes them. Before the rule, the gradient takes
 * the coupled decay: g_i <- g_i + decay * p_i (weight decay with PyTorch's
 * meaning, and the L2 penalty; decay is 0 otherwise, which leaves g_i as it is).
 *
 * Subnormal state is stored as zero (docs/math.md, "Subnormal numbers"): a unit
 * whose gradient is always zero (a dead ReLU) has moments that decay
 * geometrically, and once they fall below the smallest normal number every
 * operation on them runs many times slower on x86 CPUs. The reference flushes
 * the same values, so the two stay equal.
 *
 * The loops do not look for infinities while they write: checking every element
 * cost 40% of Adam's update (a vectorized compare and reduction per element). A
 * fit checks the parameters and the state once per run of steps instead, and
 * replays the run step by step when something overflowed (fastfit/epochs.py).
 * Each loop also runs "dry" (ff_update_stays_finite): the same arithmetic, nothing
 * written, only whether every value it would write is finite; the step API asks
 * that before it updates, so a step that would overflow changes nothing.
 * x - x == 0 holds for every finite x and fails for infinities and NaN. */

#define FF_CAT_(a, b) a##_##b
#define FF_CAT(a, b) FF_CAT_(a, b)
#define FN(name) FF_CAT(name, SUFFIX)
#define FINITE(x) ((x) - (x) == 0)
/* the values of one element, all finite: their differences with themselves add up to 0 */
#define ALL_FINITE3(a, b, c) (((a) - (a)) + ((b) - (b)) + ((c) - (c)) == 0)
#define ALL_FINITE2(a, b) (((a) - (a)) + ((b) - (b)) == 0)

static inline T FN(flushed)(T x)
{
    return FABS(x) < T_MIN_NORMAL ? (T)0 : x;
}

static FF_INLINE int FN(sgd_loop)(const ff_rule *r, T *restrict p, const T *restrict g, size_t n,
                                  const int decayed, const int dry)
{
    const T lr = (T)r->lr, decay = (T)r->grad_decay;
    int finite = 1;
    for (size_t i = 0; i < n; i++) {
        T g_i = decayed ? g[i] + decay * p[i] : g[i];
        T p_new = p[i] - lr * g_i;
        if (dry)
            finite &= FINITE(p_new);
        else
            p[i] = p_new;
    }
    return finite;
}

static FF_INLINE int FN(momentum_loop)(const ff_rule *r, T *restrict p, const T *restrict g,
                                       T *restrict m, size_t n, const int decayed, const int dry)
{
    const T lr = (T)r->lr, beta = (T)r->beta1, decay = (T)r->grad_decay;
    const T one_minus_beta = (T)1 - beta;
    int finite = 1;
    for (size_t i = 0; i < n; i++) {
        T g_i = decayed ? g[i] + decay * p[i] : g[i];
        T m_new = FN(flushed)(beta * m[i] + one_minus_beta * g_i);
        T p_new = p[i] - lr * m_new;
        if (dry) {
            finite &= ALL_FINITE2(m_new, p_new);
        } else {
            m[i] = m_new;
            p[i] = p_new;
        }
    }
    return finite;
}

/* Nesterov, in the look-ahead variable the gradient is taken at:
 *   psi_t = phi_t - lr_t beta m_t
 *   m_{t+1} = beta m_t + (1 - beta) g(psi_t)
 *   phi_{t+1} = phi_t - lr_t m_{t+1}
 * so psi_{t+1} = phi_{t+1} - lr_{t+1} beta m_{t+1}
 *             = psi_t + lr_t beta m_t - (lr_t + lr_{t+1} beta) m_{t+1},
 * i.e. psi <- psi + keep * m_old - move * m_new with keep = lr_t beta and
 * move = lr_t + lr_{t+1} beta. p holds psi between steps; phi is never stored. */
static FF_INLINE int FN(nesterov_loop)(const ff_rule *r, T *restrict psi, const T *restrict g,
                                       T *restrict m, size_t n, const int decayed, const int dry)
{
    const T beta = (T)r->beta1, keep = (T)r->keep, move = (T)r->move;
    const T decay = (T)r->grad_decay, one_minus_beta = (T)1 - beta;
    int finite = 1;
    for (size_t i = 0; i < n; i++) {
        T g_i = decayed ? g[i] + decay * psi[i] : g[i];
        T m_old = m[i];
        T m_new = FN(flushed)(beta * m_old + one_minus_beta * g_i);
        T psi_new = psi[i] + keep * m_old - move * m_new;
        if (dry) {
            finite &= ALL_FINITE2(m_new, psi_new);
        } else {
            m[i] = m_new;
            psi[i] = psi_new;
        }
    }
    return finite;
}

/* Adam with bias correction; AdamW shrinks p first (shrink = 1 - lr wd, else 1):
 *   m <- beta1 m + (1 - beta1) g;     v <- beta2 v + (1 - beta2) g^2
 *   m_hat = m / (1 - beta1^(t+1));    v_hat = v / (1 - beta2^(t+1))
 *   p <- p - lr m_hat / (sqrt(v_hat) + eps) */
static FF_INLINE int FN(adam_loop)(const ff_rule *r, T *restrict p, const T *restrict g,
                                   T *restrict m, T *restrict v, size_t n, const int decayed, const int dry)
{
    const T lr = (T)r->lr, beta1 = (T)r->beta1, beta2 = (T)r->beta2, eps = (T)r->eps;
    const T m_hat_scale = (T)r->m_hat_scale, v_hat_scale = (T)r->v_hat_scale;
    const T decay = (T)r->grad_decay, shrink = (T)r->shrink;
    const T one_minus_beta1 = (T)1 - beta1, one_minus_beta2 = (T)1 - beta2;
    int finite = 1;
    for (size_t i = 0; i < n; i++) {
        T g_i = decayed ? g[i] + decay * p[i] : g[i];
        T m_new = FN(flushed)(beta1 * m[i] + one_minus_beta1 * g_i);
        T v_new = FN(flushed)(beta2 * v[i] + one_minus_beta2 * (g_i * g_i));
        T m_hat = m_new * m_hat_scale;
        T v_hat = v_new * v_hat_scale;
        T p_new = (decayed ? p[i] * shrink : p[i]) - lr * m_hat / (SQRT(v_hat) + eps);
        if (dry) {
            finite &= ALL_FINITE3(m_new, v_new, p_new);
        } else {
            m[i] = m_new;
            v[i] = v_new;
            p[i] = p_new;
        }
    }
    return finite;
}

static FF_INLINE int FN(normalized_loop)(const ff_rule *r, T *restrict p, const T *restrict g, size_t n,
                                         const int decayed, const int dry)
{
    const T lr = (T)r->lr, eps = (T)r->eps, decay = (T)r->grad_decay;
    int finite = 1;
    for (size_t i = 0; i < n; i++) {
        T g_i = decayed ? g[i] + decay * p[i] : g[i];
        T p_new = p[i] - lr * g_i / (SQRT(g_i * g_i) + eps);
        if (dry)
            finite &= FINITE(p_new);
        else
            p[i] = p_new;
    }
    return finite;
}


/* Each rule is compiled twice: with the decay terms, and without them for the
 * common case (no weight decay, no L2 penalty) where they would only cost time;
 * g + 0 * p and p * 1 are g and p, so both give the same numbers. Each of those
 * writes, or runs dry (dry = 1: returns whether every value it would write is finite). */
static inline int FN(decayed)(const ff_rule *r)
{
    return r->grad_decay != 0 || r->shrink != 1;
}

FF_CLONES static int FN(sgd)(const ff_rule *r, T *p, const T *g, size_t n, int dry)
{
    if (FN(decayed)(r))
        return dry ? FN(sgd_loop)(r, p, g, n, 1, 1) : FN(sgd_loop)(r, p, g, n, 1, 0);
    return dry ? FN(sgd_loop)(r, p, g, n, 0, 1) : FN(sgd_loop)(r, p, g, n, 0, 0);
}

FF_CLONES static int FN(momentum)(const ff_rule *r, T *p, const T *g, T *m, size_t n, int dry)
{
    if (FN(decayed)(r))
        return dry ? FN(momentum_loop)(r, p, g, m, n, 1, 1) : FN(momentum_loop)(r, p, g, m, n, 1, 0);
    return dry ? FN(momentum_loop)(r, p, g, m, n, 0, 1) : FN(momentum_loop)(r, p, g, m, n, 0, 0);
}

FF_CLONES static int FN(nesterov)(const ff_rule *r, T *psi, const T *g, T *m, size_t n, int dry)
{
    if (FN(decayed)(r))
        return dry ? FN(nesterov_loop)(r, psi, g, m, n, 1, 1) : FN(nesterov_loop)(r, psi, g, m, n, 1, 0);
    return dry ? FN(nesterov_loop)(r, psi, g, m, n, 0, 1) : FN(nesterov_loop)(r, psi, g, m, n, 0, 0);
}

FF_CLONES static int FN(adam)(const ff_rule *r, T *p, const T *g, T *m, T *v, size_t n, int dry)
{
    if (FN(decayed)(r))
        return dry ? FN(adam_loop)(r, p, g, m, v, n, 1, 1) : FN(adam_loop)(r, p, g, m, v, n, 1, 0);
    return dry ? FN(adam_loop)(r, p, g, m, v, n, 0, 1) : FN(adam_loop)(r, p, g, m, v, n, 0, 0);
}

FF_CLONES static int FN(normalized)(const ff_rule *r, T *p, const T *g, size_t n, int dry)
{
    if (FN(decayed)(r))
        return dry ? FN(normalized_loop)(r, p, g, n, 1, 1) : FN(normalized_loop)(r, p, g, n, 1, 0);
    return dry ? FN(normalized_loop)(r, p, g, n, 0, 1) : FN(normalized_loop)(r, p, g, n, 0, 0);
}

static int FN(update_range)(const ff_rule *r, T *p, const T *g, T *m, T *v, size_t n, int dry)
{
    switch (r->kind) {
    case FF_SGD:      return FN(sgd)(r, p, g, n, dry);
    case FF_MOMENTUM: return FN(momentum)(r, p, g, m, n, dry);
    case FF_NESTEROV: return FN(nesterov)(r, p, g, m, n, dry);
    case FF_ADAM:     return FN(adam)(r, p, g, m, v, n, dry);
    default:          return FN(normalized)(r, p, g, n, dry);
    }
}

/* A job for the team: part `index` of `count` takes one contiguous slice; a dry job's
 * parts each say whether their slice stays finite. */
typedef struct {
    const ff_rule *rule;
    T *p;
    const T *g;
    T *m, *v;
    size_t n;
    int dry;
    int finite[FF_MAX_PARTS];
} FN(update_job);

/* Where part `index` of `count` starts: an even share of n, moved back to where a
 * 64-byte line of p starts (p, g, m and v sit alike on lines: the core allocates them on
 * line boundaries), so that each part's vectors are whole lines, as the first part's are. */
static size_t FN(part_start)(const T *p, size_t n, int index, int count)
{
    const size_t line = 64 / sizeof(T);
    size_t skew = ((uintptr_t)p / sizeof(T)) % line;  /* elements of p's first line before p */
    size_t even = n * (size_t)index / (size_t)count;
    if (index == 0 || index == count)
        return even;
    size_t start = (even + skew) / line * line;
    return start > skew ? start - skew : 0;
}

static void FN(update_part)(void *arg, int index, int count)
{
    FN(update_job) *job = arg;
    size_t lo = FN(part_start)(job->p, job->n, index, count);
    size_t hi = FN(part_start)(job->p, job->n, index + 1, count);
    job->finite[index] = FN(update_range)(job->rule, job->p + lo, job->g + lo, job->m ? job->m + lo : NULL,
                                          job->v ? job->v + lo : NULL, hi - lo, job->dry);
}

/* The update (dry: only whether it stays finite), in parts across the team when n is large. */
static int FN(update_in_parts)(const ff_rule *rule, T *p, const T *g, T *m, T *v, size_t n, int n_threads,
                               int dry)
{
    int parts = n >= FF_PARALLEL_MIN_PARAMS && n_threads > 1 ? n_threads : 1;
    if (parts > FF_MAX_PARTS)
        parts = FF_MAX_PARTS;
    if (parts == 1)
        return FN(update_range)(rule, p, g, m, v, n, dry);
    FN(update_job) job = {rule, p, g, m, v, n, dry, {0}};
    ff_team_run(FN(update_part), &job, parts);
    int finite = 1;
    for (int i = 0; i < parts; i++)
        finite &= job.finite[i];
    return finite;
}

void FN(ff_update)(const ff_rule *rule, T *p, const T *g, T *m, T *v, size_t n, int n_threads)
{
    FN(update_in_parts)(rule, p, g, m, v, n, n_threads, 0);
}

int FN(ff_update_stays_finite)(const ff_rule *rule, const T *p, const T *g, const T *m, const T *v, size_t n,
                               int n_threads)
{
    /* dry: the loops read through these pointers and write nothing */
    return FN(update_in_parts)(rule, (T *)p, g, (T *)m, (T *)v, n, n_threads, 1);
}

#undef FINITE
#undef ALL_FINITE3
#undef ALL_FINITE2
#undef FN
#undef FF_CAT
#undef FF_CAT_
