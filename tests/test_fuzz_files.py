"""Fuzzing saved model files: every metadata field and every array of saved models and
optimizers is mutated (wrong types, huge, negative, NaN and infinite numbers, missing and
extra keys, deep nesting), and whole files are truncated and bit-flipped. Each variant is
loaded and, when it loads, trained for one short fit.

All variants run in ONE subprocess, so that a crash (a segfault in the compiled core fed a
bad state) is caught as a signal. Loading may raise only ModelFileError; a fit of what
loaded may raise only NonFiniteLossError (the file's learning rate may be too large) or the
documented error of a learning-rate schedule that fails at a later step. Seeded: the same
variants every run.
"""
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

SEED = 20240611
#: Random byte-level variants (truncations, bit flips, overwritten ranges) per base file.
BYTE_VARIANTS = 60


# ---------------------------------------------------------------- the fuzzer (runs in the subprocess)

def _base_files(directory):
    """(name, path) of genuine files: several optimizers, both dtypes, both format versions."""
    import fastfit as ff
    from fastfit import io

    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 4))
    y = rng.integers(0, 3, size=32)
    setups = {
        "adam-step": (np.float32, lambda: ff.Adam(ff.StepDecay(1e-2, 3, 0.5))),
        "adamw": (np.float64, lambda: ff.AdamW(1e-2, convention="keras")),
        "nesterov-cosine": (np.float32, lambda: ff.SGD(ff.CosineWithWarmup(0.1, 50, 5), momentum=0.9, nesterov=True)),
        "momentum-exp": (np.float64, lambda: ff.SGD(ff.ExponentialDecay(0.1, 0.99), momentum=0.5, weight_decay=1e-3)),
        "sgd": (np.float32, lambda: ff.SGD(0.05)),
        "normalized": (np.float64, lambda: ff.NormalizedGD(0.01)),
        "fresh-adam": (np.float32, lambda: ff.Adam(ff.ConstantLR(1e-3))),   # never stepped: unbound
    }
    out = []
    for name, (dtype, make) in setups.items():
        model, opt = ff.MLP([4, 5, 3], dtype=dtype, seed=1), make()
        if not name.startswith("fresh"):
            ff.fit(model, X, y, loss="cross_entropy", optimizer=opt, batch_size=16, epochs=1, verbose=0)
        path = os.path.join(directory, f"base-{name}.npz")
        io.save(model, path, optimizer=opt, info={"features": ["a", "b", "c", "d"], "scale": [1.0, 2.0]})
        out.append((name, path))
    # format version 1, as fastfit wrote it before the optimizer's state was explicit
    n = 43
    v1 = {"format": "fastfit.MLP", "version": 1, "fastfit_version": "0.1.0", "sizes": [4, 5, 3], "dtype": "<f4",
          "seed": 0, "info": None,
          "optimizer": {"class": "SGD", "lr": {"schedule": "StepDecay", "attrs": {"lr": 0.1, "step_size": 3,
                                                                                   "gamma": 0.5}},
                        "attrs": {"t": 2, "_m": {"__array__": "optimizer._m"}, "_v": None, "momentum": 0.9,
                                  "nesterov": True, "convention": "seed", "_lookahead": False},
                        "bound": True}}
    path = os.path.join(directory, "base-v1-nesterov.npz")
    np.savez(path, params=ff.MLP([4, 5, 3], seed=1).params, **{"optimizer._m": np.full(n, 1e-3, np.float32)},
             __fastfit__=np.array(json.dumps(v1)))
    out.append(("v1-nesterov", path))
    return out


