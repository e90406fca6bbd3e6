"""Other libraries' optimizer conventions, as options: the same steps as PyTorch and scikit-learn."""
import numpy as np
import pytest

import fastfit as ff



def _step_side_by_side(model, ours, net, theirs, X, y, rng, steps):
    """The same minibatches of 8 of X's 40 rows through fastfit's step API and torch's."""
    import torch  # the callers have skipped already where it is missing
    loss, torch_loss = ff.SoftmaxCrossEntropy(), torch.nn.CrossEntropyLoss()
    for _ in range(steps):
        rows = rng.choice(40, size=8, replace=False)
        _, dout = loss.value_and_grad(model.forward(X[rows]), y[rows])
        model.backward(dout)
        ours.step(model)
        theirs.zero_grad()
        torch_loss(net(torch.from_numpy(X[rows])), torch.from_numpy(y[rows])).backward()
        theirs.step()

def Params(values):
    """A model whose 5 parameters are ``values`` (4 weights and a bias): what the optimizers step."""
    return ff.MLP.from_params([4, 1], np.asarray(values, dtype=np.float64))


GRADS = np.random.default_rng(0).standard_normal((12, 5))


def run_fastfit(opt, start):
    p = Params(start)
    for g in GRADS:
        p.grads[:] = g
        opt.step(p)
    return p.params


def test_torch_convention_momentum_is_torch_sgd_without_the_one_minus_beta_factor():
    # b <- beta b + g (b_1 = g); phi <- phi - lr b, written out
    lr, beta, phi, b = 0.1, 0.9, np.ones(5), None
    for g in GRADS:
        b = g.copy() if b is None else beta * b + g
        phi = phi - lr * b
    got = run_fastfit(ff.SGD(lr, momentum=beta, convention="torch"), np.ones(5))
    np.testing.assert_allclose(got, phi, rtol=1e-12)
    # and it is not the book's rule with the same numbers
    assert not np.allclose(run_fastfit(ff.SGD(lr, momentum=beta), np.ones(5)), phi)


def test_sklearn_convention_adam_places_epsilon_as_sklearn_does():
    lr, (b1, b2), eps = 0.01, (0.9, 0.999), 1e-3  # a large eps makes the placement visible
    phi, m, v = np.ones(5), np.zeros(5), np.zeros(5)
    for t, g in enumerate(GRADS, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        lr_t = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)   # scikit-learn's AdamOptimizer
        phi = phi - lr_t * m / (np.sqrt(v) + eps)
    for convention in ("sklearn", "keras"):
        got = run_fastfit(ff.Adam(lr, betas=(b1, b2), eps=eps, convention=convention), np.ones(5))
        np.testing.assert_allclose(got, phi, rtol=1e-12)
    seed_form = run_fastfit(ff.Adam(lr, betas=(b1, b2), eps=eps), np.ones(5))
    assert not np.allclose(seed_form, phi, rtol=1e-9)


def test_sklearn_convention_adam_matches_sklearns_own_optimizer():
    pytest.importorskip("sklearn")
    from sklearn.neural_network._stochastic_optimizers import AdamOptimizer
    start = np.ones(5)
    params = [start.copy()]
    sk = AdamOptimizer(params, learning_rate_init=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-3)
    for g in GRADS:
        sk.update_params(params, [g])
    got = run_fastfit(ff.Adam(0.01, eps=1e-3, convention="sklearn"), start)
    np.testing.assert_allclose(got, params[0], rtol=1e-12)





def torch_twin(model):
    torch = pytest.importorskip("torch")
    layers = []
    for k, layer in enumerate(model.layers):
        lin = torch.nn.Linear(layer.in_features, layer.out_features, dtype=torch.float64)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(layer.W.astype(np.float64)))
            lin.bias.copy_(torch.from_numpy(layer.b.astype(np.float64)))
        layers.append(lin)
        if k < len(model.layers) - 1:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def torch_flat(seq):
    return np.concatenate([p.detach().numpy().ravel() for p in seq.parameters()])


@pytest.mark.parametrize("name", ["momentum", "nesterov", "adam", "plain"])
def test_same_steps_as_pytorch(name):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 6))
    y = rng.integers(0, 3, size=40)
    model = ff.MLP([6, 16, 3], dtype=np.float64, seed=2)
    net = torch_twin(model)
    if name == "adam":
        ours, theirs = ff.Adam(1e-2), torch.optim.Adam(net.parameters(), lr=1e-2)
    elif name == "plain":
        ours, theirs = ff.SGD(0.05), torch.optim.SGD(net.parameters(), lr=0.05)
    else:
        nesterov = name == "nesterov"
        ours = ff.SGD(0.05, momentum=0.9, nesterov=nesterov, convention="torch")
        theirs = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=nesterov)
    _step_side_by_side(model, ours, net, theirs, X, y, rng, steps=25)
    # torch's parameters are what fastfit's model holds between steps (for Nesterov, the look-ahead point)
    flat = torch_flat(net)
    ours_flat = np.concatenate([np.concatenate([l.W.ravel(), l.b]) for l in model.layers])
    np.testing.assert_allclose(ours_flat, flat, rtol=1e-9, atol=1e-12)


def test_fit_honours_the_torch_convention_as_the_step_api_does():
    """fit() takes its learning rates through the same conversion as step()."""
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((48, 4)), rng.integers(0, 3, size=48)
    a, b = ff.MLP([4, 8, 3], dtype=np.float64, seed=1), ff.MLP([4, 8, 3], dtype=np.float64, seed=1)
    ff.fit(a, X, y, loss="cross_entropy", optimizer=ff.SGD(0.05, momentum=0.9, convention="torch"), batch_size=8, epochs=2)
    ff.fit(b, X, y, loss="cross_entropy", optimizer=ff.SGD(0.05 / (1 - 0.9), momentum=0.9), batch_size=8, epochs=2)
    np.testing.assert_array_equal(a.params, b.params)


