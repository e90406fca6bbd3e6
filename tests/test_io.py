"""Saving and loading (fastfit.io): round trips, exact resumption, atomic writes, broken files."""
import json
import math
import os
import pickle
import secrets
import subprocess
import sys
import time
import tracemalloc
import zipfile

import helpers
import numpy as np
import pytest

import fastfit as ff
from fastfit import io


def _data(n=96, d=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = rng.integers(0, classes, size=n)
    return X, y


def _files(directory):
    return sorted(os.listdir(directory))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_model(tmp_path, dtype):
    model = ff.MLP([6, 9, 5, 3], dtype=dtype, seed=7)
    X, y = _data()
    ff.fit(model, X, y, loss=ff.SoftmaxCrossEntropy(), epochs=2, verbose=0)
    path = tmp_path / "model.npz"
    io.save(model, path)
    assert _files(tmp_path) == ["model.npz"]  # no temporary file left behind
    loaded = io.load(path)
    assert loaded.sizes == model.sizes
    assert loaded.dtype == model.dtype
    assert loaded.seed == 7
    assert loaded.params.dtype == model.params.dtype
    np.testing.assert_array_equal(loaded.params, model.params)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    # the loaded model is independent of the file and of the original
    loaded.layers[0].W[0, 0] += 1
    assert model.layers[0].W[0, 0] != loaded.layers[0].W[0, 0]
    # a str path works too, and the path is used exactly as given
    io.save(model, str(tmp_path / "plain"))
    assert (tmp_path / "plain").exists() and not (tmp_path / "plain.npz").exists()
    np.testing.assert_array_equal(io.load(str(tmp_path / "plain")).params, model.params)


def test_file_is_a_plain_npz_readable_without_pickle(tmp_path):
    model = ff.MLP([4, 3, 2], seed=0)
    path = tmp_path / "m.npz"
    io.save(model, path, optimizer=ff.Adam())
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["__fastfit__"][()]))
        assert meta["format"] == "fastfit.MLP" and meta["version"] == io.FORMAT_VERSION
        assert meta["sizes"] == [4, 3, 2] and np.dtype(meta["dtype"]) == np.float32
        assert meta["optimizer"]["type"] == "Adam"
        np.testing.assert_array_equal(npz["params"], model.params)


def test_return_optimizer_without_one_saved(tmp_path):
    model = ff.MLP([3, 2], seed=0)
    io.save(model, tmp_path / "m.npz")
    loaded, opt = io.load(tmp_path / "m.npz", return_optimizer=True)
    assert opt is None
    np.testing.assert_array_equal(loaded.params, model.params)


