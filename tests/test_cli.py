"""The command line on real files: fit, predict, info, demo, config, and one clear line for
every mistake. Most commands run in-process through fastfit.cli.main; a few in a subprocess."""
import csv
import io
import os
import subprocess
import sys

import numpy as np
import pytest

import fastfit as ff
from fastfit import cli, tables

pd = pytest.importorskip("pandas")

PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(ff.__file__)))


def fastfit(*args):
    """Run the command line in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        status = cli.main([str(a) for a in args])
    finally:
        sys.stdout, sys.stderr = old
    return status, out.getvalue(), err.getvalue()


def ok(*args):
    status, out, err = fastfit(*args)
    assert status == 0, err
    return out


def one_line_error(*args, status=None):
    """The command fails with exactly one line, 'fastfit: error: ...', and no traceback."""
    code, out, err = fastfit(*args)
    assert code != 0, out
    if status is not None:
        assert code == status
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastfit: error: "), err
    assert "Traceback" not in err and len(lines[0]) < 600
    return lines[0]


def subprocess_fastfit(*args, cwd):
    env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "fastfit", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def features_and_label(n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    label = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + 2 * (X[:, 2] > 0.8)
    return X, label


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A directory with train.csv (written by DataFrame.to_csv, index included) and new.csv."""
    monkeypatch.chdir(tmp_path)
    X, label = features_and_label()
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    frame["label"] = label
    frame.to_csv("train.csv")
    frame[["c", "a", "b"]].iloc[:20].to_csv("new.csv", index=False)
    return tmp_path


FAST = ("--hidden", "16", "--epochs", "3", "--quiet")


def trained(path="m.npz", data="train.csv", *extra):
    ok("fit", data, "--target", "label", *FAST, "--out", path, *extra)
    return path


# ---------------------------------------------------------------- fit, predict, info

def test_fit_predict_info_round_trip(work):
    out = ok("fit", "train.csv", "--target", "label", "--hidden", "32,32", "--epochs", "30", "--lr", "1e-2",
             "--validation-split", "0.2", "--patience", "10", "--out", "m.npz", "--quiet")
    assert "first column of train.csv has no name" in out           # the to_csv index, left out
    assert "task: classification (auto:" in out and "saved to m.npz" in out
    assert "validation accuracy" in out and "best epoch" in out
    lines = ok("predict", "m.npz", "new.csv").strip().splitlines()
    assert lines[0] == "label" and len(lines) == 21
    X, truth = features_and_label()
    # the columns are found by name, whatever their order in the new file
    assert np.mean(np.array([int(v) for v in lines[1:]]) == truth[:20]) >= 0.8
    info = ok("info", "m.npz")
    assert "MLP 3-32-32-4" in info and "features:   a, b, c" in info and "adam" in info
    assert "classes:    0, 1, 2, 3" in info and "task:       classification" in info


def test_python_and_the_command_line_agree(work):
    trained()
    model = ff.load("m.npz")
    info = ff.io.read_info("m.npz")
    frame = pd.read_csv("new.csv")
    X = frame[info["features"]].to_numpy()                           # raw values: no scaling by hand
    logits = model.predict(X)
    labels = ok("predict", "m.npz", "new.csv").split()[1:]
    assert labels == [str(info["classes"][k]) for k in logits.argmax(axis=1)]
    rows = list(csv.reader(io.StringIO(ok("predict", "m.npz", "new.csv", "--proba"))))
    assert rows[0] == ["0", "1", "2", "3"]
    z = logits.astype(np.float64)
    softmax = np.exp(z - z.max(axis=1, keepdims=True))
    softmax /= softmax.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.array(rows[1:], dtype=np.float64), softmax, rtol=1e-6, atol=1e-7)