# ---------------------------------------------------------------- weight decay, AdamW and the L2 penalty

def _torch_pair(name, net, wd):
    """fastfit's optimizer and torch.optim's, with weight decay wd, for the named rule."""
    torch = pytest.importorskip("torch")
    params = net.parameters()
    if name == "plain":
        return ff.SGD(0.05, weight_decay=wd), torch.optim.SGD(params, lr=0.05, weight_decay=wd)
    if name in ("momentum", "nesterov"):
        nesterov = name == "nesterov"
        return (ff.SGD(0.05, momentum=0.9, nesterov=nesterov, convention="torch", weight_decay=wd),
                torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=nesterov, weight_decay=wd))
    if name == "adam":
        return (ff.Adam(1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=wd),
                torch.optim.Adam(params, lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=wd))
    assert name == "adamw"
    return (ff.AdamW(1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=wd),
            torch.optim.AdamW(params, lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=wd))


@pytest.mark.parametrize("name", ["plain", "momentum", "nesterov", "adam", "adamw"])
def test_weight_decay_takes_torchs_steps(name):
    """weight_decay as torch.optim means it (g <- g + wd*p; AdamW: p <- p(1 - lr*wd) first),
    on every parameter, biases included: the same parameters to 1e-9 over 20 steps."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((40, 6)), rng.integers(0, 3, size=40)
    model = ff.MLP([6, 16, 3], dtype=np.float64, seed=2)
    net = torch_twin(model)
    ours, theirs = _torch_pair(name, net, wd=0.3)  # a decay large enough to dominate some steps
    _step_side_by_side(model, ours, net, theirs, X, y, rng, steps=20)
    np.testing.assert_allclose(model.params, torch_flat(net), rtol=1e-9, atol=1e-12)
    # and the decay did something: without it the parameters differ
    plain = ff.MLP([6, 16, 3], dtype=np.float64, seed=2)
    assert not np.allclose(plain.params, model.params, rtol=1e-3)


def test_adamw_default_decay_is_torchs():
    torch = pytest.importorskip("torch")
    assert ff.AdamW().weight_decay == torch.optim.AdamW([torch.zeros(1)]).defaults["weight_decay"] == 0.01
    assert ff.Adam().weight_decay == 0.0 and ff.SGD(0.1).weight_decay == 0.0


@pytest.mark.parametrize("nesterov", [False, True])
def test_weight_decay_in_the_books_momentum(nesterov):
    """Book convention: the decayed gradient g + wd*p enters m <- beta*m + (1-beta)*g, written out."""
    lr, beta, wd = 0.1, 0.9, 0.2
    phi, m = np.ones(5), np.zeros(5)
    for t, g in enumerate(GRADS):
        point = phi - lr * beta * m if nesterov else phi   # where the gradient is taken
        m = beta * m + (1 - beta) * (g + wd * point)
        phi = phi - lr * m
    p = Params(np.ones(5))
    opt = ff.SGD(lr, momentum=beta, nesterov=nesterov, weight_decay=wd)
    for g in GRADS:
        p.grads[:] = g   # the gradient "at" the look-ahead point: the rule adds wd * psi itself
        opt.step(p)
    opt.finalize(p)
    np.testing.assert_allclose(p.params, phi, rtol=1e-12)


@pytest.mark.parametrize("loss_name, divisor", [("SoftmaxCrossEntropy", "B"), ("SquaredError", "B*C"),
                                               ("BinaryCrossEntropy", "B*C")])
def test_l2_penalty_is_on_the_weights_and_scaled_as_the_loss(loss_name, divisor):
    """loss(l2=...): fit minimises mean loss + (l2/2) sum_k ||W_k||^2 / divisor, biases unpenalised,
    the divisor being what "mean" divides the loss by: PyTorch with the penalty written out agrees."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    B, C, l2 = 30, 3, 0.4
    X = rng.standard_normal((B, 5))
    if loss_name == "SoftmaxCrossEntropy":
        y = rng.integers(0, C, size=B)
        torch_loss, ty = torch.nn.CrossEntropyLoss(), torch.from_numpy(y)
    elif loss_name == "SquaredError":
        y = rng.standard_normal((B, C))
        torch_loss, ty = torch.nn.MSELoss(), torch.from_numpy(y)
    else:
        y = (rng.random((B, C)) < 0.5).astype(np.float64)
        torch_loss, ty = torch.nn.BCEWithLogitsLoss(), torch.from_numpy(y)
    scale = B if divisor == "B" else B * C
    model = ff.MLP([5, 8, C], dtype=np.float64, seed=1)
    net = torch_twin(model)
    opt = torch.optim.SGD(net.parameters(), lr=0.2)
    weights = [p for name, p in net.named_parameters() if name.endswith("weight")]
    for _ in range(6):
        opt.zero_grad()
        penalty = sum((w * w).sum() for w in weights) * (l2 / 2) / scale
        (torch_loss(net(torch.from_numpy(X)), ty) + penalty).backward()
        opt.step()
    history = ff.fit(model, X, y, loss=getattr(ff, loss_name)(l2=l2), optimizer=ff.SGD(0.2), batch_size=None,
                     epochs=6, shuffle=False, verbose=0)
    np.testing.assert_allclose(model.params, torch_flat(net), rtol=1e-9, atol=1e-12)
    # the history's loss is the data term alone
    first = torch_twin(ff.MLP([5, 8, C], dtype=np.float64, seed=1))
    with torch.no_grad():
        expected = torch_loss(first(torch.from_numpy(X)), ty).item()
    assert history["loss"][0] == pytest.approx(expected, rel=1e-12)
