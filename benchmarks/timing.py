"""Timing a trainer inside one process: warm up, pick its variant, size each repeat, take the median.

A trainer (frameworks/*.py) has two methods:
- ``prepare(rows)``: train on the first ``rows`` rows of the workload's data from now on
  (a multiple of the batch size; JAX compiles its epoch for that length here or on first run);
- ``run(epochs)``: train that many whole epochs, returning when the work is done.

A trainer may also offer ``variants`` (names) and ``use(name)``: equally valid
ways to write the same training loop (PyTorch: gathering each batch or the whole
epoch, fused or foreach Adam). Each is warmed up, then timed on the pilot in
alternation, and the fastest is kept for the timed repeats; all their pilot
rates go into the result.

The pilot trains on a few batches to estimate the rate; the timed rows are then
the prefix that one repeat covers in ``target_s`` (all of the data if it is
faster: then one repeat is several epochs), and never fewer than
MIN_STEPS_PER_REPEAT batches: an epoch of a single step would time what a
framework does once per call (setting up, checking) as if it were training,
where a user's epochs hold many steps. A warm-up epoch at that size comes
before the timed repeats, so compilation, thread start-up and first-touch page
faults stay out of them.

``repeat_spread`` is (slowest - fastest) / median of the repeats' rates: the
noise seen inside the process, whatever caused it.
"""
import math
import statistics
import time

#: The fewest steps one timed repeat holds (the large network's step takes about 0.3 s,
#: so ~0.2 s repeats would be one step each).
MIN_STEPS_PER_REPEAT = 4


def _timed(fn, *args):
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def spread(values):
    """(max - min) / median of positive values; 0 for fewer than two."""
    values = [v for v in values if v]
    if len(values) < 2:
        return 0.0
    return (max(values) - min(values)) / statistics.median(values)


def choose_variant(trainer, pilot_rows, t_pilot, batch, target_s):
    """Warm every variant, time each in alternation, keep the fastest; (name, pilot rates, rows used).

    The variants are compared on a prefix of the pilot short enough that all of
    them together take about two repeats' time (at least two batches each), so a
    slow framework does not spend minutes choosing how to loop.
    """
    variants = list(getattr(trainer, "variants", None) or [])
    if len(variants) < 2:
        return None, {}, pilot_rows
    per_variant = target_s / len(variants)
    rows = pilot_rows
    if t_pilot > per_variant:
        rows = max(2 * batch, int(pilot_rows * per_variant / t_pilot) // batch * batch)
        trainer.prepare(rows)
    for v in variants:
        trainer.use(v)
        trainer.run(1)                                    # its own warm-up (first calls, first touch)
    best = {v: math.inf for v in variants}
    for _ in range(2):
        for v in variants:
            trainer.use(v)
            best[v] = min(best[v], _timed(trainer.run, 1))
    chosen = min(variants, key=best.get)
    trainer.use(chosen)
    return chosen, {v: rows / t for v, t in best.items()}, rows


def measure(trainer, n_total, batch, target_s, repeats, min_pilot_rows=1024):
    """Samples per second of ``trainer`` (median of ``repeats``) and how it was measured."""
    pilot = min(n_total, batch * max(2, math.ceil(min_pilot_rows / batch)))
    trainer.prepare(pilot)
    t_warm = _timed(trainer.run, 1)                     # compile, threads, first touch
    t_pilot = _timed(trainer.run, 1)
    variant, variant_rates, prepared = choose_variant(trainer, pilot, t_pilot, batch, target_s)
    rate = variant_rates[variant] if variant else pilot / t_pilot
    want = max(rate * target_s, MIN_STEPS_PER_REPEAT * batch)  # samples one repeat should hold
    rows = int(min(n_total, max(batch, want // batch * batch)))
    epochs = max(1, int(round(want / rows)))
    if rows != prepared:
        trainer.prepare(rows)
        _timed(trainer.run, 1)                          # warm up at the timed size
    times = [_timed(trainer.run, epochs) for _ in range(repeats)]
    rates = [rows * epochs / t for t in times]
    return {
        "samples_per_s": statistics.median(rates),
        "rates": rates,
        "repeat_spread": spread(rates),
        "repeat_s": times,
        "rows": rows,
        "epochs_per_repeat": epochs,
        "steps_per_repeat": epochs * (rows // batch),
        "first_epoch_s": t_warm,
        "pilot_rows": pilot,
        "variant": variant,
        "variant_pilot_rates": variant_rates,
    }