def test_saved_model_folds_the_standardisation_into_the_first_layer():
    rng = np.random.default_rng(3)
    X = rng.normal(50, 7, size=(40, 3)) * np.array([1, 100, 0.01])
    model = ff.MLP([3, 5, 2], dtype=np.float64, seed=1)
    mean, scale = cli._column_stats(X)
    y_mean, y_scale = np.array([10.0, -3.0]), np.array([2.0, 0.5])
    expect = model.predict((X - mean) / scale) * y_scale + y_mean
    W, b = model.layers[0].W.copy(), model.layers[0].b.copy()
    assert cli.fold_scaling(model, mean, scale, y_mean, y_scale)
    np.testing.assert_allclose(model.layers[0].W, W / scale, rtol=1e-15)
    np.testing.assert_allclose(model.layers[0].b, b - (W / scale) @ mean, rtol=1e-12)
    np.testing.assert_allclose(model.predict(X), expect, rtol=1e-10, atol=1e-10)


def test_string_labels_come_back_as_the_same_strings(work):
    X, label = features_and_label()
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    frame["kind"] = np.array(["cat", "dog", "emu", "fox, red"])[label]
    frame.to_csv("animals.tsv", sep="\t", index=False)
    out = ok("fit", "animals.tsv", "--target", "kind", "--epochs", "20", "--lr", "1e-2", "--quiet", "--out", "k.npz")
    assert "text labels" in out
    predicted = [r[0] for r in csv.reader(io.StringIO(ok("predict", "k.npz", "animals.tsv")))][1:]
    assert set(predicted) <= {"cat", "dog", "emu", "fox, red"}
    assert np.mean(np.array(predicted) == frame["kind"].to_numpy()) > 0.8
    assert ff.io.read_info("k.npz")["classes"] == ["cat", "dog", "emu", "fox, red"]
    header = next(csv.reader(io.StringIO(ok("predict", "k.npz", "animals.tsv", "--proba"))))
    assert header == ["cat", "dog", "emu", "fox, red"]


def test_binary_cross_entropy_probabilities_are_the_sigmoid(work):
    X, label = features_and_label()
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    frame["ok"] = np.where(label % 2 == 1, "yes", "no")
    frame.to_csv("yn.csv", index=False)
    ok("fit", "yn.csv", "--target", "ok", "--loss", "bce", *FAST, "--out", "b.npz")
    logit = ff.load("b.npz").predict(X)[:, 0].astype(np.float64)
    rows = list(csv.reader(io.StringIO(ok("predict", "b.npz", "yn.csv", "--proba"))))
    assert rows[0] == ["no", "yes"]
    p = np.array(rows[1:], dtype=np.float64)
    np.testing.assert_allclose(p[:, 1], 1 / (1 + np.exp(-logit)), rtol=1e-6)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-6)
    labels = ok("predict", "b.npz", "yn.csv").split()[1:]
    assert labels == ["yes" if z > 0 else "no" for z in logit]


def test_regression_in_raw_units_to_a_file(work):
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, size=(200, 2))
    y = 2000 * X[:, 0] - 1000 * X[:, 1] + 50_000          # far from unit scale: folded into the last layer
    pd.DataFrame({"x1": X[:, 0], "x2": X[:, 1], "y": y}).to_csv("reg.csv", sep=";", index=False)
    out = ok("fit", "reg.csv", "--target", "y", "--epochs", "60", "--lr", "1e-2", "--quiet")
    assert "task: regression (auto: the target 'y' holds fractional numbers" in out
    ok("predict", "model.npz", "reg.csv", "--out", "pred.csv")
    written = pd.read_csv("pred.csv")
    assert list(written.columns) == ["y"] and len(written) == 200
    assert np.sqrt(np.mean((written["y"].to_numpy() - y) ** 2)) < 0.05 * y.std()
    # the text written reads back as exactly the model's float32 output
    np.testing.assert_array_equal(written["y"].to_numpy(np.float32), ff.load("model.npz").predict(X)[:, 0])
    err = one_line_error("predict", "model.npz", "reg.csv", "--proba")
    assert "--proba" in err and "regression" in err


def test_npz_data_with_string_labels(work):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((100, 4))
    np.savez("d.npz", X=X, y=np.where(X[:, 0] > 0, "up", "down"))
    out = ok("fit", "d.npz", *FAST)
    assert "classification" in out
    lines = ok("predict", "model.npz", "d.npz").split()
    assert lines[0] == "y" and len(lines) == 101 and set(lines[1:]) <= {"up", "down"}


