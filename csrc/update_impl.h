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
 * The loops do not look for infinities: checking every element cost 40% of
 * Adam's update (a vectorized compare and reduction per element). A fit checks
 * the parameters and the state once per run of steps instead, and replays the
 * run step by step when something overflowed (fastfit/epochs.py). */

#define FF_CAT_(a, b) a##_##b
#define FF_CAT(a, b) FF_CAT_(a, b)
#define FN(name) FF_CAT(name, SUFFIX)

static inline T FN(flushed)(T x)
{
    return FABS(x) < T_MIN_NORMAL ? (T)0 : x;
}

static FF_INLINE void FN(sgd_loop)(const ff_rule *r, T *restrict p, const T *restrict g, size_t n, const int decayed)
{
    const T lr = (T)r->lr, decay = (T)r->grad_decay;
    for (size_t i = 0; i < n; i++) {
        T g_i = decayed ? g[i] + decay * p[i] : g[i];
        T p_new = p[i] - lr * g_i;
        p[i] = p_new;
    }
}

static FF_INLINE void FN(momentum_loop)(const ff_rule *r, T *restrict p, const T *restrict g,
                                  T *restrict m, size_t n, const int decayed)
{
    const T lr = (T)r->lr, beta = (T)r->beta1, decay = (T)r->grad_decay;
    const T one_minus_beta = (T)1 - beta;
    for (size_t i = 0; i < n; i++) {
        T g_i = decayed ? g[i] + decay * p[i] : g[i];
        T m_new = FN(flushed)(beta * m[i] + one_minus_beta * g_i);
        T p_new = p[i] - lr * m_new;
        m[i] = m_new;
        p[i] = p_new;
    }
}

/* Nesterov, in the look-ahead variable the gradient is taken at:
 *   psi_t = phi_t - lr_t beta m_t
 *   m_{t+1} = beta m_t + (1 - beta) g(psi_t)
 *   phi_{t+1} = phi_t - lr_t m_{t+1}
 * so psi_{t+1} = phi_{t+1} - lr_{t+1} beta m_{t+1}
 *             = psi_t + lr_t beta m_t - (lr_t + lr_{t+1} beta) m_{t+1},
 * i.e. psi <- psi + keep * m_old - move * m_new with keep = lr_t beta and
 * move = lr_t + lr_{t+1} beta. p holds psi between steps; phi is never stored. */
static FF_INLINE void FN(nesterov_loop)(const ff_rule *r, T *restrict psi, const T *restrict g,
                                  T *restrict m, size_t n, const int decayed)
{
    const T beta = (T)r->beta1, keep = (T)r->keep, move = (T)r->move;
    const T decay = (T)r->grad_decay, one_minus_beta = (T)1 - beta;
    for (size_t i = 0; i < n; i++) {
        T g_i = decayed ? g[i] + decay * psi[i] : g[i];
        T m_old = m[i];
        T m_new = FN(flushed)(beta * m_old + one_minus_beta * g_i);
        T psi_new = psi[i] + keep * m_old - move * m_new;
        m[i] = m_new;
        psi[i] = psi_new;
    }
}

/* Adam with bias correction; AdamW shrinks p first (shrink = 1 - lr wd, else 1):
 *   m <- beta1 m + (1 - beta1) g;     v <- beta2 v + (1 - beta2) g^2
 *   m_hat = m / (1 - beta1^(t+1));    v_hat = v / (1 - beta2^(t+1))
 *   p <- p - lr m_hat / (sqrt(v_hat) + eps) */
static FF_INLINE void FN(adam_loop)(const ff_rule *r, T *restrict p, const T *restrict g,
                              T *restrict m, T *restrict v, size_t n, const int decayed)
{
    const T lr = (T)r->lr, beta1 = (T)r->beta1, beta2 = (T)r->beta2, eps = (T)r->eps;
    const T m_hat_scale = (T)r->m_hat_scale, v_hat_scale = (T)r->v_hat_scale;
    const T decay = (T)r->grad_decay, shrink = (T)r->shrink;
    const T one_minus_beta1 = (T)1 - beta1, one_minus_beta2 = (T)1 - beta2;
    for (size_t i = 0; i < n; i++) {
        T g_i = decayed ? g[i] + decay * p[i] : g[i];
        T m_new = FN(flushed)(beta1 * m[i] + one_minus_beta1 * g_i);
        T v_new = FN(flushed)(beta2 * v[i] + one_minus_beta2 * (g_i * g_i));
        T m_hat = m_new * m_hat_scale;
        T v_hat = v_new * v_hat_scale;
        T p_new = (decayed ? p[i] * shrink : p[i]) - lr * m_hat / (SQRT(v_hat) + eps);
        m[i] = m_new;
        v[i] = v_new;
        p[i] = p_new;
    }
}

