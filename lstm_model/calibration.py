"""Split-conformal calibration of the prediction intervals formed by symmetric quantile pairs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Validation windows the intervals are calibrated on, at most: a 90% score quantile from 4096 windows is
# stable to about a percent, and the cap bounds the time and the (windows, horizon, Q) memory it costs.
CALIBRATION_WINDOWS = 4096


def quantile_pairs(levels: Sequence[float]) -> list[tuple[int, int]]:
    """Index pairs (lower, upper) of symmetric quantiles, e.g. (0.1, 0.9), outermost first: each one is a
    central interval. Pairs are matched by value, so (0.1, 0.2, 0.5, 0.8) still pairs 0.2 with 0.8; a
    level without its mirror image is in no pair and is left uncalibrated."""
    pairs = []
    for lo, q in enumerate(levels):
        hi = next((j for j, p in enumerate(levels) if math.isclose(q + p, 1.0)), None)
        if q < 0.5 and hi is not None:
            pairs.append((lo, hi))
    return sorted(pairs, key=lambda pair: levels[pair[0]])


def conformal_widths(
    pred: np.ndarray, y: np.ndarray, levels: Sequence[float], pairs: Sequence[tuple[int, int]]
) -> np.ndarray:
    """Split-conformal corrections (CQR, Romano et al. 2019) per interval and horizon step.

    For an interval (lo, hi) with nominal coverage c, the score of a window is max(lo - y, y - hi);
    adding the ceil((n + 1) c)-th smallest of the n scores to both ends makes the interval cover a new
    window with probability >= c when windows are exchangeable (with too few windows for that rank, the
    largest score is used). Negative values narrow intervals that were too wide.
    pred (n, horizon, Q), y (n, horizon) -> (len(pairs), horizon).
    """
    n, horizon = y.shape
    out = np.zeros((len(pairs), horizon), dtype=np.float64)
    if n == 0:
        return out
    y = np.asarray(y, dtype=np.float64)
    for k, (lo, hi) in enumerate(pairs):
        coverage = levels[hi] - levels[lo]
        scores = np.maximum(pred[:, :, lo] - y, y - pred[:, :, hi])  # (n, horizon)
        # The epsilon keeps float noise (5 * (0.8 - 0.2) = 3.0000000000000004) from adding a rank.
        rank = min(n, max(1, math.ceil((n + 1) * coverage - 1e-9)))
        out[k] = np.sort(scores, axis=0)[rank - 1]
    return out


def apply_calibration(scaled: np.ndarray, calibration: np.ndarray, levels: Sequence[float]) -> np.ndarray:
    """Widen each interval by its correction (narrow it by a negative one), then sort so quantiles never
    cross. scaled (n, horizon, Q), calibration (n_pairs, horizon) from `conformal_widths` -> float64."""
    out = np.array(scaled, dtype=np.float64)
    pairs = quantile_pairs(levels)
    calibration = np.asarray(calibration, dtype=np.float64)
    expected = (len(pairs), out.shape[1])
    if calibration.shape != expected:
        raise ValueError(
            f"calibration must have shape {expected} (symmetric quantile pairs of {tuple(levels)}, "
            f"horizon), got {calibration.shape}"
        )
    for k, (lo, hi) in enumerate(pairs):
        out[:, :, lo] -= calibration[k]
        out[:, :, hi] += calibration[k]
    return np.sort(out, axis=-1)