OPTIMIZERS = {
    "sgd": lambda: ff.SGD(0.05),
    "momentum": lambda: ff.SGD(0.05, momentum=0.9),
    "nesterov": lambda: ff.SGD(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: ff.Adam(1e-2, betas=(0.8, 0.99), eps=1e-7),
    "normalized": lambda: ff.NormalizedGD(1e-2),
    "adam-stepdecay": lambda: ff.Adam(ff.StepDecay(1e-2, step_size=3, gamma=0.5)),
    "nesterov-cosine": lambda: ff.SGD(ff.CosineWithWarmup(0.1, total_steps=20, warmup_steps=4, min_lr=1e-3),
                                      momentum=0.8, nesterov=True),
    "sgd-exponential": lambda: ff.SGD(ff.ExponentialDecay(0.1, 0.95), momentum=0.5),
    "adam-constant": lambda: ff.Adam(ff.ConstantLR(3e-3)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_resume_is_exact(tmp_path, name, dtype):
    """fit(seed=a); fit(seed=b) gives bit-identical parameters with or without a save/load between."""
    X, y = _data()
    loss = ff.SoftmaxCrossEntropy()

    straight = ff.MLP([6, 16, 3], dtype=dtype, seed=3)
    opt = OPTIMIZERS[name]()
    ff.fit(straight, X, y, loss=loss, optimizer=opt, batch_size=16, epochs=1, seed=11, verbose=0)
    ff.fit(straight, X, y, loss=loss, optimizer=opt, batch_size=16, epochs=1, seed=22, verbose=0)

    first = ff.MLP([6, 16, 3], dtype=dtype, seed=3)
    opt1 = OPTIMIZERS[name]()
    ff.fit(first, X, y, loss=loss, optimizer=opt1, batch_size=16, epochs=1, seed=11, verbose=0)
    io.save(first, tmp_path / "ckpt.npz", optimizer=opt1)
    del first, opt1
    resumed, opt2 = io.load(tmp_path / "ckpt.npz", return_optimizer=True)
    assert type(opt2) is type(opt) and opt2.t == 6  # 96 rows in batches of 16
    assert repr(opt2) == repr(opt)
    ff.fit(resumed, X, y, loss=loss, optimizer=opt2, batch_size=16, epochs=1, seed=22, verbose=0)

    np.testing.assert_array_equal(resumed.params, straight.params)
    assert opt2.t == opt.t
    a, b = opt.state_buffers(), opt2.state_buffers()
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_an_optimizer_saved_before_its_first_step_loads_unbound(tmp_path, name):
    X, y = _data()
    model = ff.MLP([6, 16, 3], seed=3)
    io.save(model, tmp_path / "fresh.npz", optimizer=OPTIMIZERS[name]())
    loaded, opt = io.load(tmp_path / "fresh.npz", return_optimizer=True)
    assert opt.t == 0 and opt.state_dict()["bound"] is None and opt.state_buffers() == {}
    assert repr(opt) == repr(OPTIMIZERS[name]())
    fresh, fresh_opt = ff.MLP([6, 16, 3], seed=3), OPTIMIZERS[name]()
    for m, o in ((loaded, opt), (fresh, fresh_opt)):
        ff.fit(m, X, y, loss="cross_entropy", optimizer=o, batch_size=16, epochs=1, verbose=0)
    np.testing.assert_array_equal(loaded.params, fresh.params)


def test_resume_exact_mid_nesterov_step_api(tmp_path):
    """Saved between step() calls (parameters at Nesterov's look-ahead point), resuming is still exact."""
    X, y = _data(n=32)
    loss = ff.SoftmaxCrossEntropy()

    def step(model, opt):
        opt.prepare(model)
        _, g = loss.value_and_grad(model.forward(X), y)
        model.backward(g)
        opt.step(model)

    a = ff.MLP([6, 8, 3], dtype=np.float64, seed=1)
    oa = ff.SGD(0.1, momentum=0.9, nesterov=True)
    for _ in range(4):
        step(a, oa)
    b = ff.MLP([6, 8, 3], dtype=np.float64, seed=1)
    ob = ff.SGD(0.1, momentum=0.9, nesterov=True)
    for _ in range(2):
        step(b, ob)
    io.save(b, tmp_path / "mid.npz", optimizer=ob)
    b, ob = io.load(tmp_path / "mid.npz", return_optimizer=True)
    for _ in range(2):
        step(b, ob)
    oa.finalize(a)
    ob.finalize(b)
    np.testing.assert_array_equal(a.params, b.params)


def test_pickle_model_and_optimizer_resume_exactly():
    X, y = _data()
    loss = ff.SoftmaxCrossEntropy()
    a = ff.MLP([6, 10, 3], seed=2)
    oa = ff.Adam(ff.StepDecay(1e-2, 4))
    ff.fit(a, X, y, loss=loss, optimizer=oa, epochs=1, batch_size=32, seed=1, verbose=0)
    b, ob = pickle.loads(pickle.dumps((a, oa)))
    for m, o in ((a, oa), (b, ob)):
        ff.fit(m, X, y, loss=loss, optimizer=o, epochs=1, batch_size=32, seed=2, verbose=0)
    np.testing.assert_array_equal(a.params, b.params)


def test_refuses_arbitrary_callable_lr(tmp_path):
    model = ff.MLP([3, 2], seed=0)
    path = tmp_path / "m.npz"
    io.save(model, path)
    before = path.read_bytes()
    opt = ff.SGD(lambda t: 0.1 / (1 + t))
    with pytest.raises(ValueError, match="not one of fastfit.schedules"):
        io.save(model, path, optimizer=opt)
    assert path.read_bytes() == before
    assert _files(tmp_path) == ["m.npz"]

    class MySchedule(ff.StepDecay):  # a subclass is not a fastfit.schedules class either
        pass

    with pytest.raises(ValueError, match="not one of fastfit.schedules"):
        io.save(model, path, optimizer=ff.Adam(MySchedule(0.1, 2)))


def test_refuses_optimizer_of_another_model(tmp_path):
    X, y = _data()
    other = ff.MLP([6, 4, 3], seed=0)
    opt = ff.Adam()
    ff.fit(other, X, y, loss=ff.SoftmaxCrossEntropy(), optimizer=opt, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="state for a float32 model of sizes"):
        io.save(ff.MLP([6, 5, 3], seed=0), tmp_path / "m.npz", optimizer=opt)
    with pytest.raises(TypeError):
        io.save(ff.MLP([6, 5, 3], seed=0), tmp_path / "m.npz", optimizer="adam")
    with pytest.raises(TypeError):
        io.save("not a model", tmp_path / "m.npz")
    assert _files(tmp_path) == []


def test_save_refuses_an_optimizer_state_that_load_would_refuse(tmp_path):
    X, y = _data()
    model, opt = ff.MLP([6, 4, 3], seed=0), ff.Adam()
    ff.fit(model, X, y, loss="cross_entropy", optimizer=opt, epochs=1, verbose=0)
    opt.state_buffers()["v"][3] = np.inf
    with pytest.raises(ValueError, match="state 'v' holds NaN or infinity"):
        io.save(model, tmp_path / "m.npz", optimizer=opt)
    assert _files(tmp_path) == []


def test_atomic_write_keeps_old_file_on_crash(tmp_path, monkeypatch):
    old = ff.MLP([5, 4, 2], seed=0)
    path = tmp_path / "m.npz"
    io.save(old, path)
    before = path.read_bytes()

    def crash(f, **arrays):
        f.write(b"PK\x03\x04 half of an archive")
        raise OSError("disk full")

    monkeypatch.setattr(io.np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        io.save(ff.MLP([5, 4, 2], seed=1), path)
    assert path.read_bytes() == before  # the old file is intact
    assert _files(tmp_path) == ["m.npz"]  # and the temporary file is gone
    monkeypatch.undo()
    np.testing.assert_array_equal(io.load(path).params, old.params)


def test_atomic_write_uses_replace_from_same_directory(tmp_path, monkeypatch):
    calls = []
    real_replace, real_fsync = os.replace, os.fsync

    def spy_replace(src, dst):
        calls.append(("replace", os.path.dirname(src), os.path.basename(src), os.fspath(dst)))
        return real_replace(src, dst)

    def spy_fsync(fd):
        calls.append(("fsync",))
        return real_fsync(fd)

    monkeypatch.setattr(io.os, "replace", spy_replace)
    monkeypatch.setattr(io.os, "fsync", spy_fsync)
    io.save(ff.MLP([3, 2], seed=0), tmp_path / "m.npz")
    kinds = [c[0] for c in calls]
    assert kinds[0] == "fsync" and "replace" in kinds  # the data is on disk before the rename
    _, directory, tmpname, dst = calls[kinds.index("replace")]
    assert directory == str(tmp_path) and tmpname != "m.npz" and dst == str(tmp_path / "m.npz")


# ---------------------------------------------------------------- broken and foreign files

@pytest.fixture
def saved(tmp_path):
    model = ff.MLP([10, 40, 3], dtype=np.float64, seed=0)
    path = tmp_path / "good.npz"
    opt = ff.Adam()
    opt.bind(model)  # allocates the state buffers
    io.save(model, path, optimizer=opt)
    return model, path


def _expect_error(path, match):
    with pytest.raises(ValueError, match=match) as info:
        io.load(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, io.ModelFileError)
    return info.value


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.99])
def test_truncated_file(saved, tmp_path, fraction):
    _, path = saved
    data = path.read_bytes()
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(data[:int(len(data) * fraction)])
    _expect_error(bad, "empty|truncated|corrupted|not an .npz")


def test_corrupted_parameter_bytes(saved, tmp_path):
    model, path = saved
    data = bytearray(path.read_bytes())
    i = bytes(data).find(model.params[50:60].tobytes())
    assert i > 0
    data[i + 5] ^= 0x40
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(data))
    _expect_error(bad, "corrupted")


def test_not_an_npz(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("these are not weights\n")
    _expect_error(text, "not an .npz archive")
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    _expect_error(empty, "empty")
    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(5))
    _expect_error(npy, "single .npy array")
    pickled = tmp_path / "model.pkl"
    pickled.write_bytes(pickle.dumps(ff.MLP([3, 2], seed=0)))
    _expect_error(pickled, "not an .npz archive")


def test_foreign_npz(tmp_path):
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3), bias=np.ones(2))
    _expect_error(foreign, "not one fastfit wrote")
    objects = tmp_path / "objects.npz"
    np.savez(objects, __fastfit__=np.array([{"format": "fastfit.MLP"}], dtype=object))
    _expect_error(objects, "not a JSON string.*dtype object")  # never unpickled


