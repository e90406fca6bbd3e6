/* The codes that name losses and optimizer rules, shared by the compiled core
 * (fastfit/_core.pyx includes this header) and the C kernels. The Python layer
 * reads them from fastfit._core (LOSS_*, OPT_*), so each code is written once. */
#ifndef FASTFIT_CODES_H
#define FASTFIT_CODES_H

enum ff_loss_kind {
    FF_LOSS_SQUARED_ERROR = 0,          /* l_i = sum_j (f_ij - y_ij)^2 */
    FF_LOSS_SOFTMAX_CROSS_ENTROPY = 1,  /* l_i = logsumexp(f_i) - f_i[y_i], integer labels */
    FF_LOSS_BINARY_CROSS_ENTROPY = 2    /* on logits, one column per output */
};

enum ff_rule_kind {
    FF_SGD = 0,        /* phi <- phi - lr g */
    FF_MOMENTUM = 1,   /* m <- beta m + (1 - beta) g; phi <- phi - lr m */
    FF_NESTEROV = 2,   /* the same, stored as the look-ahead point psi (docs/math.md) */
    FF_ADAM = 3,       /* Adam with bias correction */
    FF_NORMALIZED = 4  /* phi <- phi - lr g / (sqrt(g g) + eps) */
};

#endif
