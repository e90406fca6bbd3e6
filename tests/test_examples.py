"""The example scripts run (non-interactive matplotlib) and write their pictures."""
import os
import runpy
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


@pytest.mark.parametrize("script", ["optimizer_paths.py", "training_curves.py", "memory.py"])
def test_example_script_writes_its_png(script, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    out = tmp_path / script.replace(".py", ".png")
    monkeypatch.setattr(sys, "argv", [script, str(out)])
    runpy.run_path(os.path.join(EXAMPLES, script), run_name="__main__")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_optimizer_paths_are_fastfits_optimizers_and_descend():
    import numpy as np
    import fastfit as ff
    from fastfit.plot import optimizer_paths

    def grad(p):
        return np.array([0.2 * p[0], 4.0 * p[1]])

    paths = optimizer_paths(grad, (3.0, 1.0), {"gd": ff.SGD(0.1), "nesterov": ff.SGD(0.1, momentum=0.9, nesterov=True),
                                                "adam": ff.Adam(0.1)}, steps=200)
    for name, path in paths.items():
        assert path.shape == (201, 2)
        assert np.linalg.norm(path[-1]) < 0.2 * np.linalg.norm(path[0]), name
    # gradient descent's first step is exactly phi - lr * grad
    np.testing.assert_allclose(paths["gd"][1], np.array([3.0, 1.0]) - 0.1 * grad(np.array([3.0, 1.0])))