static FF_INLINE void FN(normalized_loop)(const ff_rule *r, T *restrict p, const T *restrict g, size_t n, const int decayed)
{
    const T lr = (T)r->lr, eps = (T)r->eps, decay = (T)r->grad_decay;
    for (size_t i = 0; i < n; i++) {
        T g_i = decayed ? g[i] + decay * p[i] : g[i];
        T p_new = p[i] - lr * g_i / (SQRT(g_i * g_i) + eps);
        p[i] = p_new;
    }
}


/* Each rule is compiled twice: with the decay terms, and without them for the
 * common case (no weight decay, no L2 penalty) where they would only cost time;
 * g + 0 * p and p * 1 are g and p, so both give the same numbers. */
static inline int FN(decayed)(const ff_rule *r)
{
    return r->grad_decay != 0 || r->shrink != 1;
}

FF_CLONES static void FN(sgd)(const ff_rule *r, T *p, const T *g, size_t n)
{
    if (FN(decayed)(r))
        FN(sgd_loop)(r, p, g, n, 1);
    else
        FN(sgd_loop)(r, p, g, n, 0);
}

FF_CLONES static void FN(momentum)(const ff_rule *r, T *p, const T *g, T *m, size_t n)
{
    if (FN(decayed)(r))
        FN(momentum_loop)(r, p, g, m, n, 1);
    else
        FN(momentum_loop)(r, p, g, m, n, 0);
}

FF_CLONES static void FN(nesterov)(const ff_rule *r, T *psi, const T *g, T *m, size_t n)
{
    if (FN(decayed)(r))
        FN(nesterov_loop)(r, psi, g, m, n, 1);
    else
        FN(nesterov_loop)(r, psi, g, m, n, 0);
}

FF_CLONES static void FN(adam)(const ff_rule *r, T *p, const T *g, T *m, T *v, size_t n)
{
    if (FN(decayed)(r))
        FN(adam_loop)(r, p, g, m, v, n, 1);
    else
        FN(adam_loop)(r, p, g, m, v, n, 0);
}

FF_CLONES static void FN(normalized)(const ff_rule *r, T *p, const T *g, size_t n)
{
    if (FN(decayed)(r))
        FN(normalized_loop)(r, p, g, n, 1);
    else
        FN(normalized_loop)(r, p, g, n, 0);
}

static void FN(update_range)(const ff_rule *r, T *p, const T *g, T *m, T *v, size_t n)
{
    switch (r->kind) {
    case FF_SGD:      FN(sgd)(r, p, g, n); break;
    case FF_MOMENTUM: FN(momentum)(r, p, g, m, n); break;
    case FF_NESTEROV: FN(nesterov)(r, p, g, m, n); break;
    case FF_ADAM:     FN(adam)(r, p, g, m, v, n); break;
    default:          FN(normalized)(r, p, g, n); break;
    }
}

/* A job for the team: part `index` of `count` takes one contiguous slice. */
typedef struct {
    const ff_rule *rule;
    T *p;
    const T *g;
    T *m, *v;
    size_t n;
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
    FN(update_range)(job->rule, job->p + lo, job->g + lo, job->m ? job->m + lo : NULL,
                     job->v ? job->v + lo : NULL, hi - lo);
}

void FN(ff_update)(const ff_rule *rule, T *p, const T *g, T *m, T *v, size_t n, int n_threads)
{
    int parts = n >= FF_PARALLEL_MIN_PARAMS && n_threads > 1 ? n_threads : 1;
    if (parts > FF_MAX_PARTS)
        parts = FF_MAX_PARTS;
    if (parts == 1) {
        FN(update_range)(rule, p, g, m, v, n);
        return;
    }
    FN(update_job) job = {rule, p, g, m, v, n};
    ff_team_run(FN(update_part), &job, parts);
}

#undef FN
#undef FF_CAT
#undef FF_CAT_
