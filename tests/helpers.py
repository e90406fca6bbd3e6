"""Helpers shared by the tests: the tolerances of the core against the reference, targets, loss pairs;
data, step-API replays of a fit and crafted model files for the reliability tests."""
import json
import os
import zipfile

import numpy as np

import fastfit as ff
from fastfit import _threads
from fastfit import reference as ref

#: Agreement required between the compiled core and the reference (README: guarantees).
TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}


def assert_matches(actual, expected, dtype, what=""):
    """Equal to the dtype's tolerance, relative to the size of the expected values."""
    tol = TOL[np.dtype(dtype)]
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale, err_msg=what)


LOSS_NAMES = ["SquaredError", "SoftmaxCrossEntropy", "BinaryCrossEntropy"]


def make_targets(loss_name, n, n_out, rng, dtype=np.float64):
    """Targets that suit the loss: real values, class labels, or 0/1."""
    if loss_name == "SoftmaxCrossEntropy":
        return rng.integers(0, n_out, size=n)
    if loss_name == "BinaryCrossEntropy":
        return (rng.random((n, n_out)) < 0.5).astype(dtype)
    return rng.standard_normal((n, n_out)).astype(dtype)


def pair(loss_name, reduction="mean"):
    """The same loss from the core and from the reference."""
    return getattr(ff, loss_name)(reduction=reduction), getattr(ref, loss_name)(reduction=reduction)



#: The folder holding the fastfit these tests imported: a build in place in the
#: repository, or site-packages after `pip install .` (where the repository's own
#: fastfit/ folder has no compiled core and must not shadow the installed one).
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(ff.__file__)))


def subprocess_env():
    """The environment for a Python subprocess that must import this same fastfit; start it
    with ``cwd=PACKAGE_ROOT`` (or any folder but the repository) when it runs ``-c`` code."""
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def classification_data(n=96, d=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, classes, size=n)


def replay_steps(model, optimizer, loss, X, y, batch_size, n_steps, seed):
    """Take the first n_steps of ``fit(..., batch_size, seed=seed)`` (shuffled) through the
    step API: the same permutations from default_rng(seed), one per epoch, the same batches.
    Leaves the model at the trajectory point (Nesterov's finalize), as a stopped fit does."""
    rng = np.random.default_rng(seed)
    n = len(X)
    n_batches = -(-n // batch_size)
    # one BLAS thread, as fit uses for steps this small: the step API leaves BLAS at its
    # default count, which makes small products many times slower on a busy machine
    with _threads.blas_threads(1):
        optimizer.prepare(model)
        done = 0
        while done < n_steps:
            order = rng.permutation(n)
            for j in range(n_batches):
                if done == n_steps:
                    break
                rows = order[j * batch_size:(j + 1) * batch_size]
                _, dout = loss.value_and_grad(model.forward(X[rows]), y[rows])
                model.backward(dout)
                optimizer.step(model)
                done += 1
        optimizer.finalize(model)
    return model


# ---------------------------------------------------------------- model files

def read_npz(path):
    """({name: array}, metadata dict) of a saved model file."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return arrays, json.loads(str(arrays.pop("__fastfit__")[()]))


def write_npz(path, arrays, meta):
    """An .npz as fastfit writes it, from arrays and a metadata dict (or a raw JSON text)."""
    text = meta if isinstance(meta, str) else json.dumps(meta)
    np.savez(path, **arrays, __fastfit__=np.array(text))
    return path


def rewrite(path, out, meta_update=None, drop=(), replace=None):
    """A copy of the model file at path with its metadata edited, members dropped or replaced."""
    arrays, meta = read_npz(path)
    for key in drop:
        arrays.pop(key, None)
    if meta_update:
        meta_update(meta)
    arrays.update(replace or {})
    return write_npz(out, arrays, meta)


def npy_header(dtype, shape, length=None):
    """The bytes of a .npy (version 1.0) header for an array of dtype and shape; ``length``
    pads it with spaces to that many bytes in all (the format allows any padding)."""
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": tuple(shape)})
    header = buf.getvalue()
    if length is not None:
        text = header[10:-1] + b" " * (length - len(header))
        header = header[:8] + len(text + b"\n").to_bytes(2, "little") + text + b"\n"
    return header


def npy_bytes(array):
    import io
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asanyarray(array), allow_pickle=True)
    return buf.getvalue()


def write_members(path, members, compression=zipfile.ZIP_STORED):
    """A zip of {member name: bytes or array (written as .npy)}; names are used as given."""
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, value in members.items():
            zf.writestr(name, value if isinstance(value, bytes) else npy_bytes(value))
    return path


def write_zip_member_of_zeros(zf, name, header, n_bytes, chunk=1 << 22):
    """Write ``name`` = header + n_bytes zero bytes, deflated, streaming (so little memory)."""
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    with zf.open(info, "w", force_zip64=True) as f:
        f.write(header)
        zeros = bytes(chunk)
        left = n_bytes
        while left:
            part = min(left, chunk)
            f.write(zeros[:part])
            left -= part


def version_1_file(path, model, optimizer_entry=None, arrays=None):
    """A file in format version 1 (what fastfit wrote before format 2): the optimizer as
    {"class", "lr", "attrs", "bound"}, its state arrays named optimizer._m / optimizer._v."""
    meta = {"format": "fastfit.MLP", "version": 1, "fastfit_version": "0.1.0", "sizes": list(model.sizes),
            "dtype": model.dtype.str, "seed": 0, "optimizer": optimizer_entry, "info": None}
    members = {"params": np.ascontiguousarray(model.params)}
    members.update(arrays or {})
    return write_npz(path, members, meta)


def adam_version_1_entry(t=3, **extra_attrs):
    attrs = {"convention": "seed", "t": t, "_m": {"__array__": "optimizer._m"},
             "_v": {"__array__": "optimizer._v"}, "betas": {"__tuple__": [0.9, 0.999]}, "eps": 1e-08}
    attrs.update(extra_attrs)
    return {"class": "Adam", "lr": 0.01, "attrs": attrs, "bound": True}


def trains(model, optimizer, X, y, epochs=1):
    """One short fit; returns the history."""
    return ff.fit(model, X, y, loss="cross_entropy", optimizer=optimizer, batch_size=16, epochs=epochs,
                  verbose=0)
