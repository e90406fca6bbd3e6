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


def _reference_paths(grad, start, optimizers, steps):
    """optimizer_paths' loop over fastfit.reference's optimizers and a 1-1 reference MLP."""
    import numpy as np
    from fastfit import reference as ref

    paths = {}
    for name, opt in optimizers.items():
        point = ref.MLP([1, 1], dtype=np.float64)
        point.params[:] = start
        opt.prepare(point)
        trail = [np.array(start, dtype=np.float64)]
        for _ in range(steps):
            point.grads[:] = grad(point.params)
            opt.step(point)
            opt.finalize(point)
            trail.append(point.params.copy())
            opt.prepare(point)
        paths[name] = np.array(trail)
    return paths


@pytest.mark.parametrize("surface", ["saddle", "valley"])
def test_the_example_paths_are_the_reference_optimizers_paths(surface):
    """Each path the example draws equals the reference optimizer's path to 1e-10: an
    optimizer that dropped Adam's bias correction, or Nesterov's look-ahead, would not."""
    import numpy as np
    from fastfit import reference as ref
    from fastfit.plot import optimizer_paths

    example = runpy.run_path(os.path.join(EXAMPLES, "optimizer_paths.py"))
    grad, start, lr = {"saddle": (example["saddle_grad"], (0.3, 1.4), 0.05),
                       "valley": (example["valley_grad"], (-3.5, 1.0), 0.37)}[surface]
    ours = {k: v for k, v in example["optimizers"](lr).items() if v is not None}
    theirs = {"gradient descent": ref.SGD(lr), "momentum": ref.SGD(lr, momentum=0.9),
              "Nesterov": ref.SGD(lr, momentum=0.9, nesterov=True), "Adam": ref.Adam(lr=0.05)}
    assert sorted(ours) == sorted(theirs)
    got, expected = optimizer_paths(grad, start, ours, steps=80), _reference_paths(grad, start, theirs, steps=80)
    for name in theirs:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-10, atol=1e-10, err_msg=name)
    # the paths differ from one another, so each comparison tells the optimizers apart
    assert not np.allclose(got["momentum"], got["Nesterov"], atol=1e-3)