def _rewrite(path, out, meta_update=None, drop=(), replace=None):
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files if k not in drop}
    meta = json.loads(str(arrays["__fastfit__"][()]))
    if meta_update:
        meta_update(meta)
    arrays["__fastfit__"] = np.array(json.dumps(meta))
    arrays.update(replace or {})
    np.savez(out, **arrays)
    return out


def test_inconsistent_contents(saved, tmp_path):
    model, path = saved
    _expect_error(_rewrite(path, tmp_path / "a.npz", drop=["params"]), "'params' entry is missing")
    _expect_error(_rewrite(path, tmp_path / "b.npz", replace={"params": model.params[:-1]}),
                  r"'params' holds .*shape \(562,\).*must be float64 of shape \(563,\)")
    _expect_error(_rewrite(path, tmp_path / "c.npz", replace={"params": model.params.astype(np.float32)}),
                  r"'params' holds 2,\d+ bytes uncompressed; the parameters of sizes \[10, 40, 3\] must be 4,504 "
                  r"bytes \(float64 of shape \(563,\)\)")

    def sizes(meta):
        meta["sizes"] = [10, 41, 3]
    _expect_error(_rewrite(path, tmp_path / "d.npz", meta_update=sizes), r"shape \(563,\).*must be float64 of shape \(577,\)")

    def newer(meta):
        meta["version"] = io.FORMAT_VERSION + 1
    _expect_error(_rewrite(path, tmp_path / "e.npz", meta_update=newer), "newer fastfit")

    def other_format(meta):
        meta["format"] = "somebody.else"
    _expect_error(_rewrite(path, tmp_path / "f.npz", meta_update=other_format), "does not describe")

    def bad_sizes(meta):
        meta["sizes"] = [10, 0, 3]
    _expect_error(_rewrite(path, tmp_path / "g.npz", meta_update=bad_sizes), "architecture")

    _expect_error(_rewrite(path, tmp_path / "h.npz", replace={"__fastfit__": np.array("{not json")}), "not valid JSON")

    bad_state = _rewrite(path, tmp_path / "i.npz", replace={"optimizer.m": np.zeros(5)})
    io.load(bad_state)  # the model alone is fine
    with pytest.raises(ValueError, match="optimizer cannot be restored") as info:
        io.load(bad_state, return_optimizer=True)
    assert str(bad_state) in str(info.value)

    def unknown_optimizer(meta):
        meta["optimizer"]["type"] = "os.system"
    with pytest.raises(ValueError, match="unknown optimizer type"):
        io.load(_rewrite(path, tmp_path / "j.npz", meta_update=unknown_optimizer), return_optimizer=True)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        io.load(tmp_path / "nowhere.npz")


