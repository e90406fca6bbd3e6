"""The public API's newer parts: initialisation, probabilities, the history's accuracy, what
verbose shows, and error messages that say what to do."""
import io
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

import fastfit as ff
import fastfit.progress as progress

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- initialisation

def _layers(model):
    return [(layer.W, layer.b) for layer in model.layers]


def test_glorot_draws_sklearns_uniform():
    """init="glorot": W and b ~ U(-a, a), a = sqrt(6 / (d_in + d_out)), layer by layer."""
    stats = pytest.importorskip("scipy.stats")
    model = ff.MLP([60, 40, 20], dtype=np.float64, seed=0, init="glorot")
    for W, b in _layers(model):
        d_out, d_in = W.shape
        a = np.sqrt(6.0 / (d_in + d_out))
        values = np.concatenate([W.ravel(), b]) / a
        assert np.abs(values).max() < 1 and np.abs(values).max() > 0.95
        assert stats.kstest(values, "uniform", args=(-1, 2)).pvalue > 0.01
        assert np.abs(b).min() > 0  # biases are drawn too, not zero
    # the same seed, the same draw; float32 holds the float64 draw rounded
    again = ff.MLP([60, 40, 20], dtype=np.float64, seed=0, init="glorot")
    np.testing.assert_array_equal(again.params, model.params)
    single = ff.MLP([60, 40, 20], dtype=np.float32, seed=0, init="glorot")
    np.testing.assert_array_equal(single.params, model.params.astype(np.float32))
    he = ff.MLP([60, 40, 20], dtype=np.float64, seed=0)
    assert he.layers[0].b.max() == 0 and not np.array_equal(he.params, model.params)


def test_he_is_the_default():
    stats = pytest.importorskip("scipy.stats")
    model = ff.MLP([200, 100, 5], dtype=np.float64, seed=1)
    for W, b in _layers(model):
        assert stats.kstest(W.ravel() / np.sqrt(2.0 / W.shape[1]), "norm").pvalue > 0.01
        assert not b.any()


def test_init_callable():
    def constant(d_in, d_out, rng):
        return np.full((d_out, d_in), 0.5)

    model = ff.MLP([3, 4, 2], dtype=np.float64, init=constant)
    assert all((W == 0.5).all() and not b.any() for W, b in _layers(model))

    def with_biases(d_in, d_out, rng):
        return rng.uniform(-1, 1, (d_out, d_in)), np.arange(d_out, dtype=float)

    a = ff.MLP([3, 4, 2], dtype=np.float64, seed=5, init=with_biases)
    b = ff.MLP([3, 4, 2], dtype=np.float64, seed=5, init=with_biases)
    np.testing.assert_array_equal(a.params, b.params)  # the rng passed in is default_rng(seed)
    np.testing.assert_array_equal(a.layers[1].b, [0.0, 1.0])


@pytest.mark.parametrize("init, error, match", [
    ("xavier", ValueError, r"init must be one of \['glorot', 'he'\] or a callable"),
    (3, TypeError, "init must be one of"),
    (lambda d_in, d_out, rng: np.zeros((d_in, d_out)), ValueError, r"init returned shapes \(3, 4\)"),
    (lambda d_in, d_out, rng: (np.zeros((d_out, d_in)), np.zeros(d_out + 1)), ValueError, "init returned shapes"),
    (lambda d_in, d_out, rng: np.full((d_out, d_in), np.nan), ValueError, "NaN or infinity"),
    (lambda d_in, d_out, rng: np.full((d_out, d_in), "a"), TypeError, "must be numeric"),
])
def test_bad_inits_are_refused(init, error, match):
    with pytest.raises(error, match=match):
        ff.MLP([3, 4, 2], init=init)


# ---------------------------------------------------------------- probabilities

