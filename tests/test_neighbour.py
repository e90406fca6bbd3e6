"""fastfit is a good neighbour: importing and using it changes nothing other libraries read.

No environment variable of another runtime is set (OPENBLAS_CORETYPE, which selects
SciPy's own OpenBLAS kernels before it loads, is the documented exception), no OpenMP
runtime is loaded, and every BLAS's thread count is what it was once fits end.
"""
import json
import subprocess
import sys

import helpers

SCRIPT = r"""
import json, os
before_env = dict(os.environ)
import numpy as np
import fastfit as ff
from threadpoolctl import threadpool_info  # after fastfit: its first import sets KMP_DUPLICATE_LIB_OK
import scipy.linalg.cython_blas  # loaded by fastfit anyway
before_threads = {info["filepath"]: info["num_threads"] for info in threadpool_info()}
rng = np.random.default_rng(0)
small = ff.MLP([8, 16, 3], seed=0)
ff.fit(small, rng.standard_normal((64, 8)), rng.integers(0, 3, 64), ff.SoftmaxCrossEntropy(), epochs=2, verbose=0)
big = ff.MLP([300, 260, 10], seed=0)   # large enough to split updates across fastfit's threads
ff.fit(big, rng.standard_normal((128, 300)), rng.integers(0, 10, 128), ff.SoftmaxCrossEntropy(),
       batch_size=64, epochs=2, n_threads=2, verbose=0)
after_threads = {info["filepath"]: info["num_threads"] for info in threadpool_info()}
changed = sorted(k for k in set(os.environ) | set(before_env)
                 if os.environ.get(k) != before_env.get(k) and k != "OPENBLAS_CORETYPE")
with open("/proc/self/maps") as maps:
    openmp = sorted({line.split()[-1] for line in maps if "libgomp" in line or "libomp" in line or "libiomp" in line})
print(json.dumps({"changed_env": changed, "threads_before": before_threads, "threads_after": after_threads,
                  "openmp": openmp, "team": ff._core.team_size()}))
"""


def test_using_fastfit_changes_no_environment_variable_and_no_thread_count(tmp_path):
    env = helpers.subprocess_env()
    env.pop("KMP_DUPLICATE_LIB_OK", None)  # as a fresh process has it: this one may have imported threadpoolctl
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120,
                         env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["changed_env"] == [], f"fastfit changed {result['changed_env']}"
    assert result["threads_after"] == result["threads_before"], "a BLAS thread count was left changed"
    assert result["openmp"] == [], f"an OpenMP runtime was loaded: {result['openmp']}"
    assert result["team"] >= 1, "the large fit should have used fastfit's own thread team"