def test_auto_task_rule():
    def task(y, *choice):
        return cli.choose_task(np.asarray(y), *(choice or ("auto", "auto")), "t")[0]
    assert task(["a", "b"] * 10) == "classification"
    assert task([True, False] * 10) == "classification"
    assert task([0.5, 1.0] * 10) == "regression"
    assert task(np.arange(300) % 4) == "classification"
    assert task(np.arange(300) % 4 * 1.0) == "classification"       # whole floats count as labels
    assert task(np.arange(300) % 21) == "regression"                  # more than 20 values
    assert task(np.arange(30) % 10) == "regression"                   # fewer than 5 rows per value
    assert task(np.arange(50) % 10) == "classification"
    assert task([0.5, 1.5] * 10, "auto", "mse") == "regression"
    with pytest.raises(cli.CLIError, match="fractional"):
        task([0.5, 1.5] * 10, "classification", "auto")
    with pytest.raises(cli.CLIError, match="regression needs numbers"):
        task(["a", "b"] * 10, "regression", "auto")
    with pytest.raises(cli.CLIError, match="--loss mse is a regression loss"):
        task([1, 2] * 10, "classification", "mse")


def test_task_is_always_stated_with_its_reason(work):
    out = ok("fit", "train.csv", "--target", "label", "--task", "regression", *FAST)
    assert "task: regression (--task regression)" in out
    out = ok("fit", "train.csv", "--target", "c", "--drop", "label", *FAST)
    assert "task: regression (auto: the target 'c' holds fractional numbers" in out


def test_old_files_with_mean_and_scale_are_read_correctly(work):
    X, label = features_and_label()
    X = X * [10, 0.1, 3] + [100, -5, 0]
    pd.DataFrame(X, columns=["a", "b", "c"]).to_csv("shifted.csv", index=False)
    model = ff.MLP([3, 8, 4], seed=0)
    mean, scale = X.mean(axis=0), X.std(axis=0)
    ff.save(model, "old.npz", optimizer=ff.Adam(), info={
        "features": ["a", "b", "c"], "target": "label", "loss": "cross_entropy",
        "classes": [0.0, 1.0, 2.0, 3.0], "mean": mean.tolist(), "scale": scale.tolist()})
    expect = model.predict((X - mean) / scale).argmax(axis=1)
    assert len(set(expect)) > 1
    assert ok("predict", "old.npz", "shifted.csv").split()[1:] == [str(k) for k in expect]
    info = ok("info", "old.npz")
    assert "classes:    0, 1, 2, 3" in info and "older fastfit" in info and "Adam" in info


@pytest.mark.parametrize("change, words", [
    ({"features": 3}, "'features'"),
    ({"features": ["a", "b"]}, "2 feature names"),
    ({"classes": [0, 1]}, "2 classes"),
    ({"classes": "abcd"}, "'classes'"),
    ({"loss": "hinge"}, "unknown loss"),
    ({"target": None}, "'target'"),
    ({"fastfit_cli": "two"}, "version"),
    ({"fastfit_cli": 1, "mean": [0, 0], "scale": [1, 1, 1]}, "'mean' and 'scale'"),
])
def test_malformed_stored_info_is_one_line(work, change, words):
    trained()
    info = dict(ff.io.read_info("m.npz"), **change)
    ff.save(ff.load("m.npz"), "bad.npz", info=info)
    for command in (("predict", "bad.npz", "new.csv"), ("info", "bad.npz")):
        err = one_line_error(*command)
        assert "bad.npz" in err and "malformed" in err and words in err


def test_newer_record_and_python_saved_models(work):
    trained()
    ff.save(ff.load("m.npz"), "new_rec.npz", info=dict(ff.io.read_info("m.npz"), fastfit_cli=99))
    assert "newer fastfit" in one_line_error("predict", "new_rec.npz", "new.csv")
    ff.save(ff.MLP([3, 4, 2]), "plain.npz")
    assert "saved from Python" in one_line_error("predict", "plain.npz", "new.csv")
    assert "record:     none" in ok("info", "plain.npz")


