"""JAX: one jitted function per epoch, ``lax.scan`` over its steps.

The epoch draws a permutation, and each scan step gathers its batch rows by it,
runs forward, the softmax cross-entropy, ``jax.grad`` and an Adam update written
out (the same formula as fastfit's, with bias correction), with the state
donated so XLA updates it in place. No Python runs between steps.

Threads: XLA sizes its CPU thread pool from the process's CPU affinity (it has
no count flag), which the worker pins to as many CPUs as the run asks for; at
one thread ``--xla_cpu_multi_thread_eigen=false`` also keeps its matrix
products off the pool (no hand-off to a pool thread), at more it is true
(procs.worker_env sets XLA_FLAGS before JAX loads).
"""
IMPORTS = ["jax", "jax.numpy"]


class Trainer:
    def __init__(self, workload, X, y, threads):
        import numpy as np
        import jax
        import jax.numpy as jnp
        self.jax, self.jnp, self.wl = jax, jnp, workload
        if workload.dtype == "float64":
            jax.config.update("jax_enable_x64", True)
        dt = jnp.float64 if workload.dtype == "float64" else jnp.float32
        rng = np.random.default_rng(0)
        params = []
        for a, b in zip(workload.sizes[:-1], workload.sizes[1:]):
            W = (rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(workload.dtype)
            params.append((jnp.asarray(W), jnp.zeros((b,), dt)))
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        self.state = (params, zeros, jax.tree_util.tree_map(jnp.zeros_like, params), jnp.zeros((), jnp.int32))
        self.X_host, self.y_host = X, y
        self.key = jax.random.PRNGKey(0)
        self.epoch_no = 0
        self._epoch = None
        self.rows = None

    def _make_epoch(self, rows):
        jax, jnp, B = self.jax, self.jnp, self.wl.batch
        lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-8
        n_steps = rows // B

        def forward(params, x):
            for W, b in params[:-1]:
                x = jax.nn.relu(x @ W + b)
            W, b = params[-1]
            return x @ W + b

        def loss_fn(params, x, y):
            logits = forward(params, x)
            lse = jax.nn.logsumexp(logits, axis=1)
            return jnp.mean(lse - jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0])

        grad_fn = jax.value_and_grad(loss_fn)

        def step(carry, idx, X, y):
            params, m, v, t = carry
            loss, g = grad_fn(params, X[idx], y[idx])
            t = t + 1
            c1 = 1.0 / (1.0 - b1 ** t)
            c2 = 1.0 / (1.0 - b2 ** t)
            m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
            v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
            params = jax.tree_util.tree_map(
                lambda p, m, v: p - lr * (m * c1) / (jnp.sqrt(v * c2) + eps), params, m, v)
            return (params, m, v, t), loss

        def epoch(state, X, y, key):
            perm = jax.random.permutation(key, rows).reshape(n_steps, B)
            state, losses = jax.lax.scan(lambda c, i: step(c, i, X, y), state, perm)
            return state, losses.sum()

        return jax.jit(epoch, donate_argnums=(0,))

    def prepare(self, rows):
        if rows != self.rows:
            self.rows = rows
            self.X = self.jax.device_put(self.X_host[:rows])
            self.y = self.jax.device_put(self.y_host[:rows].astype("int32"))
            self._epoch = self._make_epoch(rows)

    def run(self, epochs):
        total = None
        for _ in range(epochs):
            self.epoch_no += 1
            self.state, total = self._epoch(self.state, self.X, self.y,
                                            self.jax.random.fold_in(self.key, self.epoch_no))
        total.block_until_ready()
        self.jax.block_until_ready(self.state)


def describe():
    import jax
    import jaxlib
    info = {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
            "devices": [str(d) for d in jax.devices()], "backend": jax.default_backend()}
    try:
        from jax.extend import backend
        info["platform_version"] = backend.get_backend().platform_version
    except Exception as exc:  # the private path moves between releases
        info["platform_version"] = f"unavailable ({type(exc).__name__})"
    return info
