"""Limits: sizes beyond BLAS's 32-bit integers are refused clearly; memmapped data trains
without being copied whole into memory."""
import tracemalloc

import numpy as np
import pytest

import fastfit as ff
from fastfit import _checks


def test_forward_refuses_more_rows_than_blas_can_index():
    model = ff.MLP([3, 4, 2])
    huge = np.broadcast_to(np.zeros(3, dtype=np.float32), (2 ** 31, 3))  # no memory behind it
    before = model.params.copy()
    with pytest.raises(ValueError, match=r"X has 2147483648 rows.*predict"):
        model.forward(huge)
    np.testing.assert_array_equal(model.params, before)


def test_predict_refuses_a_chunk_larger_than_blas_can_index():
    with pytest.raises(ValueError, match="batch_size must be at most 2147483647"):
        ff.MLP([3, 2]).predict(np.zeros((2, 3)), batch_size=2 ** 31)


def test_layer_wider_than_blas_can_index_is_refused_before_allocation():
    with pytest.raises(ValueError, match="32-bit"):
        ff.MLP([3, 2 ** 31, 2])


def test_fit_batch_limit(monkeypatch):
    """The check itself, with the limit lowered so that it can run in a test."""
    monkeypatch.setattr(_checks, "BLAS_INT_MAX", 100)
    X, y = np.zeros((300, 3)), np.zeros(300, dtype=int)
    with pytest.raises(ValueError, match="batch_size must be at most 100"):
        ff.fit(ff.MLP([3, 2]), X, y, loss="cross_entropy", batch_size=200)
    with pytest.raises(ValueError, match="batch_size must be at most 100"):
        ff.fit(ff.MLP([3, 2]), X, y, loss="cross_entropy", batch_size=None)


def test_memmap_dataset_trains_without_a_whole_copy(tmp_path):
    n, d = 200_000, 64                                     # 51 MB of float32 on disk
    path = tmp_path / "X.f32"
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    rng = np.random.default_rng(0)
    for start in range(0, n, 50_000):
        X[start:start + 50_000] = rng.standard_normal((50_000, d), dtype=np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    X.flush()
    del X
    X = np.load(path, mmap_mode="r")                       # read-only memmap
    model = ff.MLP([d, 32, 2], seed=0)
    buffers = model.memory_report(256, ff.Adam(), ff.SoftmaxCrossEntropy())["total"]
    assert X.nbytes > 20 * buffers                          # the data is many times the model's buffers
    tracemalloc.start()
    try:
        history = ff.fit(model, X, y, loss=ff.SoftmaxCrossEntropy(), optimizer=ff.Adam(1e-3), batch_size=256, epochs=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert history["loss"][0] < 0.6
    # NumPy reports its allocations to tracemalloc: no copy of X (51 MB) was made; the
    # largest allocations are the permutation and labels (n * 8 bytes each) and the buffers.
    assert peak < X.nbytes / 4, f"peak traced allocation {peak / 1e6:.1f} MB"