def test_saved_model_of_the_wrong_shape_is_refused(work):
    trained()
    with np.load("m.npz") as z:
        entries = {k: z[k] for k in z.files}
    entries["params"] = entries["params"][:-5]
    np.savez("broken.npz", **entries)
    for command in (("predict", "broken.npz", "new.csv"), ("info", "broken.npz")):
        err = one_line_error(*command)
        assert "broken.npz" in err and "shape" in err


# ---------------------------------------------------------------- reading tables

@pytest.mark.parametrize("sep", [",", "\t", ";", "|"])
def test_separator_is_detected(work, sep):
    X, label = features_and_label(60)
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    frame["label"] = label
    frame.to_csv("s.txt", sep=sep, index=False)
    data = tables.training_data("s.txt", "label")
    assert data.features == ["a", "b", "c"]
    np.testing.assert_allclose(data.X, X)


def test_separator_detection_rules():
    assert tables.detect_separator(["a;b;c", "1,5;2,5;3"]) == ";"     # decimal commas
    assert tables.detect_separator(['"x,y"|b', '"1,2"|3']) == "|"      # quoted separators
    assert tables.detect_separator(["a b c", "1 2 3"]) == ","          # nothing fits: comma
    assert tables.separator("\\t") == "\t"


def test_index_column_options(work):
    assert "--index-col none" in ok("fit", "train.csv", "--target", "label", *FAST)
    err = one_line_error("fit", "train.csv", "--target", "label", "--index-col", "none", *FAST)
    assert "column 1 has no name" in err
    pd.read_csv("train.csv").rename(columns={"Unnamed: 0": "id"}).to_csv("ids.csv", index=False)
    out = ok("fit", "ids.csv", "--target", "label", "--index-col", "id", *FAST)
    assert "3 features" in out


def test_missing_values_are_named_by_line_and_column(work):
    with open("train.csv", "a") as f:
        f.write("300,0.1,,0.3,1\n")
    err = one_line_error("fit", "train.csv", "--target", "label")
    assert "line 302" in err and "'b'" in err and "missing value" in err and "fill them in" in err


def test_non_numeric_value_names_line_and_column(work):
    with open("train.csv", "a") as f:
        f.write("300,0.1,oops,0.3,1\n")
    err = one_line_error("fit", "train.csv", "--target", "label")
    assert "line 302" in err and "'b'" in err and "'oops'" in err


def test_a_field_longer_than_the_csv_modules_limit(work):
    with open("train.csv", "a") as f:
        f.write("300,0.1," + "x" * 140_000 + ",0.3,1\n")
    err = one_line_error("fit", "train.csv", "--target", "label")
    assert "line 302" in err and "140,000 characters" in err


def test_duplicate_column_names_are_refused(work):
    with open("dup.csv", "w") as f:
        f.write("a,b,a,label\n1,2,3,0\n4,5,6,1\n")
    err = one_line_error("fit", "dup.csv", "--target", "label")
    assert "'a' twice" in err and "columns 1 and 3" in err


@pytest.mark.parametrize("text, words", [
    ("", "is empty"),
    ("a,b,label\n", "no data rows"),
    ("a,b,label\n1,2,0\n1,2,3,4\n", "line 3: 4 fields"),
    ("a,b,label\n1,2,0\n\n3,4,1\n3,x,1\n", "line 5"),        # a blank line keeps the numbering
    ("a,b,label\n1,2,0.5\n3,4,inf\n", "line 3, column 'label': inf"),
])
def test_broken_tables(work, text, words):
    with open("t.csv", "w") as f:
        f.write(text)
    assert words in one_line_error("fit", "t.csv", "--target", "label")


def test_files_that_are_not_what_their_name_says(work):
    np.save("arr.npy", np.zeros((3, 3)))
    os.replace("arr.npy", "arr.npz")
    assert ".npy" in one_line_error("fit", "arr.npz")
    with open("bin.csv", "wb") as f:
        f.write(b"a,b\x00\x01\x02")
    assert "not a text file" in one_line_error("fit", "bin.csv", "--target", "b")
    with open("fake.npz", "w") as f:
        f.write("a,b\n1,2\n")
    assert "not an .npz archive" in one_line_error("fit", "fake.npz")
    assert "no such file" in one_line_error("fit", "missing.csv", "--target", "label")
    assert "no such model file" in one_line_error("predict", "missing.npz", "new.csv")
    assert "not an .npz archive" in one_line_error("predict", "train.csv", "new.csv")