def test_archive_members_are_plain_npy(saved):
    _, path = saved
    with zipfile.ZipFile(path) as zf:
        names = sorted(zf.namelist())
    assert names == ["__fastfit__.npy", "optimizer.m.npy", "optimizer.v.npy", "params.npy"]


# ---------------------------------------------------------------- crafted files: nothing in a file is trusted

@pytest.fixture
def fitted(tmp_path):
    """A float32 model and its Adam after one short fit, saved; and the data."""
    X, y = _data(n=64, d=4)
    model, opt = ff.MLP([4, 5, 3], seed=0), ff.Adam(1e-2)
    helpers.trains(model, opt, X, y)
    path = io.save(model, tmp_path / "fitted.npz", optimizer=opt) or tmp_path / "fitted.npz"
    return model, opt, path, X, y


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def update(meta):
        target = meta
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return update


def _drop(*keys):
    def update(meta):
        target = meta
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]
    return update


N_FITTED = 4 * 5 + 5 + 5 * 3 + 3   # 43 parameters

CRAFTED_OPTIMIZERS = {
    # class attributes and internals are not constructor arguments
    "kind": (_set("optimizer", "hyper", "kind", 7), "unexpected keyword argument 'kind'"),
    "state_names": (_set("optimizer", "hyper", "state_names", []), "unexpected keyword argument"),
    "n_state_buffers": (_set("optimizer", "hyper", "n_state_buffers", 0), "unexpected keyword argument"),
    "_state": (_set("optimizer", "hyper", "_state", {"m": 1}), "unexpected value"),
    "_model": (_set("optimizer", "hyper", "_model", None), "unexpected keyword argument"),
    "unknown field": (_set("optimizer", "_bound", [43, "float32"]), "unknown fields"),
    "type": (_set("optimizer", "type", "os.system"), "unknown optimizer type"),
    "type not str": (_set("optimizer", "type", ["Adam"]), "unknown optimizer type"),
    "type swapped": (_set("optimizer", "type", "SGD"), "unexpected keyword argument 'betas'"),
    # hyper-parameters go through the constructors' checks
    "lr -5": (_set("optimizer", "hyper", "lr", -5), "lr must be a finite number > 0"),
    "lr NaN": (_set("optimizer", "hyper", "lr", math.nan), "lr must be a finite number > 0"),
    "lr inf": (_set("optimizer", "hyper", "lr", math.inf), "lr must be a finite number > 0"),
    "lr bool": (_set("optimizer", "hyper", "lr", True), "neither a number nor a schedule"),
    "lr str": (_set("optimizer", "hyper", "lr", "0.1"), "neither a number nor a schedule"),
    "lr missing": (_drop("optimizer", "hyper", "lr"), "holding at least 'lr'"),
    "eps 0": (_set("optimizer", "hyper", "eps", 0.0), "eps must be a finite number > 0"),
    "betas 1": (_set("optimizer", "hyper", "betas", [1.0, 0.9]), r"betas\[0\] must be in \[0, 1\)"),
    "betas three": (_set("optimizer", "hyper", "betas", [0.9, 0.9, 0.9]), "betas must be a pair"),
    "betas nested": (_set("optimizer", "hyper", "betas", [[0.9], [0.9]]), "must be a number"),
    "weight_decay -1": (_set("optimizer", "hyper", "weight_decay", -1.0), "weight_decay must be"),
    "convention": (_set("optimizer", "hyper", "convention", "pickle"), "convention must be one of"),
    "hyper list": (_set("optimizer", "hyper", [0.1]), "hyper-parameters are malformed"),
    "tuple marker": (_set("optimizer", "hyper", "betas", {"__tuple__": [0.9, 0.99], "x": 1}), "unexpected value"),
    # schedules: only fastfit's classes, through their constructors
    "schedule class": (_set("optimizer", "hyper", "lr", {"schedule": "math", "attrs": {}}), "unknown learning-rate"),
    "schedule helper": (_set("optimizer", "hyper", "lr", {"schedule": "_check_positive", "attrs": {}}),
                        "unknown learning-rate"),
    "schedule attrs": (_set("optimizer", "hyper", "lr", {"schedule": "StepDecay", "attrs": {"lr": 0.1, "step_size": -3}}),
                       "step_size must be >= 1"),
    "schedule extra": (_set("optimizer", "hyper", "lr", {"schedule": "ConstantLR", "attrs": {"lr": 0.1, "__call__": 1}}),
                       "takes no"),
    "schedule fails now": (_set("optimizer", "hyper", "lr", {"schedule": "ExponentialDecay",
                                                             "attrs": {"lr": 1e300, "gamma": 1e300}}),
                           "learning rate fails at the saved step"),
    # the step count
    "t 1e30": (_set("optimizer", "t", 1e30), r"state\['t'\] must be a whole number"),
    "t huge int": (_set("optimizer", "t", 10 ** 30), r"state\['t'\] must be a whole number"),
    "t negative": (_set("optimizer", "t", -1), r"state\['t'\] must be a whole number"),
    "t fraction": (_set("optimizer", "t", 2.5), r"state\['t'\] must be a whole number"),
    "t str": (_set("optimizer", "t", "3"), r"state\['t'\] must be a whole number"),
    "t bool": (_set("optimizer", "t", True), r"state\['t'\] must be a whole number"),
    # the buffers and the model they belong to
    "buffer missing": (_set("optimizer", "buffers", ["m"]), r"lists the state buffers \['m'\].*keeps \['m', 'v'\]"),
    "buffers none": (_set("optimizer", "buffers", []), r"lists the state buffers \[\]"),
    "buffer repeated": (_set("optimizer", "buffers", ["m", "m", "v"]), "malformed"),
    "buffer foreign": (_set("optimizer", "buffers", ["m", "v", "../params"]), "lists the state buffers"),
    "buffers not a list": (_set("optimizer", "buffers", "mv"), "malformed"),
    "bound other sizes": (_set("optimizer", "bound", {"sizes": [4, 6, 3], "dtype": "float32"}), "has shape"),
    "bound other dtype": (_set("optimizer", "bound", {"sizes": [4, 5, 3], "dtype": "float64"}), "holds state for a float64"),
    "bound missing": (_set("optimizer", "bound", None), "no model they belong to"),
    "bound malformed": (_set("optimizer", "bound", [4, 5, 3]), r"state\['bound'\] must be"),
    "lookahead": (_set("optimizer", "lookahead", "yes"), "lookahead'] must be a bool"),
    "entry not a dict": (_set("optimizer", [1, 2]), "optimizer entry is malformed"),
}


