"""Timing a trainer: warm up, size each repeat to the target time, take the median.

A trainer (frameworks/*.py) has two methods:
- ``prepare(rows)``: train on the first ``rows`` rows of the workload's data from now on
  (a multiple of the batch size; JAX compiles its epoch for that length here or on first run);
- ``run(epochs)``: train that many whole epochs, returning when the work is done.

The pilot trains on a few batches to estimate the rate; the timed rows are then
the prefix that one repeat covers in ``target_s`` (all of the data if it is
faster: then one repeat is several epochs). A warm-up epoch at that size comes
before the timed repeats, so compilation, thread start-up and first-touch page
faults stay out of them.
"""
import math
import statistics
import time


def _timed(fn, *args):
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def measure(trainer, n_total, batch, target_s, repeats, min_pilot_rows=1024):
    """Samples per second of ``trainer`` (median of ``repeats``) and how it was measured."""
    pilot = min(n_total, batch * max(2, math.ceil(min_pilot_rows / batch)))
    trainer.prepare(pilot)
    t_warm = _timed(trainer.run, 1)                     # compile, threads, first touch
    t_pilot = _timed(trainer.run, 1)
    rate = pilot / t_pilot
    want = rate * target_s                              # samples one repeat should hold
    rows = int(min(n_total, max(batch, want // batch * batch)))
    epochs = max(1, int(round(want / rows)))
    if rows != pilot:
        trainer.prepare(rows)
        _timed(trainer.run, 1)                          # warm up at the timed size
    times = [_timed(trainer.run, epochs) for _ in range(repeats)]
    rates = [rows * epochs / t for t in times]
    return {
        "samples_per_s": statistics.median(rates),
        "rates": rates,
        "repeat_s": times,
        "rows": rows,
        "epochs_per_repeat": epochs,
        "steps_per_repeat": epochs * (rows // batch),
        "first_epoch_s": t_warm,
        "pilot_rows": pilot,
    }