def test_npz_without_rows_or_with_a_0d_target(work):
    np.savez("zero.npz", X=np.zeros((0, 3)), y=np.zeros(0))
    assert "0 rows" in one_line_error("fit", "zero.npz")
    np.savez("scalar.npz", X=np.zeros((5, 3)), y=np.array(1.0))
    assert "0-d" in one_line_error("fit", "scalar.npz")
    np.savez("obj.npz", X=np.zeros((5, 3)), y=np.array([1, "a", None, 2, 3], dtype=object))
    assert "Python objects" in one_line_error("fit", "obj.npz")


def test_pandas_missing_names_the_package(work, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)                # import pandas now fails
    err = one_line_error("fit", "train.csv", "--target", "label")
    assert "pip install pandas" in err and "fastfit[" not in err


# ---------------------------------------------------------------- values that break things

def test_diverging_fit_is_one_line_and_saves_nothing(work):
    err = one_line_error("fit", "train.csv", "--target", "label", "--lr", "1e300", "--optimizer", "sgd")
    assert "diverged" in err and "--lr" in err
    assert not os.path.exists("model.npz")


def test_huge_finite_values(work):
    frame = pd.read_csv("train.csv", index_col=0)
    frame.loc[5, "b"] = 1e300
    frame.to_csv("huge.csv")
    err = one_line_error("fit", "huge.csv", "--target", "label", *FAST)
    assert "line 7" in err and "'b'" in err and "--dtype float64" in err
    ok("fit", "huge.csv", "--target", "label", *FAST, "--dtype", "float64", "--out", "h.npz")
    assert len(ok("predict", "h.npz", "huge.csv").split()) == 301
    assert np.isfinite(ff.load("h.npz").params).all()


def test_predict_on_nan_or_overflowing_values(work):
    trained()
    for value, words in (("nan", "missing value"), ("1e400", "not a finite number"), ("-inf", "not a finite")):
        with open("bad.csv", "w") as f:
            f.write(f"a,b,c\n1,2,3\n4,{value},6\n")
        err = one_line_error("predict", "m.npz", "bad.csv")
        assert "bad.csv line 3, column 'b'" in err and words in err


def test_out_must_be_a_file(work):
    os.mkdir("dir")
    err = one_line_error("fit", "train.csv", "--target", "label", "--out", "dir/")
    assert "is a directory" in err
    assert "is a directory" in one_line_error("fit", "train.csv", "--target", "label", "--out", "dir")
    assert "does not exist" in one_line_error("fit", "train.csv", "--target", "label", "--out", "no/m.npz")
    trained()
    assert "is a directory" in one_line_error("predict", "m.npz", "new.csv", "--out", "dir/")


def test_networks_larger_than_memory_are_refused_before_building(work, monkeypatch):
    err = one_line_error("fit", "train.csv", "--target", "label", "--hidden", "100000,100000")
    assert "GiB" in err and "10,000,900,004" in err and "available" in err
    monkeypatch.setattr(cli._checks, "available_memory", lambda: 10_000_000)
    err = one_line_error("fit", "train.csv", "--target", "label", "--hidden", "1000,1000")
    assert "--hidden 1000,1000" in err and "9.5 MiB" in err


@pytest.mark.parametrize("args, words", [
    (("demo", "--epochs", "0"), "argument --epochs: must be a whole number >= 1"),
    (("demo", "--lr", "-1"), "argument --lr: must be a finite number > 0"),
    (("demo", "--lr", "nan"), "argument --lr"),
    (("demo", "--batch-size", "0"), "argument --batch-size"),
    (("demo", "--seed", "-1"), "argument --seed: must be a whole number >= 0"),
    (("fit", "x.csv", "--hidden", "a,b"), "argument --hidden"),
    (("fit", "x.csv", "--validation-split", "1"), "argument --validation-split"),
    (("frobnicate",), "invalid choice"),
])
def test_bad_arguments_are_one_line_with_status_2(args, words):
    assert words in one_line_error(*args, status=2)