def _paths(value, prefix=()):
    """Every path (tuple of keys and indices) into a JSON value, the root excluded."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return
    for key, child in items:
        yield prefix + (key,)
        yield from _paths(child, prefix + (key,))


def _deep(depth):
    value = 0
    for _ in range(depth):
        value = [value]
    return value


#: What a field may be replaced by.
VALUES = [None, True, False, 0, 1, -1, 3, 2 ** 31, 2 ** 53, 2 ** 63, 10 ** 30, -10 ** 30, 0.5, -0.5, 1e-320,
          1e308, -1e308, math.nan, math.inf, -math.inf, "", "x", "float32", "Adam", "os.system", [], {}, [1, 2, 3],
          [0.9, 0.999], {"__tuple__": [1]}, {"__tuple__": [0.9, math.nan]}, {"__array__": "params"},
          {"schedule": "StepDecay", "attrs": {}}, {"schedule": "ExponentialDecay", "attrs": {"lr": 1e300, "gamma": 1e300}},
          {"schedule": "CosineWithWarmup", "attrs": {"lr": 0.1, "total_steps": 10 ** 40}},
          {"sizes": [4, 5, 3], "dtype": "float64"}, _deep(40), "y" * 100_000]
#: Keys added to every object of the metadata.
EXTRA_KEYS = {"kind": 99, "n_state_buffers": 0, "_bound": [43, "float32"], "__class__": "MLP", "state_names": [],
              "_state": {"m": [0.0]}, "buffers": ["m"], "extra": _deep(5)}


def _set(meta, path, value):
    target = meta
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


def _delete(meta, path):
    target = meta
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]


def _array_variants(name, arr, rng):
    """Replacements for one stored array."""
    n = arr.shape[0] if arr.ndim == 1 else 1
    other = np.float64 if arr.dtype == np.float32 else np.float32
    out = {
        "other float": arr.astype(other), "float16": arr.astype(np.float16), "int32": arr.astype(np.int32),
        "bool": arr != 0, "complex": arr.astype(np.complex128), "big-endian": arr.astype(arr.dtype.newbyteorder(">")),
        "strings": arr.astype("U8"), "objects": np.array(list(arr), dtype=object),
        "shorter": arr[:-1], "longer": np.concatenate([arr, arr[:1]]), "much longer": np.tile(arr, 200),
        "empty": arr[:0], "scalar": arr[:1].reshape(()), "2-D": arr.reshape(n, 1),
        "fortran 2-D": np.asfortranarray(np.stack([arr, arr], axis=1)),
        "zeros": np.zeros_like(arr), "negative": -np.abs(arr) - 1, "subnormal": np.full_like(arr, 1e-40),
        "huge": np.full_like(arr, np.finfo(arr.dtype).max), "max then grows": np.full_like(arr, 1e30),
    }
    for bad in (np.nan, np.inf, -np.inf):
        copy = arr.copy()
        copy[rng.integers(0, n)] = bad
        out[f"one {bad}"] = copy
    return out


def _variants(name, path, rng):
    """(description, write(out_path)) of every variant of one base file."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays.pop("__fastfit__")[()]))

    def writer(meta_value=None, arrays_value=None, raw=None):
        def write(out):
            if raw is not None:
                with open(out, "wb") as f:
                    f.write(raw)
                return
            text = meta_value if isinstance(meta_value, str) else json.dumps(meta_value)
            np.savez(out, **arrays_value, __fastfit__=np.array(text))
        return write

    # info's own contents are the user's (read back by read_info alone): the entry is mutated, not within it
    fields = [p for p in _paths(meta) if p[0] != "info" or len(p) == 1]
    for p in fields:
        for value in VALUES:
            m = json.loads(json.dumps(meta))
            _set(m, p, value)
            yield f"{name}: {'/'.join(map(str, p))} = {str(value)[:40]}", writer(m, arrays)
        m = json.loads(json.dumps(meta))
        _delete(m, p)
        yield f"{name}: {'/'.join(map(str, p))} deleted", writer(m, arrays)
    for p in [()] + [q for q in fields if isinstance(_get(meta, q), dict)]:
        for key, value in EXTRA_KEYS.items():
            m = json.loads(json.dumps(meta))
            (_get(m, p) if p else m)[key] = value
            yield f"{name}: {'/'.join(map(str, p))} + {key}", writer(m, arrays)
    for text in ("", "null", "[]", "{not json", "[" * 100_000, json.dumps(meta)[:-1], json.dumps(meta) + "x"):
        yield f"{name}: metadata text {text[:20]!r}", writer(text, arrays)
    for key, arr in arrays.items():
        for what, value in _array_variants(key, arr, rng).items():
            yield f"{name}: {key} {what}", writer(meta, {**arrays, key: value})
        yield f"{name}: {key} missing", writer(meta, {k: v for k, v in arrays.items() if k != key})
    yield f"{name}: extra members", writer(meta, {**arrays, "optimizer.w": arrays["params"],
                                                 "junk": np.array([object()], dtype=object)})
    data = open(path, "rb").read()
    for i in range(BYTE_VARIANTS):
        kind = ("truncate", "flip", "overwrite")[i % 3]
        raw = bytearray(data)
        at = int(rng.integers(0, len(raw)))
        if kind == "truncate":
            raw = raw[:at]
        elif kind == "flip":
            for _ in range(int(rng.integers(1, 4))):
                j = int(rng.integers(0, len(raw)))
                raw[j] ^= 1 << int(rng.integers(0, 8))
        else:
            length = int(rng.integers(1, 64))
            raw[at:at + length] = rng.integers(0, 256, size=len(raw[at:at + length]), dtype=np.uint8).tobytes()
        yield f"{name}: bytes {kind} at {at}", writer(raw=bytes(raw))