@pytest.mark.parametrize("name", sorted(CRAFTED_OPTIMIZERS))
def test_crafted_optimizer_metadata_is_refused(fitted, tmp_path, name):
    model, _, path, _, _ = fitted
    update, match = CRAFTED_OPTIMIZERS[name]
    bad = helpers.rewrite(path, tmp_path / "crafted.npz", meta_update=update)
    with pytest.raises(io.ModelFileError, match="optimizer cannot be restored.*" + match):
        io.load(bad, return_optimizer=True)
    np.testing.assert_array_equal(io.load(bad).params, model.params)  # the model alone still loads


CRAFTED_BUFFERS = {
    "shorter": (lambda m, v: (m[:-1], v), r"shape \(42,\); the optimizer's state 'm' must be float32 of shape \(43,\)"),
    "much shorter": (lambda m, v: (m, v[:3]), "'optimizer.v' holds .* bytes uncompressed"),
    "longer": (lambda m, v: (np.tile(m, 100), v), "'optimizer.m' declares .* refused unread"),
    "2-D": (lambda m, v: (m.reshape(-1, 1), v), r"shape \(43, 1\)"),
    "float64 in a float32 model": (lambda m, v: (m.astype(np.float64), v), "dtype float64"),
    "integers": (lambda m, v: (m.astype(np.int32), v), "dtype int32"),
    "big-endian": (lambda m, v: (m.astype(">f4"), v), "dtype >f4"),
    "objects": (lambda m, v: (np.array(list(m), dtype=object), v), "dtype object"),
    "NaN": (lambda m, v: (np.where(np.arange(m.size) == 3, np.float32(np.nan), m), v), "NaN or infinity"),
    "infinite": (lambda m, v: (m, np.where(np.arange(v.size) == 5, np.float32(np.inf), v)), "NaN or infinity"),
    "negative v": (lambda m, v: (m, -v - 1), "negative"),
}


@pytest.mark.parametrize("name", sorted(CRAFTED_BUFFERS))
def test_crafted_optimizer_buffers_are_refused(fitted, tmp_path, name):
    _, opt, path, _, _ = fitted
    make, match = CRAFTED_BUFFERS[name]
    m, v = make(opt.state_buffers()["m"], opt.state_buffers()["v"])
    bad = tmp_path / "crafted.npz"
    arrays, meta = helpers.read_npz(path)
    arrays.update({"optimizer.m": m, "optimizer.v": v})
    np.savez(bad, **arrays, __fastfit__=np.array(json.dumps(meta)))
    with pytest.raises(io.ModelFileError, match="optimizer cannot be restored.*" + match):
        io.load(bad, return_optimizer=True)


