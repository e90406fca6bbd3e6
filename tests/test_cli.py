"""The command line end to end, in subprocesses, on a small CSV."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastfit as ff

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(ff.__file__)))


def run(*args, cwd):
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "fastfit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def data_dir(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 3))
    label = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + 2 * (X[:, 2] > 0.8)
    write_csv(tmp_path / "train.csv", ["a", "b", "c", "label"],
              [[f"{x:.6f}" for x in row] + [int(l)] for row, l in zip(X, label)])
    write_csv(tmp_path / "new.csv", ["c", "a", "b"], [[f"{r[2]:.6f}", f"{r[0]:.6f}", f"{r[1]:.6f}"] for r in X[:20]])
    return tmp_path


def test_fit_predict_info_round_trip(data_dir):
    r = run("fit", "train.csv", "--target", "label", "--hidden", "32,32", "--epochs", "30", "--lr", "1e-2",
            "--validation-split", "0.2", "--out", "m.npz", "--quiet", cwd=data_dir)
    assert r.returncode == 0, r.stderr
    assert "saved to m.npz" in r.stdout and "val_accuracy" in r.stdout
    r = run("predict", "m.npz", "new.csv", cwd=data_dir)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "label" and len(lines) == 21
    predicted = np.array([int(v) for v in lines[1:]])
    assert set(predicted) <= {0, 1, 2, 3}
    # the columns are found by name, whatever their order in the new file
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 3))[:20]
    truth = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + 2 * (X[:, 2] > 0.8)
    assert np.mean(predicted == truth) >= 0.8
    r = run("info", "m.npz", cwd=data_dir)
    assert r.returncode == 0, r.stderr
    assert "MLP 3-32-32-4" in r.stdout and "features:   a, b, c" in r.stdout and "Adam" in r.stdout


def test_regression_target_and_predictions_to_a_file(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, size=(200, 2))
    y = X[:, 0] * 2 - X[:, 1] + 0.1
    write_csv(tmp_path / "reg.csv", ["x1", "x2", "y"], np.column_stack([X, y]).round(6).tolist())
    assert run("fit", "reg.csv", "--target", "y", "--epochs", "40", "--lr", "1e-2", "--quiet", cwd=tmp_path).returncode == 0
    r = run("predict", "model.npz", "reg.csv", "--out", "pred.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "pred.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["y"] and len(rows) == 201
    pred = np.array([float(r[0]) for r in rows[1:]])
    assert np.mean((pred - y) ** 2) < 0.05


def test_npz_data(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((100, 4))
    np.savez(tmp_path / "d.npz", X=X, y=(X[:, 0] > 0).astype(int))
    assert run("fit", "d.npz", "--epochs", "5", "--quiet", cwd=tmp_path).returncode == 0
    r = run("predict", "model.npz", "d.npz", cwd=tmp_path)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 101


def one_line_error(result):
    assert result.returncode != 0
    err = result.stderr.strip()
    assert err.startswith("fastfit: error:") and "\n" not in err and "Traceback" not in result.stderr, result.stderr
    return err


def test_missing_target_column_is_one_clear_line(data_dir):
    err = one_line_error(run("fit", "train.csv", "--target", "nope", cwd=data_dir))
    assert "'nope'" in err and "columns: a, b, c, label" in err


def test_non_numeric_value_names_line_and_column(data_dir):
    with open(data_dir / "train.csv", "a") as f:
        f.write("0.1,oops,0.3,1\n")
    err = one_line_error(run("fit", "train.csv", "--target", "label", cwd=data_dir))
    assert "line 302" in err and "'b'" in err and "'oops'" in err


def test_saved_model_of_the_wrong_shape_is_refused(data_dir):
    assert run("fit", "train.csv", "--target", "label", "--epochs", "2", "--quiet", "--out", "m.npz",
               cwd=data_dir).returncode == 0
    with np.load(data_dir / "m.npz") as z:
        entries = {k: z[k] for k in z.files}
    entries["params"] = entries["params"][:-5]
    np.savez(data_dir / "broken.npz", **entries)
    for command in (["predict", "broken.npz", "new.csv"], ["info", "broken.npz"]):
        err = one_line_error(run(*command, cwd=data_dir))
        assert "broken.npz" in err and "shape" in err


def test_predict_with_missing_feature_column(data_dir):
    assert run("fit", "train.csv", "--target", "label", "--epochs", "2", "--quiet", cwd=data_dir).returncode == 0
    write_csv(data_dir / "partial.csv", ["a", "b"], [[0.1, 0.2]])
    err = one_line_error(run("predict", "model.npz", "partial.csv", cwd=data_dir))
    assert "'c'" in err


def test_bad_arguments_exit_non_zero(data_dir):
    assert run("fit", "missing.csv", "--target", "label", cwd=data_dir).returncode != 0
    assert run("fit", "train.csv", "--target", "label", "--hidden", "a,b", cwd=data_dir).returncode != 0
    err = one_line_error(run("fit", "train.csv", "--target", "label", "--lr", "-1", cwd=data_dir))
    assert "lr" in err
    assert run("frobnicate", cwd=data_dir).returncode == 2


def test_demo_runs_and_reports_accuracy(tmp_path):
    r = run("demo", "--epochs", "3", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "test accuracy:" in r.stdout


def test_config_shows_the_blas():
    r = run("config", cwd=PACKAGE_ROOT)
    assert r.returncode == 0 and "kernel choice at import" in r.stdout and "BLAS used by fastfit" in r.stdout


def test_demo_without_mnist1d_says_so_and_uses_spirals(monkeypatch, capsys):
    import sys as _sys
    from fastfit.cli import main
    monkeypatch.setitem(_sys.modules, "mnist1d", None)       # import mnist1d now fails
    monkeypatch.setitem(_sys.modules, "mnist1d.data", None)
    assert main(["demo", "--epochs", "5", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "mnist1d is not installed" in out and "spirals" in out and "test accuracy:" in out