def test_predict_proba_is_softmax_and_sigmoid():
    special = pytest.importorskip("scipy.special")
    rng = np.random.default_rng(0)
    out = rng.standard_normal((50, 4)) * 5
    out[0] = [1000.0, -1000.0, 0.0, 999.0]  # no overflow
    p = ff.SoftmaxCrossEntropy().predict_proba(out)
    np.testing.assert_allclose(p, special.softmax(out, axis=1), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    q = ff.BinaryCrossEntropy().predict_proba(out)
    np.testing.assert_allclose(q, special.expit(out), rtol=1e-12, atol=1e-300)
    assert np.isfinite(q).all() and q.min() >= 0 and q.max() <= 1
    # on a model's outputs, float32 included
    model = ff.MLP([3, 8, 4], seed=0)
    probs = ff.SoftmaxCrossEntropy().predict_proba(model.predict(rng.standard_normal((7, 3))))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    with pytest.raises(TypeError, match="not a classification loss"):
        ff.SquaredError().predict_proba(out)


# ---------------------------------------------------------------- the history's accuracy

@pytest.mark.parametrize("loss", [ff.SoftmaxCrossEntropy(), ff.BinaryCrossEntropy()])
def test_history_accuracy_is_the_batches_accuracy_before_their_steps(loss):
    """One full batch per epoch: epoch 1's accuracy is the model's before its one step, and
    each later epoch's is the model's after the steps before it."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((120, 5))
    if isinstance(loss, ff.SoftmaxCrossEntropy):
        y, C = rng.integers(0, 3, size=120), 3
    else:
        y, C = (rng.random((120, 2)) < 0.5).astype(float), 2
    model = ff.MLP([5, 16, C], dtype=np.float64, seed=0)
    expected = []
    for epoch in range(3):
        expected.append(ff.evaluate(model, X, y, loss)["accuracy"])
        ff.fit(model, X, y, loss=loss, optimizer=ff.SGD(0.5), batch_size=None, epochs=1, verbose=0)
    again = ff.MLP([5, 16, C], dtype=np.float64, seed=0)
    history = ff.fit(again, X, y, loss=loss, optimizer=ff.SGD(0.5), batch_size=None, epochs=3, verbose=0)
    assert history["accuracy"] == expected
    assert len(set(expected)) > 1  # the steps changed the predictions: the check can tell epochs apart


def test_history_accuracy_over_minibatches_and_its_absence_for_regression():
    rng = np.random.default_rng(4)
    X, y = rng.standard_normal((100, 4)), rng.integers(0, 2, size=100)
    model = ff.MLP([4, 8, 2], dtype=np.float64, seed=0)
    before = ff.evaluate(model, X, y, "cross_entropy")["accuracy"]
    # a step too small to change any prediction: the epoch's batches score as the model did before
    history = ff.fit(model, X, y, loss="cross_entropy", optimizer=ff.SGD(1e-12), batch_size=7, epochs=1, verbose=0)
    assert history["accuracy"] == [before]
    reg = ff.fit(ff.MLP([4, 8, 1]), X, X[:, 0], loss="mse", epochs=1, verbose=0)
    assert "accuracy" not in reg and "loss" in reg


# ---------------------------------------------------------------- verbose

def _data(n=64):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 3)), rng.integers(0, 2, size=n)


def test_verbose_2_prints_one_line_per_epoch(capsys):
    X, y = _data()
    ff.fit(ff.MLP([3, 8, 2]), X, y, loss="cross_entropy", epochs=4, verbose=2, validation_split=0.25)
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 4 and captured.err == ""
    for k, line in enumerate(lines, start=1):
        fields = line.split(" - ")
        assert fields[0] == f"Epoch {k}/4"
        assert fields[1].endswith("s")  # the epoch's time
        assert [f.split(":")[0] for f in fields[2:]] == ["loss", "accuracy", "val_loss", "val_accuracy"]
    ff.fit(ff.MLP([3, 8, 1]), X, X[:, 0], loss="mse", epochs=2, verbose=2)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].startswith("Epoch 2/2 - ") and "loss: " in lines[1]


def test_verbose_2_numbers():
    stream = io.StringIO()
    lines = progress.make_progress(2, 3, 10, stream=stream)
    lines.end_epoch({"epoch": 1, "loss": 0.123456, "accuracy": 0.5, "time": 0.0123})
    lines.end_epoch({"epoch": 2, "loss": 1.5e-6, "val_r2": -2.0, "time": 12.34})
    lines.close()
    assert stream.getvalue().splitlines() == ["Epoch 1/3 - 12.3ms - loss: 0.1235 - accuracy: 0.5000",
                                              "Epoch 2/3 - 12.3s - loss: 1.5000e-06 - val_r2: -2.0000"]


def _fake_ipython(monkeypatch, shell_class_name):
    shell = type(shell_class_name, (), {"config": {}})() if shell_class_name else None
    module = types.ModuleType("IPython")
    module.get_ipython = lambda: shell
    monkeypatch.setitem(sys.modules, "IPython", module)


def test_notebook_detection(monkeypatch):
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert not progress.in_notebook()
    _fake_ipython(monkeypatch, None)              # IPython imported, no shell running
    assert not progress.in_notebook()
    _fake_ipython(monkeypatch, "TerminalInteractiveShell")
    assert not progress.in_notebook()
    _fake_ipython(monkeypatch, "ZMQInteractiveShell")  # a Jupyter kernel
    assert progress.in_notebook()


def test_auto_shows_progress_in_a_notebook_and_nothing_off_a_terminal(monkeypatch):
    record = {"epoch": 1, "loss": 0.5, "samples_per_s": 1000.0}
    stream = io.StringIO()  # no terminal
    monkeypatch.setattr(progress, "in_notebook", lambda: False)
    silent = progress.make_progress("auto", 2, 100, stream=stream)
    silent.end_epoch(record)
    silent.close()
    assert stream.getvalue() == ""
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    shown = progress.make_progress("auto", 2, 100, stream=stream)
    shown.delay = 0.0  # as if the fit had run its two seconds
    shown.end_epoch(record)
    shown.close()
    assert "loss 0.5" in stream.getvalue()


# ---------------------------------------------------------------- messages that say what to do

def test_missing_loss_lists_the_choices():
    X, y = _data()
    with pytest.raises(TypeError) as info:
        ff.fit(ff.MLP([3, 4, 2]), X, y)
    msg = str(info.value)
    for choice in ("SoftmaxCrossEntropy()", "SquaredError()", "BinaryCrossEntropy()", "'cross_entropy'", "'mse'"):
        assert choice in msg


def test_string_labels_say_to_encode_or_use_the_estimator():
    X, _ = _data()
    y = np.where(X[:, 0] > 0, "cat", "dog")
    for call in (lambda: ff.fit(ff.MLP([3, 4, 2]), X, y, loss="cross_entropy"),
                 lambda: ff.evaluate(ff.MLP([3, 4, 2]), X, y, "cross_entropy")):
        with pytest.raises(TypeError) as info:
            call()
        msg = str(info.value)
        assert "np.unique(y, return_inverse=True)" in msg and "fastfit.sklearn.MLPClassifier" in msg


def test_sparse_input_where_it_is_not_taken_says_toarray():
    sparse = pytest.importorskip("scipy.sparse")
    X, y = _data()
    S = sparse.csr_matrix(X)
    model = ff.MLP([3, 4, 2])
    with pytest.raises(TypeError, match=r"X is a scipy.sparse matrix.*pass X.toarray\(\).*fit, predict"):
        model.forward(S)
    with pytest.raises(TypeError, match=r"y is a scipy.sparse matrix.*y.toarray\(\)"):
        ff.fit(model, X, sparse.csr_matrix(y.reshape(-1, 1)), loss="cross_entropy")
    # where sparse X is taken, it gives what the dense copy gives
    np.testing.assert_array_equal(model.predict(S), model.predict(X))


@pytest.mark.parametrize("X, match", [
    (np.ones(10), r"use X.reshape\(-1, 1\)"),
    (np.ones((10, 3), dtype=bool), r"\.astype\(float\)"),
    (np.ones((10, 3), dtype=complex), "must be real"),
])
def test_unsupported_input_says_what_to_do(X, match):
    with pytest.raises((TypeError, ValueError), match=match):
        ff.MLP([3, 2]).predict(X)


# ---------------------------------------------------------------- running from an unbuilt source tree

def _import_in_subprocess(folder, code="import fastfit"):
    # Python started in `folder` finds its fastfit first; an editable install's finder (which
    # would resolve the compiled modules elsewhere) is dropped, as on a machine without one.
    prelude = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path "
               "if 'editable' not in getattr(f, '__name__', type(f).__name__).lower()]; ")
    return subprocess.run([sys.executable, "-c", prelude + code], cwd=folder, capture_output=True, text=True,
                          timeout=120)


def _python_files_only(tmp_path):
    package = tmp_path / "fastfit"
    package.mkdir()
    for name in os.listdir(os.path.join(ROOT, "fastfit")):
        if name.endswith(".py"):
            shutil.copy(os.path.join(ROOT, "fastfit", name), package / name)
    return package


def test_import_from_an_unbuilt_source_tree_says_how_to_build(tmp_path):
    _python_files_only(tmp_path)
    result = _import_in_subprocess(tmp_path)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: fastfit's compiled core")
    assert "pip install -e ." in last and "python setup.py build_ext --inplace" in last
    assert str(tmp_path) in last


def test_import_with_a_broken_extension_says_how_to_build(tmp_path):
    package = _python_files_only(tmp_path)
    import importlib.machinery
    (package / ("_core" + importlib.machinery.EXTENSION_SUFFIXES[0])).write_bytes(b"not a shared library")
    (package / ("_cpu" + importlib.machinery.EXTENSION_SUFFIXES[0])).write_bytes(b"not a shared library")
    result = _import_in_subprocess(tmp_path)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: fastfit's compiled core") and "pip install -e ." in last


def test_a_missing_dependency_is_not_reported_as_an_unbuilt_core():
    # SciPy hidden: the compiled core cannot load its BLAS, and the error says so, not "build it"
    # in the folder of the fastfit these tests imported, whose core is built
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(ff.__file__)))
    result = _import_in_subprocess(package_root, "sys.modules['scipy'] = None; import fastfit")
    assert result.returncode != 0
    assert "scipy" in result.stderr.strip().splitlines()[-1] and "compiled core" not in result.stderr
