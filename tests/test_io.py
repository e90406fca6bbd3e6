"""Saving and loading (fastfit.io): round trips, exact resumption, atomic writes, broken files."""
import json
import os
import pickle
import zipfile

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
    _expect_error(objects, "cannot be read")  # never unpickled


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
                  r"params has shape \(562,\).*need \(563,\)")
    _expect_error(_rewrite(path, tmp_path / "c.npz", replace={"params": model.params.astype(np.float32)}),
                  "params are float32")

    def sizes(meta):
        meta["sizes"] = [10, 41, 3]
    _expect_error(_rewrite(path, tmp_path / "d.npz", meta_update=sizes), "need")

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