def test_a_genuine_file_resumes_and_a_crafted_but_valid_one_loads_into_a_valid_optimizer(fitted, tmp_path):
    """What a file may change and still load (another lr, t, AdamW instead of Adam) gives an
    optimizer equal to one built by its constructor with those values."""
    model, opt, path, X, y = fitted
    crafted = helpers.rewrite(path, tmp_path / "c.npz", meta_update=lambda meta: (
        meta["optimizer"].update(type="AdamW", t=2 ** 40), meta["optimizer"]["hyper"].update(lr=0.5)))
    loaded, lopt = io.load(crafted, return_optimizer=True)
    mine = ff.AdamW(0.5, weight_decay=0.0)
    mine.load_state_dict({**opt.state_dict(), "type": "AdamW", "hyper": mine.hyper_parameters(), "t": 2 ** 40})
    assert repr(lopt) == repr(mine) and lopt.t == mine.t == 2 ** 40
    twin = model.copy()
    helpers.trains(loaded, lopt, X, y)
    helpers.trains(twin, mine, X, y)
    np.testing.assert_array_equal(loaded.params, twin.params)


# version-1 files (written before the optimizer's state was explicit) stored the optimizer's
# attributes; only its constructor's arguments and its state may come back from them.
VERSION_1_ATTACKS = {
    "kind": ({"kind": 99}, "no saved attributes \\['kind'\\]"),
    "n_state_buffers": ({"n_state_buffers": 0}, "no saved attributes"),
    "_bound": ({"_bound": [10, "float32"]}, "no saved attributes"),
    "_state": ({"_state": {}}, "no saved attributes"),
    "lr_at": ({"lr_at": 1}, "no saved attributes"),
    "t 1e30": ({"t": 1e30}, r"state\['t'\] must be a whole number"),
    "negative t": ({"t": -4}, r"state\['t'\] must be a whole number"),
    "eps NaN": ({"eps": math.nan}, "eps must be a finite number > 0"),
    "no _v": ({"_v": None}, "lists the state buffers \\['m'\\]"),
    "_m elsewhere": ({"_m": {"__array__": "params"}}, "names the entry 'params'"),
    "_m a list": ({"_m": [0.0] * N_FITTED}, "is malformed"),
}


@pytest.mark.parametrize("name", sorted(VERSION_1_ATTACKS))
def test_crafted_version_1_optimizer_is_refused(tmp_path, name):
    attrs, match = VERSION_1_ATTACKS[name]
    model = ff.MLP([4, 5, 3], seed=0)
    state = {"optimizer._m": np.zeros(N_FITTED, np.float32), "optimizer._v": np.zeros(N_FITTED, np.float32)}
    path = helpers.version_1_file(tmp_path / "v1.npz", model, helpers.adam_version_1_entry(**attrs), state)
    with pytest.raises(io.ModelFileError, match="optimizer cannot be restored.*" + match):
        io.load(path, return_optimizer=True)


@pytest.mark.parametrize("lr", [-5, math.nan])
def test_crafted_version_1_learning_rate_is_refused(tmp_path, lr):
    model = ff.MLP([4, 5, 3], seed=0)
    entry = {**helpers.adam_version_1_entry(), "lr": lr}
    state = {"optimizer._m": np.zeros(N_FITTED, np.float32), "optimizer._v": np.zeros(N_FITTED, np.float32)}
    with pytest.raises(io.ModelFileError, match="lr must be a finite number > 0"):
        io.load(helpers.version_1_file(tmp_path / "v1.npz", model, entry, state), return_optimizer=True)


def test_crafted_version_1_buffers_are_refused(tmp_path):
    model = ff.MLP([4, 5, 3], seed=0)
    good = np.zeros(N_FITTED, np.float32)
    for arrays, match in (({"optimizer._m": good}, "'optimizer._v' entry is missing"),
                          ({"optimizer._m": good, "optimizer._v": good[:-2]}, r"shape \(41,\)"),
                          ({"optimizer._m": good, "optimizer._v": good - 1}, "negative"),
                          ({"optimizer._m": good + np.inf, "optimizer._v": good}, "NaN or infinity")):
        path = helpers.version_1_file(tmp_path / "v1.npz", model, helpers.adam_version_1_entry(), arrays)
        with pytest.raises(io.ModelFileError, match=match):
            io.load(path, return_optimizer=True)


