"""fastfit._allreduce: the bfloat16 conversions in-process, the all-reduce under ``mpiexec -n 2`` and ``-n 3``.

The MPI part launches tests/mpi_scripts/allreduce.py as a subprocess (as
tests/test_distributed.py does), so a hang fails the test instead of stalling
the suite; it is skipped where mpi4py or a launcher is missing.
"""
import json
import os
import struct
import sys

import numpy as np
import pytest

from fastfit._allreduce import bfloat16_decode, bfloat16_encode

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "mpi_scripts", "allreduce.py")


# ---------------------------------------------------------------- bfloat16, no MPI

def _reference_bf16(x):
    """bfloat16 bits of float32 x by exact arithmetic: the nearer of the two neighbours, ties to even."""
    (u,) = struct.unpack("<I", struct.pack("<f", x))
    if x != x:
        return None  # any NaN pattern is fine
    lo = u & 0xFFFF0000
    hi = lo + 0x10000
    flo = struct.unpack("<f", struct.pack("<I", lo))[0]
    if (lo & 0x7FFFFFFF) == 0x7F800000:  # infinity stays itself
        return lo >> 16
    if ((hi >> 16) & 0x7FFF) == 0x7F80:  # the upper neighbour is infinity: round by bits
        fhi = float("inf") if not (u >> 31) else float("-inf")
    else:
        fhi = struct.unpack("<f", struct.pack("<I", hi & 0xFFFFFFFF))[0]
    dlo, dhi = abs(x - flo), abs(fhi - x) if fhi not in (float("inf"), float("-inf")) else None
    if dhi is None:  # compare against the halfway point in bits
        rem = u & 0xFFFF
        return (hi >> 16) if rem > 0x8000 or (rem == 0x8000 and (lo >> 16) & 1) else lo >> 16
    if dlo < dhi or (dlo == dhi and not (lo >> 16) & 1):
        return lo >> 16
    return (hi >> 16) & 0xFFFF


def test_bfloat16_rounds_to_nearest_even():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2 ** 32, 20_000, dtype=np.uint64).astype(np.uint32)
    edge = np.array([0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F808001,   # ties to even, either side
                     0x7F7FFFFF, 0x7F7F8000, 0xFF7FFFFF,               # round up past the largest: inf
                     0x00000001, 0x00008000, 0x00018000, 0x80008001,   # subnormals
                     0x7F800000, 0xFF800000, 0x00000000, 0x80000000], np.uint32)
    x = np.concatenate([bits, edge]).view(np.float32)
    got = bfloat16_encode(x, np.empty(x.size, np.uint16))
    for value, g in zip(x.tolist(), got.tolist()):
        want = _reference_bf16(value)
        if want is None:
            assert (g & 0x7F80) == 0x7F80 and (g & 0x7F), f"NaN became {g:#06x}"
        else:
            assert g == want, f"{value!r}: {g:#06x} != {want:#06x}"


def test_bfloat16_keeps_nan_and_widens_exactly():
    payloads = np.array([0x7FFFFFFF, 0xFFFFFFFF, 0x7FC00000, 0x7F800001, 0x7FFF8000], np.uint32)
    h = bfloat16_encode(payloads.view(np.float32), np.empty(5, np.uint16))
    assert np.isnan(bfloat16_decode(h, np.empty(5, np.float32))).all(), [hex(v) for v in h]
    # every bfloat16 pattern widens to the float32 with the same top half, and back unchanged
    allbits = np.arange(2 ** 16, dtype=np.uint16)
    wide = bfloat16_decode(allbits, np.empty(allbits.size, np.float32))
    assert np.array_equal(wide.view(np.uint32) >> 16, allbits.astype(np.uint32))
    finite = np.isfinite(wide)
    again = bfloat16_encode(wide[finite], np.empty(int(finite.sum()), np.uint16))
    assert np.array_equal(again, allbits[finite])


def test_bfloat16_relative_error_bound():
    x = np.random.default_rng(1).standard_normal(100_000).astype(np.float32) * 1e-20
    back = bfloat16_decode(bfloat16_encode(x, np.empty(x.size, np.uint16)), np.empty(x.size, np.float32))
    assert (np.abs(back - x) <= np.abs(x) * 2.0 ** -8).all()  # half a unit in the last of 8 bits
    assert (np.abs(back - x) > np.abs(x) * 2.0 ** -9).any()  # and that bound is reached



def test_bfloat16_sums_widen_then_add_in_float32():
    from fastfit import _bfloat16
    rng = np.random.default_rng(2)
    a = bfloat16_encode(rng.standard_normal(1001).astype(np.float32), np.empty(1001, np.uint16))
    b = bfloat16_encode(rng.standard_normal(1001).astype(np.float32), np.empty(1001, np.uint16))
    wide_a = bfloat16_decode(a, np.empty(1001, np.float32))
    wide_b = bfloat16_decode(b, np.empty(1001, np.float32))
    out = np.empty(1001, np.float32)
    _bfloat16.sum_into(out, a, b)
    np.testing.assert_array_equal(out, wide_a + wide_b)
    acc = wide_a.copy()
    _bfloat16.add(acc, b)
    np.testing.assert_array_equal(acc, wide_a + wide_b)
    with pytest.raises(ValueError, match="1001 and 1000 elements"):
        _bfloat16.add(acc, b[:1000])
    with pytest.raises(ValueError, match="bfloat16 sum"):
        _bfloat16.sum_into(out[:5], a, b)