def _get(meta, path):
    target = meta
    for key in path:
        target = target[key]
    return target


def fuzz(directory, seed):
    """Run every variant; print one line per unexpected outcome and a summary. Returns the count."""
    import fastfit as ff
    from fastfit import io

    rng = np.random.default_rng(seed)
    counts = {"refused": 0, "loaded": 0, "fitted": 0, "stopped": 0, "schedule stopped": 0, "unexpected": 0}
    os.fsync = lambda fd: None   # durability is not what is tested here: thousands of saves stay fast
    data_rng = np.random.default_rng(1)
    target = os.path.join(directory, "variant.npz")
    for name, path in _base_files(directory):
        try:   # the genuine file loads
            io.load(path, return_optimizer=True)
        except Exception as exc:  # noqa: BLE001 - reported
            counts["unexpected"] += 1
            print(f"UNEXPECTED: the genuine file {name} does not load: {type(exc).__name__}: {exc}", flush=True)
        for description, write in _variants(name, path, rng):
            write(target)
            stage = "load"
            try:
                try:
                    model, opt = io.load(target, return_optimizer=True)
                except io.ModelFileError:
                    counts["refused"] += 1
                    continue
                counts["loaded"] += 1
                stage = "fit"
                X = data_rng.standard_normal((24, model.n_inputs))
                y = data_rng.integers(0, model.n_outputs, size=24)
                try:
                    ff.fit(model, X, y, loss="cross_entropy", optimizer=opt, batch_size=8, epochs=2, verbose=0,
                           n_threads=1)
                    counts["fitted"] += 1
                except ff.NonFiniteLossError:
                    counts["stopped"] += 1
                except (ArithmeticError, ValueError) as exc:
                    # a schedule read from the file may fail at a later step: its own error, documented
                    if not (opt is not None and callable(opt.lr) and str(exc).startswith("lr schedule")):
                        raise
                    counts["schedule stopped"] += 1
                stage = "after the fit"
                assert np.isfinite(model.params).all(), "non-finite parameters after the fit"
                state = opt.state_buffers() if opt is not None else {}
                bad = sorted(k for k, v in state.items() if not np.isfinite(v).all())
                assert not bad, f"the optimizer's state {bad} is not finite after the fit"
                stage = "saving and loading again"
                again_path = os.path.join(directory, "again.npz")
                io.save(model, again_path, optimizer=opt)
                again, opt_again = io.load(again_path, return_optimizer=True)
                assert np.array_equal(again.params, model.params)
                assert opt is None or opt_again.state_dict()["t"] == opt.t
            except Exception as exc:  # noqa: BLE001 - every other outcome is reported
                counts["unexpected"] += 1
                last = traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:]
                print(f"UNEXPECTED at {stage}: {description}: {type(exc).__name__}: {str(exc)[:300]}\n"
                      + "".join(last), flush=True)
    print("SUMMARY " + json.dumps(counts), flush=True)
    return counts


# ---------------------------------------------------------------- the test

def test_fuzzed_model_files_load_or_are_refused_and_never_crash(tmp_path):
    import helpers  # the subprocess imports the fastfit these tests imported
    env = helpers.subprocess_env()
    # thousands of small files are written: in memory when the system offers it (Linux)
    in_memory = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=in_memory or tmp_path) as directory:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), directory, str(SEED)],
                              capture_output=True, text=True, env=env, timeout=300)
    elapsed = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    assert proc.returncode >= 0, f"the fuzzing process died of signal {-proc.returncode}:\n{out[-3000:]}"
    assert proc.returncode == 0, out[-5000:]
    unexpected = [line for line in proc.stdout.splitlines() if line.startswith("UNEXPECTED")]
    assert not unexpected, "\n".join(unexpected[:20]) + f"\n... {len(unexpected)} in all\n" + out[-3000:]
    summary = json.loads(proc.stdout.rsplit("SUMMARY ", 1)[1])
    # the variants reached both sides: many refused, and some loaded and trained
    assert summary["refused"] > 1000 and summary["loaded"] > 100 and summary["fitted"] > 50, summary
    print(f"fuzzed {summary['refused'] + summary['loaded']} files in {elapsed:.1f} s: {summary}")


if __name__ == "__main__":
    directory, seed = sys.argv[1], int(sys.argv[2])
    sys.exit(1 if fuzz(directory, seed)["unexpected"] else 0)