def test_argument_combinations(work):
    assert "--validation-split" in one_line_error("fit", "train.csv", "--target", "label", "--patience", "3")
    assert "'nope'" in one_line_error("fit", "train.csv", "--target", "nope")
    assert "two classes" in one_line_error("fit", "train.csv", "--target", "label", "--loss", "bce")
    assert "--target is needed" in one_line_error("fit", "train.csv")


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(work, monkeypatch):
    def broken(args):
        raise RuntimeError("planted")
    monkeypatch.setattr(cli, "cmd_info", broken)
    assert "unexpected RuntimeError: planted" in one_line_error("info", "m.npz")
    with pytest.raises(RuntimeError, match="planted"):
        cli.main(["--debug", "info", "m.npz"])
    with pytest.raises(cli.CLIError):
        cli.main(["fit", "train.csv", "--target", "label", "--out", "no/m.npz", "--debug"])


# ---------------------------------------------------------------- help, version, demo, config

def test_version_and_help():
    status, out, _ = fastfit("--version")
    assert status == 0 and out.strip() == f"fastfit {ff.__version__}"
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, cli.argparse._SubParsersAction))
    for name, sub in [("fastfit", parser)] + list(subparsers.choices.items()):
        text = sub.format_help()
        for action in sub._actions:
            if action.option_strings and action.dest not in ("help", "version"):
                assert action.help, (name, action.dest)
                assert "(default:" in action.help or action.default is not cli.argparse.SUPPRESS, (name, action)
        assert "(default:" in text or name == "config" or name == "info"
    assert "(default: 128,128)" in subparsers.choices["fit"].format_help()


def test_demo_reports_accuracy_time_and_the_baseline(capsys):
    assert cli.main(["demo", "--epochs", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy:" in out and "baseline" in out and " s " in out
    assert "held out of the training set" in out


def test_demo_without_mnist1d_says_so_and_uses_spirals(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mnist1d", None)       # import mnist1d now fails
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    assert cli.main(["demo", "--epochs", "5", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "mnist1d is not installed" in out and "spirals" in out and "test accuracy:" in out


def test_config_shows_the_blas(capsys):
    assert cli.main(["config"]) == 0
    out = capsys.readouterr().out
    assert "kernel choice at import" in out and "BLAS used by fastfit" in out
    assert "matrix products" in out and "element-wise passes" in out and "automatic thread count at most" in out


def test_config_names_the_loop_version_this_cpu_runs():
    """The loader's choice of the element-wise loops: AVX-512 wherever the CPU and OS offer it."""
    from fastfit import _cpu
    choice = _cpu.loop_clone()
    assert choice in ("avx512f", "avx2", "default", "single")
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return
    if choice != "single" and "avx512f" in flags and _cpu.os_saves_avx512():
        assert choice == "avx512f"
    elif choice != "single" and "avx2" in flags and "avx512f" not in flags:
        assert choice == "avx2"


# ---------------------------------------------------------------- the installed entry point

def test_entry_point_in_a_subprocess(work):
    r = subprocess_fastfit("predict", "s.npz", "nothing.csv", cwd=work)
    assert r.returncode == 1 and r.stderr.startswith("fastfit: error:") and "Traceback" not in r.stderr
    r = subprocess_fastfit("--debug", "fit", "nothing.csv", "--target", "y", cwd=work)
    assert r.returncode == 1 and "Traceback" in r.stderr and "DataError" in r.stderr


@pytest.mark.parametrize("sep", ["", "((", "[a"])
def test_a_separator_nothing_can_read_is_an_argument_error(work, sep):
    line = one_line_error("fit", "train.csv", "--target", "label", "--sep", sep, status=2)
    assert "--sep" in line


@pytest.mark.parametrize("args,words", [
    (("--patience", "3"), "--validation-split"),
    (("--out", "."), "is a directory"),
    (("--task", "regression", "--loss", "cross_entropy"), "--loss"),
    (("--validation-split", "0.001"), "--validation-split"),
], ids=["patience-alone", "out-directory", "loss-task", "tiny-split"])
def test_flags_that_cannot_work_together_exit_with_status_2(work, args, words):
    line = one_line_error("fit", "train.csv", "--target", "label", *FAST, *args, status=2)
    assert words in line