def test_a_genuine_version_1_file_still_loads_and_trains(tmp_path):
    X, y = _data(n=64, d=4)
    model = ff.MLP([4, 5, 3], seed=0)
    m, v = np.full(N_FITTED, 1e-3, np.float32), np.full(N_FITTED, 1e-4, np.float32)
    path = helpers.version_1_file(tmp_path / "v1.npz", model, helpers.adam_version_1_entry(t=3),
                                  {"optimizer._m": m, "optimizer._v": v})
    loaded, opt = io.load(path, return_optimizer=True)
    assert repr(opt) == repr(ff.Adam(0.01)) and opt.t == 3
    np.testing.assert_array_equal(opt.state_buffers()["v"], v)
    helpers.trains(loaded, opt, X, y)
    assert opt.t == 3 + 4 and np.isfinite(loaded.params).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_parameters_in_a_file_are_refused(fitted, tmp_path, bad):
    model, _, path, _, _ = fitted
    params = model.params.copy()
    params[7] = bad
    crafted = helpers.rewrite(path, tmp_path / "nan.npz", replace={"params": params})
    with pytest.raises(io.ModelFileError, match=r"params contains NaN or infinity \(first at index \[7\]\)"):
        io.load(crafted)


@pytest.mark.parametrize("dtype", ["float16", ">f4", "<i4", "object", 32, {"names": ["a"], "formats": ["<f4"]}, None])
def test_crafted_model_dtype_is_refused(fitted, tmp_path, dtype):
    _, _, path, _, _ = fitted
    with pytest.raises(io.ModelFileError, match="architecture is not valid"):
        io.load(helpers.rewrite(path, tmp_path / "d.npz", meta_update=_set("dtype", dtype)))


# ---------------------------------------------------------------- bounded reading

def _peak_bytes_of(call):
    """(result or exception, peak bytes traced while calling)."""
    tracemalloc.start()
    try:
        try:
            result = call()
        except Exception as exc:  # noqa: BLE001 - returned to the caller to check
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


BIG = 32 << 20   # a member declaring 32 MiB, stored deflated in about 32 KiB


