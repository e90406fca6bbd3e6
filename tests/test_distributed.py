"""fastfit.distributed under a real MPI launcher: ``mpiexec -n 2 python tests/mpi_scripts/...``.

Each test launches the ranks as a subprocess with a time limit, so a hang fails
the test instead of stalling the suite. Skipped, saying why, where mpi4py or
an ``mpiexec`` is not installed (``pip install mpi4py mpich`` brings both).
"""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fastfit as ff

pytest.importorskip("mpi4py", reason="fastfit.distributed needs mpi4py: pip install mpi4py mpich")
from fastfit import distributed  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "mpi_scripts")
EXAMPLES = os.path.join(os.path.dirname(HERE), "examples")
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(ff.__file__)))


def _find_mpiexec():
    """The launcher beside this Python first (the mpich wheel installs it there), then PATH."""
    for name in ("mpiexec", "mpirun"):
        beside = os.path.join(os.path.dirname(sys.executable), name)
        if os.path.exists(beside):
            return beside
    return shutil.which("mpiexec") or shutil.which("mpirun")


MPIEXEC = _find_mpiexec()
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec or mpirun found: pip install mpi4py mpich "
                                                        "(the mpich wheel ships one)")


def _env():
    return dict(os.environ, PYTHONPATH=PACKAGE_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")


def _run(cmd, timeout):
    """Run cmd in its own process group; on overrunning, kill the whole group (launcher and ranks)."""
    proc = subprocess.Popen(cmd, env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} did not end within {timeout} s (a hang):\n{out[-2000:]}\n{err[-2000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def mpirun(n, script, *args, flags=(), timeout=60):
    """Run script on n ranks; (CompletedProcess, seconds). A launch that overruns fails the test."""
    t0 = time.perf_counter()
    proc = _run([MPIEXEC, *flags, "-n", str(n), sys.executable, script, *map(str, args)], timeout)
    return proc, time.perf_counter() - t0


@pytest.fixture(scope="module")
def launcher():
    """The launcher starts 2 ranks of mpi4py's own MPI library (not singletons of a foreign one)."""
    proc = _run([MPIEXEC, "-n", "2", sys.executable, "-c", "from mpi4py import MPI; print(MPI.COMM_WORLD.size)"],
                timeout=60)
    # each rank prints 2 (the two lines may interleave)
    if proc.returncode != 0 or "".join(proc.stdout.split()) != "22":
        pytest.fail(f"{MPIEXEC} -n 2 did not start two ranks of mpi4py's MPI (is it another MPI's launcher?): "
                    f"exit {proc.returncode}, stdout {proc.stdout!r}, stderr {proc.stderr[-2000:]!r}")
    version = subprocess.run([MPIEXEC, "--version"], capture_output=True, text=True, timeout=30)
    return {"hydra": "HYDRA" in version.stdout.upper()}


@pytest.fixture(scope="module")
def equivalence(launcher, tmp_path_factory):
    out = tmp_path_factory.mktemp("mpi") / "equivalence.json"
    proc, _ = mpirun(2, os.path.join(SCRIPTS, "equivalence.py"), out, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(out.read_text())
    assert results["size"] == 2
    return results


# float64, a few epochs: rounding differences only (the gradient's sum splits into two GEMMs and an add)
RTOL = 1e-12


@pytest.mark.parametrize("case", ["sgd_momentum", "adam", "nesterov", "adam_overlap", "ragged_overlap",
                                  "uneven_runs"])
def test_two_ranks_match_one_process_with_the_global_batch(equivalence, case):
    r = equivalence[case]
    assert r["t"][0] == r["t"][1]
    assert r["moved"] > 1e-3, "the fit did not move the parameters: the comparison would prove nothing"
    assert r["params_rel"] < RTOL, r
    assert r["loss_rel"] < RTOL, r
    assert r["ranks_identical"] and r["history_identical"], r
    assert r["runs_identical"], r  # every rank ends its runs of steps at the same steps


def test_ranks_agree_on_where_runs_of_steps_end(equivalence):
    """Each rank sizes its runs from its own timing, and an update that overflowed is found,
    and its run replayed step by step, where a run ends: the ranks take the fewest steps any
    of them wants (here rank 0 wants 1 and rank 1 wants 2), so their runs end together."""
    r = equivalence["uneven_runs"]
    assert r["runs_identical"] and r["runs"][1:] and all(n == 1 for _, n in r["runs"]), r


FACTOR_CASES = ["adam_factors", "ragged_factors", "memmap_factors", "mse_factors", "bce_factors"]


@pytest.fixture(scope="module")
def equivalence_three_ranks(launcher, tmp_path_factory):
    out = tmp_path_factory.mktemp("mpi") / "equivalence3.json"
    proc, _ = mpirun(3, os.path.join(SCRIPTS, "equivalence.py"), out, "adam", *FACTOR_CASES[:3], timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(out.read_text())
    assert results["size"] == 3
    return results


@pytest.mark.parametrize("case, ranks", [(case, 2) for case in FACTOR_CASES] + [(case, 3) for case in FACTOR_CASES[:3]])
def test_the_factor_exchange_matches_one_process(equivalence, equivalence_three_ranks, case, ranks):
    # each rank sends its rows of every layer's input and output gradient (or, where those are
    # more values than the gradient, sums the gradient), and forms the gradient itself
    r = (equivalence if ranks == 2 else equivalence_three_ranks)[case]
    assert any(r["factor_layers"]), r  # the case takes the factor path
    if case == "adam_factors":
        assert all(r["factor_layers"]), r
    if case in ("ragged_factors", "memmap_factors"):
        assert not all(r["factor_layers"]), r  # and the summed gradient beside it
    assert r["t"][0] == r["t"][1]
    assert r["moved"] > 1e-3, r
    assert r["params_rel"] < RTOL and r["loss_rel"] < RTOL, r
    for key in (k for k in r if k.startswith("val_")):
        assert r[key] < RTOL, (key, r)
    assert r["ranks_identical"] and r["history_identical"], r


def test_three_ranks_sum_the_gradient_like_one_process(equivalence_three_ranks):
    r = equivalence_three_ranks["adam"]
    assert r["params_rel"] < RTOL and r["ranks_identical"], r


def test_ragged_batches_and_empty_slices(equivalence):
    # 67 rows in global batches of 33: slices of 16 and 17 rows, then a last batch of one row
    # (rank 0's slice, rows [0//2, 1//2) = [0, 0), is empty: it contributes a zero gradient)
    r = equivalence["ragged"]
    assert r["t"] == [9, 9]
    assert r["params_rel"] < RTOL and r["ranks_identical"], r


@pytest.mark.parametrize("case", ["memmap_validation", "mse_schedule", "bce_drop_last"])
def test_memmap_validation_losses_schedules(equivalence, case):
    r = equivalence[case]
    assert r["params_rel"] < RTOL and r["loss_rel"] < RTOL, r
    val_keys = [k for k in r if k.startswith("val_")]
    assert val_keys, r
    for key in val_keys:
        assert r[key] < RTOL, (key, r)
    assert r["ranks_identical"] and r["history_identical"], r


def test_errors_are_raised_on_every_rank(equivalence):
    per_rank = equivalence["errors"]
    assert len(per_rank) == 2 and per_rank[0] == per_rank[1]
    found = per_rank[0]
    assert "different batch_size" in found["mismatch"] and "ranks [1]" in found["mismatch"]
    assert "NaN" in found["nan"] and "[50, 1]" in found["nan"]
    assert isinstance(found["nonfinite"], list)
    assert "exchange must be one of ('gradient', 'factors'), got 'activations'" in found["exchange"]
    assert "different X (sampled rows)" in found["other_X"], found["other_X"]
    assert "different optimizer" in found["other_schedule"], found["other_schedule"]
    assert found["one_rank_refuses"] == [True, True]  # each rank's own message, at once
    assert found["bad_state"] == [True, True, True]
    for key in ("factors_compress", "factors_overlap"):
        assert "exchange='factors'" in found[key] and "compress and overlap" in found[key], found[key]


def test_rank_0_alone_writes_the_checkpoint(equivalence):
    r = equivalence["checkpoint"]
    assert r["writes_per_rank"] == [2, 0]  # one write per epoch, on rank 0
    assert r["params_equal"] and r["m_equal"] and r["t"][0] == r["t"][1], r


DEAD = os.path.join(SCRIPTS, "dead_rank.py")
TIMEOUT = 3  # seconds fit waits in a collective in these tests


def _assert_clear_error(proc, seconds):
    assert proc.returncode != 0
    assert "RANK 0 CAUGHT" in proc.stderr, proc.stderr[-3000:]
    assert "gradient all-reduce at epoch 1, step 6" in proc.stderr
    assert "rank 1 of 2 has not joined it" in proc.stderr
    assert "silent=[1] epoch=1 step=6" in proc.stderr
    assert seconds < TIMEOUT + 20, seconds


def test_a_rank_that_hangs_ends_the_job_with_a_clear_error(launcher):
    proc, seconds = mpirun(2, DEAD, "hang", TIMEOUT, timeout=60)
    _assert_clear_error(proc, seconds)


def test_a_rank_that_dies_ends_the_job_with_a_clear_error(launcher):
    # MPICH's launcher would kill the survivors itself at once (next test); without its cleanup
    # only fastfit's timeout stands between the survivors and a hang
    if not launcher["hydra"]:
        pytest.skip("-disable-auto-cleanup is MPICH's (Hydra) option; this launcher is another MPI's")
    proc, seconds = mpirun(2, DEAD, "exit", TIMEOUT, flags=("-disable-auto-cleanup",), timeout=60)
    _assert_clear_error(proc, seconds)


def test_a_rank_that_dies_under_the_default_launcher_ends_the_job(launcher):
    proc, seconds = mpirun(2, DEAD, "exit", TIMEOUT, timeout=60)
    assert proc.returncode != 0
    assert seconds < TIMEOUT + 20


@pytest.mark.parametrize("exchange", ["gradient", "factors"])
def test_example_runs_on_two_ranks(launcher, exchange):
    proc, _ = mpirun(2, os.path.join(EXAMPLES, "distributed_fit.py"), "--epochs", "5", "--exchange", exchange,
                     timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert any("2 ranks" in line for line in lines), proc.stdout
    assert proc.stdout.count("test accuracy") == 1, proc.stdout  # printed by rank 0 only
    assert f"exchanging {exchange}" in proc.stdout, proc.stdout


def test_compressed_sums_train_mnist1d_as_well_as_exact_ones(launcher, tmp_path):
    """bfloat16 on the wire, overlapped with the backward pass or after it: not bit-equal to the
    exact fit, but as accurate (mean test accuracy over 4 seeds within one point)."""
    pytest.importorskip("mnist1d")
    out = tmp_path / "compressed.json"
    proc, _ = mpirun(2, os.path.join(SCRIPTS, "compressed.py"), out, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(out.read_text())
    assert r["exact"] > 0.5, r  # both learn
    assert abs(r["bfloat16"] - r["exact"]) <= 0.01, r
    assert abs(r["bfloat16_after"] - r["exact"]) <= 0.01, r
    assert r["differ"], "the compressed fit gave the exact fit's parameters: nothing was compressed"
    assert r["ranks_identical"], r


@pytest.mark.parametrize("timeout,exc", [(-1, ValueError), (math.inf, ValueError), ("x", TypeError),
                                         (True, TypeError)], ids=repr)
def test_bad_timeout_is_refused_by_fit_and_evaluate(timeout, exc):
    """Checked in this process before any message: a bad timeout would abort the job."""
    from mpi4py import MPI
    model = ff.MLP([3, 4, 2], seed=0)
    X, y = np.zeros((8, 3)), np.arange(8) % 2
    for call in (lambda: distributed.evaluate(model, X, y, "cross_entropy", comm=MPI.COMM_SELF, timeout=timeout),
                 lambda: distributed.fit(model, X, y, "cross_entropy", comm=MPI.COMM_SELF, timeout=timeout)):
        with pytest.raises(exc, match="timeout"):
            call()


def test_a_checkpoint_that_names_a_folder_is_refused_before_training(tmp_path):
    from mpi4py import MPI
    model, opt = ff.MLP([3, 4, 2], seed=0), ff.Adam()
    before = model.params.copy()
    with pytest.raises(ValueError, match="is a folder"):
        distributed.fit(model, np.zeros((8, 3)), np.arange(8) % 2, "cross_entropy", opt, comm=MPI.COMM_SELF,
                           checkpoint=str(tmp_path), verbose=0)
    np.testing.assert_array_equal(model.params, before)
    assert opt.state_dict()["bound"] is None
