"""Reference forecasts every LSTM result is compared against (and falls back to).

The cheap forecasts a forecaster tries first: the last value (naive), the last season (seasonal naive),
the median of the recent window (a flat level, strong on noisy or intermittent sales) and the mean of
each season position over the recent window (a denoised seasonal profile). `window` is the model's
lookback, so the baselines see exactly the history the LSTM sees.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from statistics import NormalDist

import numpy as np

from lstm_model.panel import Panel


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def naive(panel: Panel, horizon: int) -> np.ndarray:
    """Repeat each series' last value -> (n_series, horizon) float64."""
    _check_positive("horizon", horizon)
    last = np.array([y[-1] for y in panel.target], dtype=np.float64)
    return np.repeat(last[:, None], horizon, axis=1)


def seasonal_naive(panel: Panel, horizon: int, season_length: int) -> np.ndarray:
    """Repeat each series' last full season -> (n_series, horizon) float64.

    A series shorter than one season has no season to repeat and falls back to `naive`.
    """
    _check_positive("horizon", horizon)
    _check_positive("season_length", season_length)
    out = np.empty((panel.n_series, horizon), dtype=np.float64)
    steps = np.arange(horizon) % season_length
    for i, y in enumerate(panel.target):
        out[i] = y[-season_length:][steps] if len(y) >= season_length else y[-1]
    return out


def naive_quantiles(panel: Panel, horizon: int, season_length: int, quantiles: Sequence[float]) -> np.ndarray:
    """Seasonal-naive forecast with normal prediction quantiles -> (n_series, horizon, Q) float64.

    The spread is the textbook one for a seasonal random walk (Hyndman & Athanasopoulos, FPP3 5.5):
    sigma * sqrt(k), with sigma the RMS of the in-sample lag-m differences and k the number of seasons
    ahead. season_length=1 gives the naive forecast with sigma * sqrt(h). A series shorter than one
    season uses lag 1; with no in-sample difference at that lag the spread is zero.
    """
    _check_positive("horizon", horizon)
    _check_positive("season_length", season_length)
    z = _z(quantiles)
    out = np.empty((panel.n_series, horizon, len(z)), dtype=np.float64)
    for i, y in enumerate(panel.target):
        y = y.astype(np.float64)
        lag = season_length if len(y) >= season_length else 1
        point = y[-lag:][np.arange(horizon) % lag]  # (horizon,)
        diffs = y[lag:] - y[:-lag]
        sigma = float(np.sqrt(np.mean(diffs**2))) if len(diffs) else 0.0
        seasons_ahead = np.arange(horizon) // lag + 1  # (horizon,)
        out[i] = point[:, None] + z[None, :] * sigma * np.sqrt(seasons_ahead)[:, None]
    return out


def _z(quantiles: Sequence[float]) -> np.ndarray:
    """Standard normal quantiles of the levels: the multipliers of sigma for each quantile."""
    return np.array([NormalDist().inv_cdf(q) for q in quantiles])  # (Q,)


def recent_median_quantiles(
    panel: Panel, horizon: int, window: int, quantiles: Sequence[float]
) -> np.ndarray:
    """Flat forecast at each series' median of its last `window` values, with the empirical quantiles
    of those values as the interval -> (n_series, horizon, Q) float64."""
    _check_positive("horizon", horizon)
    _check_positive("window", window)
    levels = np.asarray(quantiles, dtype=np.float64)
    out = np.empty((panel.n_series, horizon, len(levels)), dtype=np.float64)
    for i, y in enumerate(panel.target):
        recent = np.asarray(y[-window:], dtype=np.float64)
        out[i] = np.quantile(recent, levels)[None, :]
    return out


def seasonal_mean_quantiles(
    panel: Panel, horizon: int, season_length: int, window: int, quantiles: Sequence[float]
) -> np.ndarray:
    """Each step forecast by the mean of its season position over the last `window` values (whole
    seasons, at least one), with normal quantiles from the spread around those means
    -> (n_series, horizon, Q) float64.

    The spread is sigma * sqrt(1 + 1/k): the residual RMS around the position means, plus the error of a
    mean of k seasons. A window that holds one season (k = 1) has no residuals to measure: it is seasonal
    naive, and gets seasonal naive's intervals too.
    """
    _check_positive("horizon", horizon)
    _check_positive("season_length", season_length)
    _check_positive("window", window)
    z = _z(quantiles)
    out = np.empty((panel.n_series, horizon, len(z)), dtype=np.float64)
    for i, y in enumerate(panel.target):
        m = season_length if len(y) >= season_length else 1
        k = max(1, min(window, len(y)) // m)  # whole seasons in the window
        recent = np.asarray(y[len(y) - k * m :], dtype=np.float64).reshape(k, m)  # (seasons, m)
        profile = recent.mean(axis=0)  # (m,): mean of each season position; the last value is at m - 1
        if k == 1:
            out[i] = naive_quantiles(panel.select([panel.series_ids[i]]), horizon, season_length, quantiles)[
                0
            ]
            continue
        resid = recent - profile
        sigma = float(np.sqrt(np.mean(resid**2) * k / (k - 1)))
        point = profile[np.arange(horizon) % m]  # (horizon,): step h is position h of the next season
        out[i] = point[:, None] + z[None, :] * sigma * np.sqrt(1.0 + 1.0 / k)
    return out


BaselineFn = Callable[[Panel, int, int, int, Sequence[float]], np.ndarray]

# name -> f(panel, horizon, season_length, window, quantiles) -> (n_series, horizon, Q)
BASELINES: dict[str, BaselineFn] = {
    "seasonal_naive": lambda p, h, m, w, q: naive_quantiles(p, h, m, q),
    "naive": lambda p, h, m, w, q: naive_quantiles(p, h, 1, q),
    "recent_median": lambda p, h, m, w, q: recent_median_quantiles(p, h, w, q),
    "seasonal_mean": seasonal_mean_quantiles,
}


def baseline_quantiles(
    name: str, panel: Panel, horizon: int, season_length: int, window: int, quantiles: Sequence[float]
) -> np.ndarray:
    """The baseline `name` (one of BASELINES) -> (n_series, horizon, Q) float64."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose one of {sorted(BASELINES)}")
    return BASELINES[name](panel, horizon, season_length, window, quantiles)