@pytest.mark.parametrize("member", ["params", "optimizer.m", "__fastfit__"])
def test_an_oversized_member_is_refused_before_it_is_decompressed(fitted, tmp_path, member):
    model, _, path, _, _ = fitted
    arrays, meta = helpers.read_npz(path)
    arrays["__fastfit__"] = np.array(json.dumps(meta))
    dtype, shape = (np.dtype("<U%d" % (BIG // 4)), ()) if member == "__fastfit__" else \
        (np.dtype(np.float32), (BIG // 4,))
    bomb = tmp_path / "bomb.npz"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, value in arrays.items():
            if key != member:
                zf.writestr(key + ".npy", helpers.npy_bytes(value))
        helpers.write_zip_member_of_zeros(zf, member + ".npy", helpers.npy_header(dtype, shape), BIG)
    assert bomb.stat().st_size < BIG // 200
    t0 = time.perf_counter()
    error, peak = _peak_bytes_of(lambda: io.load(bomb, return_optimizer=True))
    assert isinstance(error, io.ModelFileError), error
    assert "refused unread" in str(error) and repr(member) in str(error)
    assert peak < 2 << 20, f"loading allocated {peak:,} bytes for a member it refuses"
    assert time.perf_counter() - t0 < 2.0


def test_members_the_format_does_not_name_are_never_read(fitted, tmp_path):
    """An extra member (a pickle, a huge compressed one, garbage) is not opened: the file loads."""
    model, opt, path, _, _ = fitted
    arrays, meta = helpers.read_npz(path)
    arrays["__fastfit__"] = np.array(json.dumps(meta))
    crafted = tmp_path / "extra.npz"
    with zipfile.ZipFile(crafted, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, value in arrays.items():
            zf.writestr(key + ".npy", helpers.npy_bytes(value))
        zf.writestr("pickled.npy", helpers.npy_bytes(np.array([ff.MLP([2, 1])], dtype=object)))
        zf.writestr("garbage.npy", b"\x93NUMPY garbage")
        zf.writestr("optimizer.w.npy", helpers.npy_bytes(np.zeros(N_FITTED, np.float32)))
        helpers.write_zip_member_of_zeros(zf, "huge.npy", helpers.npy_header(np.float32, (BIG // 4,)), BIG)
    (loaded, lopt), peak = _peak_bytes_of(lambda: io.load(crafted, return_optimizer=True))
    np.testing.assert_array_equal(loaded.params, model.params)
    assert lopt.t == opt.t
    assert peak < 2 << 20, f"loading allocated {peak:,} bytes"


def test_a_member_that_ends_early_or_carries_more_is_refused(fitted, tmp_path):
    model, _, path, _, _ = fitted
    arrays, meta = helpers.read_npz(path)
    meta_npy = helpers.npy_bytes(np.array(json.dumps(meta)))
    header = helpers.npy_header(np.float32, (N_FITTED,))
    long_header = helpers.npy_header(np.float32, (N_FITTED,), length=1024)
    for data, match in ((header + model.params.tobytes() + b"xx", "more data than its header says"),
                        (long_header + model.params.tobytes()[:-8], "ends before its data does"),
                        (header[:40], "holds 40 bytes"),
                        (b"\x93NUMPY\x07\x00" + header[8:] + model.params.tobytes(), "format version"),
                        (header[:20] + b"x" * (len(header) - 20) + model.params.tobytes(), "cannot be read")):
        crafted = helpers.write_members(tmp_path / "c.npz", {"__fastfit__.npy": meta_npy, "params.npy": data})
        with pytest.raises(io.ModelFileError, match=match):
            io.load(crafted)


def _nested(depth):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


def test_deeply_nested_metadata_is_refused_without_recursion_error(fitted, tmp_path):
    _, _, path, _, _ = fitted
    arrays, meta = helpers.read_npz(path)
    for text in ("[" * 200_000 + "]" * 200_000,                       # deeper than Python's recursion
                 '{"format": "fastfit.MLP", "deep": ' + "[" * 500 + "]" * 500 + "}",   # within it, too deep for a file
                 json.dumps({**meta, "info": {"a": _nested(32)}})):            # info 34 deep in all
        crafted = helpers.write_npz(tmp_path / "deep.npz", arrays, text)
        with pytest.raises(io.ModelFileError, match="nests deeper than 32 levels"):
            io.load(crafted)
        with pytest.raises(io.ModelFileError, match="nests deeper"):
            io.read_info(crafted)


def test_save_refuses_metadata_that_load_would_refuse(tmp_path):
    model = ff.MLP([3, 2], seed=0)
    with pytest.raises(ValueError, match="nests deeper"):
        io.save(model, tmp_path / "m.npz", info={"deep": _nested(31)})
    with pytest.raises(ValueError, match="characters of JSON"):
        io.save(model, tmp_path / "m.npz", info={"names": ["x" * 1000] * 5000})
    assert _files(tmp_path) == []
    io.save(model, tmp_path / "m.npz", info={"names": ["x" * 1000] * 1000})
    assert io.read_info(tmp_path / "m.npz")["names"][0] == "x" * 1000


def test_oversized_metadata_is_refused(fitted, tmp_path):
    _, _, path, _, _ = fitted
    arrays, meta = helpers.read_npz(path)
    meta["info"] = {"pad": "x" * (io._MAX_META_CHARS + io._NPY_HEADER_MAX)}
    crafted = helpers.write_npz(tmp_path / "big.npz", arrays, meta)
    with pytest.raises(io.ModelFileError, match="'__fastfit__' declares .* refused unread"):
        io.load(crafted)


# ---------------------------------------------------------------- temporary files of killed saves

def _tmp_name(target):
    return f".{target}.{secrets.token_hex(8)}.tmp"


def test_save_removes_stale_temporary_files_of_its_target(tmp_path):
    hour_ago = time.time() - 3600
    stale = [tmp_path / _tmp_name("m.npz") for _ in range(3)]
    fresh = tmp_path / _tmp_name("m.npz")            # perhaps a save running now in another process
    others = [tmp_path / _tmp_name("other.npz"),     # another target's
              tmp_path / ".m.npz.notours.tmp",       # not a name save makes
              tmp_path / "m.npz.0123456789abcdef.tmp"]
    for p in stale + [fresh] + others:
        p.write_bytes(b"PK\x03\x04 half")
    for p in stale + others:
        os.utime(p, (hour_ago, hour_ago))
    io.save(ff.MLP([3, 2], seed=0), tmp_path / "m.npz")
    assert sorted(_files(tmp_path)) == sorted(["m.npz", fresh.name] + [p.name for p in others])


@pytest.mark.skipif(os.name != "posix", reason="needs SIGKILL")
def test_a_killed_save_leaves_a_temporary_file_the_next_save_removes(tmp_path):
    """A process killed while writing leaves its temporary file; once it is stale, the next
    save of the same target removes it (they do not pile up)."""
    script = (
        "import sys, time, numpy as np, fastfit as ff\n"
        "from fastfit import io\n"
        "def stuck(f, **arrays):\n"
        "    f.write(b'PK partial'); f.flush(); print('writing', flush=True); time.sleep(60)\n"
        "np.savez = stuck\n"
        "io.save(ff.MLP([3, 2], seed=0), sys.argv[1])\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "m.npz")], stdout=subprocess.PIPE,
                            env=helpers.subprocess_env(), cwd=tmp_path)
    try:
        assert proc.stdout.readline().strip() == b"writing"
    finally:
        proc.kill()
        proc.wait()
    left = [name for name in _files(tmp_path) if name.endswith(".tmp")]
    assert len(left) == 1 and left[0].startswith(".m.npz.")
    io.save(ff.MLP([3, 2], seed=1), tmp_path / "m.npz")
    assert sorted(_files(tmp_path)) == sorted(["m.npz", left[0]])   # fresh: could be a running save
    old = time.time() - io._STALE_TMP_SECONDS - 60
    os.utime(tmp_path / left[0], (old, old))
    io.save(ff.MLP([3, 2], seed=2), tmp_path / "m.npz")
    assert _files(tmp_path) == ["m.npz"]
