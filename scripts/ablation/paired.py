"""Paired comparisons of runs evaluated on the same validation windows.

Every run's final whole-set evaluation leaves its per-window losses in
<run>/final_eval_windows.safetensors (core/window_losses.h). Two runs' per-window
differences cancel most of the text's own difficulty, so their standard error is far
smaller than either run's. The SE is by batch means over the same 16 blocks of consecutive
windows as `mhc eval` and training use (core/evaluate.h), so that correlated neighbouring
windows share a block.

Standard library only (/usr/bin/python3).
"""
import array
import json
import math
import os
import statistics
import struct
import sys

WINDOW_FILE = "final_eval_windows.safetensors"
SE_BLOCKS = 16

# Two-sided 95% quantiles of Student's t for 1 .. 10 degrees of freedom.
T_975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228]


def t_975(dof):
    """Two-sided 95% quantile of Student's t: the table to 10 degrees of freedom, beyond
    that the Cornish-Fisher expansion about the normal quantile (error < 0.002 there)."""
    if dof < 1:
        return None
    if dof <= len(T_975):
        return T_975[dof - 1]
    z = 1.959964
    return (z + (z ** 3 + z) / (4 * dof) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * dof ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * dof ** 3))


def read_window_losses(run_dir):
    """(window numbers, per-window losses, metadata) of a run's final evaluation, or None
    when the run has no such file (older runs, unfinished or diverged ones)."""
    path = os.path.join(run_dir, WINDOW_FILE)
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError:
        return None
    try:
        (n,) = struct.unpack("<Q", blob[:8])
        header = json.loads(blob[8:8 + n].decode("utf-8"))
        data = blob[8 + n:]

        def tensor(name, code, dtype):
            info = header[name]
            if info["dtype"] != dtype:
                raise ValueError("%s is %s, expected %s" % (name, info["dtype"], dtype))
            lo, hi = info["data_offsets"]
            values = array.array(code)
            values.frombytes(data[lo:hi])
            if sys.byteorder != "little":
                values.byteswap()
            return list(values)

        losses, windows = tensor("window_loss", "d", "F64"), tensor("window", "q", "I64")
        if len(losses) != len(windows):
            raise ValueError("window_loss and window differ in length")
        return windows, losses, header.get("__metadata__", {})
    except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError) as e:
        raise ValueError("%s is damaged (%s)" % (path, e))


def batch_means(values, blocks=SE_BLOCKS):
    """(mean, batch-means SE, blocks): the values, in order, in min(blocks, n) consecutive
    blocks (value p in block floor(p * blocks / n)); SE = sd(block means) / sqrt(blocks)."""
    n = len(values)
    if n == 0:
        return None, None, 0
    b = min(blocks, n)
    sums, counts = [0.0] * b, [0] * b
    for p, v in enumerate(values):
        k = p * b // n
        sums[k] += v
        counts[k] += 1
    mean = sum(sums) / n
    if b < 2:
        return mean, None, b
    ss = sum((s / c - mean) ** 2 for s, c in zip(sums, counts))
    return mean, math.sqrt(ss / (b - 1) / b), b


def paired_difference(run_a, run_b):
    """B − A on the windows both runs' final evaluations read: (delta, paired SE, windows),
    or None when either run has no per-window losses or they read different windows."""
    a, b = read_window_losses(run_a), read_window_losses(run_b)
    if a is None or b is None or a[0] != b[0]:
        return None
    if a[2].get("data") != b[2].get("data") or a[2].get("tokenizer") != b[2].get("tokenizer"):
        return None
    diff = [y - x for x, y in zip(a[1], b[1])]
    mean, se, _ = batch_means(diff)
    return mean, se, len(diff)


def pooled_paired_difference(pairs):
    """Mean over seeds of the per-window differences, [(baseline dir, variant dir), ...]
    all on the same windows: (delta, SE, seeds). The seeds read the same windows, so
    their differences' evaluation noise is correlated; averaging per window first and
    then taking the batch-means SE accounts for that (sqrt(sum se²)/k would not)."""
    per_window = None
    windows = None
    for base_dir, var_dir in pairs:
        a, b = read_window_losses(base_dir), read_window_losses(var_dir)
        if a is None or b is None or a[0] != b[0] or (windows is not None and a[0] != windows):
            return None
        windows = a[0]
        diff = [y - x for x, y in zip(a[1], b[1])]
        per_window = diff if per_window is None else [p + d for p, d in zip(per_window, diff)]
    if per_window is None:
        return None
    k = len(pairs)
    mean, se, _ = batch_means([p / k for p in per_window])
    return mean, se, k


def seeds_needed(per_seed_deltas, limit=1000):
    """Smallest number of seeds k at which a paired t-test at 95% would resolve the mean of
    the measured per-seed differences, if their spread stayed as measured:
    |mean| > t(k − 1) · sd / sqrt(k). None without a spread (fewer than two seeds, or
    identical differences); limit + 1 when even `limit` seeds would not do."""
    if len(per_seed_deltas) < 2:
        return None
    mean, sd = statistics.mean(per_seed_deltas), statistics.stdev(per_seed_deltas)
    if sd == 0:
        return None
    for k in range(2, limit + 1):
        if abs(mean) > t_975(k - 1) * sd / math.sqrt(k):
            return k
    return limit + 1