# ---------------------------------------------------------------- the all-reduce, under MPI

mpi4py = pytest.importorskip("mpi4py", reason="fastfit._allreduce needs mpi4py: pip install mpi4py mpich")
sys.path.insert(0, HERE)
from test_distributed import MPIEXEC, launcher, mpirun  # noqa: E402,F401  (the shared launcher checks)

needs_mpiexec = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec or mpirun found: pip install "
                                                             "mpi4py mpich (the mpich wheel ships one)")


def _run(n, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"allreduce{n}") / "out.json"
    proc, _ = mpirun(n, SCRIPT, out, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def two(launcher, tmp_path_factory):
    return _run(2, tmp_path_factory)


@pytest.fixture(scope="module")
def three(launcher, tmp_path_factory):
    return _run(3, tmp_path_factory)


def _same_on_every_rank(per_rank):
    """per_rank[rank][case]['crc']: every case's result has the same bits on every rank."""
    return all(len({r[i]["crc"] for r in per_rank}) == 1 for i in range(len(per_rank[0])))


@needs_mpiexec
def test_exact_mode_equals_mpi_allreduce_bit_for_bit_on_two_ranks(two):
    cases = two["exact"][0]
    assert len(cases) == 3 * (5 + 6 + 6) * 2
    assert {c["algorithm"] for c in cases} == {"auto", "ring"}
    bad = [c for c in cases if not c["bitwise"]]
    assert not bad, bad[:3]
    assert _same_on_every_rank(two["exact"])


@needs_mpiexec
def test_exact_mode_on_three_ranks_is_one_result_everywhere(three):
    refused = three["errors"][0][0]["{'algorithm': 'pair'}"]
    assert refused and "exactly 2 ranks" in refused
    # three addends: the ring's order differs from MPI's, so equal to rounding, and the same bits on every rank
    for c in three["exact"][0]:
        eps = np.finfo(c["dtype"]).eps
        assert c["rel_err"] <= 2 * eps, c
    assert _same_on_every_rank(three["exact"])


@needs_mpiexec
def test_overlapping_operations_one_per_layer(two):
    for r in two["layers"]:
        assert r[0]["bitwise"] and r[0]["all_done"] and r[0]["seconds_set"], r
    assert _same_on_every_rank(two["layers"])
    assert two["mpi_algorithm"][0][0]["bitwise"] and _same_on_every_rank(two["mpi_algorithm"])


@needs_mpiexec
@pytest.mark.parametrize("ranks", ["two", "three"])
def test_bfloat16_mode_same_bits_everywhere_and_accurate(ranks, request):
    res = request.getfixturevalue(ranks)
    assert _same_on_every_rank(res["bfloat16"])
    cases = res["bfloat16"][0]
    assert {c["algorithm"] for c in cases} == ({"pair", "ring"} if res["size"] == 2 else {"ring"})
    for case in cases:
        if case["algorithm"] == "ring":
            assert case["low_bits_zero"], case  # the owner's rounded sum, on every rank
        # each addend rounded at most `size` times, and the sum once, by at most 2**-8 relative
        assert case["rel_err"] <= (res["size"] + 1) * 2.0 ** -8, case
        if res["size"] == 2:
            assert case["matches_model"], case


@needs_mpiexec
def test_bfloat16_mode_keeps_nan_and_infinity(two):
    assert _same_on_every_rank(two["nonfinite"])
    r = two["nonfinite"][1][0]  # rank 1 never held a NaN: it got them through the wire
    assert r["nan"] == [False, True, False, True, False, False, False, False]
    assert r["inf"] == [False, False, True, False, False, False, False, False]


@needs_mpiexec
def test_a_late_rank_times_out_then_completes(two):
    r0 = two["late_rank"][0][0]
    assert r0["timed_out"] and "not complete after 0.2 s" in r0["timed_out"]
    assert all(r[0]["sum_ok"] for r in two["late_rank"])


@needs_mpiexec
def test_bad_input_is_refused_clearly(two):
    e = two["errors"][0][0]
    assert "contiguous 1-D" in e["2-D"] and "contiguous 1-D" in e["strided"] and "contiguous 1-D" in e["list"]
    assert "float32 or float64" in e["int"]
    assert "writeable" in e["read-only"]
    assert "needs a float32 buffer" in e["bf16-float64"]
    assert "compress must be one of" in e["{'compress': 'float16'}"]
    assert "algorithm must be" in e["{'algorithm': 'tree'}"]
    assert "at least 64 bytes" in e["{'chunk_bytes': 8}"]
    assert "progress must be" in e["{'progress': 'never'}"]
    assert "not 'mpi'" in e["{'algorithm': 'mpi', 'compress': 'bfloat16'}"]
    assert e["{'algorithm': 'pair'}"] is None  # two ranks: allowed
    assert "poll_s must be" in e["{'poll_s': -1}"]


@needs_mpiexec
def test_close_with_an_operation_under_way_times_out(two):
    message, done, thread_ended = two["close_pending"][0][0]["result"]
    assert "still under way after 0.2 s" in message
    assert done and thread_ended
