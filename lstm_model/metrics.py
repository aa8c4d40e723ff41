"""Point-forecast error metrics on numpy arrays (computed in float64)."""

from __future__ import annotations

import numpy as np


def _pair(y: np.ndarray, yhat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, yhat = np.asarray(y, dtype=np.float64), np.asarray(yhat, dtype=np.float64)
    if y.shape != yhat.shape:
        raise ValueError(f"y and yhat must have the same shape, got {y.shape} and {yhat.shape}")
    if y.size == 0:
        raise ValueError("y and yhat are empty")
    return y, yhat


def mae(y: np.ndarray, yhat: np.ndarray) -> float:
    y, yhat = _pair(y, yhat)
    return float(np.mean(np.abs(y - yhat)))


def rmse(y: np.ndarray, yhat: np.ndarray) -> float:
    y, yhat = _pair(y, yhat)
    return float(np.sqrt(np.mean((y - yhat) ** 2)))


def smape(y: np.ndarray, yhat: np.ndarray) -> float:
    """Symmetric MAPE in percent, 100 * mean(2|y - yhat| / (|y| + |yhat|)), in [0, 200].

    A step where both y and yhat are 0 is a perfect forecast and counts as 0 (not 0/0 = nan).
    """
    y, yhat = _pair(y, yhat)
    denom = np.abs(y) + np.abs(yhat)
    safe = np.where(denom == 0, 1.0, denom)
    return float(100.0 * np.mean(np.where(denom == 0, 0.0, 2.0 * np.abs(y - yhat) / safe)))


def mase(y: np.ndarray, yhat: np.ndarray, insample: np.ndarray, season_length: int) -> float:
    """MAE scaled by the in-sample MAE of the seasonal-naive forecast (lag `season_length`).

    Choices: if `insample` has no full season plus one step (len <= season_length) the lag-1 naive
    scale is used instead; if the scale cannot be computed (fewer than 2 in-sample values) or is 0
    (a constant / exactly periodic history), MASE is undefined and nan is returned rather than inf,
    so averages over series can skip it (pandas' mean skips nan).
    """
    if not isinstance(season_length, int) or isinstance(season_length, bool) or season_length < 1:
        raise ValueError(f"season_length must be a positive integer, got {season_length!r}")
    insample = np.asarray(insample, dtype=np.float64)
    if insample.ndim != 1:
        raise ValueError(f"insample must be 1-D, got shape {insample.shape}")
    error = mae(y, yhat)
    lag = season_length if len(insample) > season_length else 1
    if len(insample) <= lag:
        return float("nan")
    scale = float(np.mean(np.abs(insample[lag:] - insample[:-lag])))
    if scale == 0.0:
        return float("nan")
    return error / scale


def coverage(y: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Share of observations inside [lower, upper] (bounds included): an 80% interval should score
    about 0.8."""
    y, lower, upper = (np.asarray(a, dtype=np.float64) for a in (y, lower, upper))
    if not y.shape == lower.shape == upper.shape:
        raise ValueError(
            f"y, lower and upper must have the same shape, got {y.shape}, {lower.shape} and {upper.shape}"
        )
    if y.size == 0:
        raise ValueError("y, lower and upper are empty")
    return float(np.mean((y >= lower) & (y <= upper)))
