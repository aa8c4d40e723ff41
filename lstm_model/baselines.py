"""Reference forecasts every LSTM result is compared against (and falls back to)."""

from __future__ import annotations

from collections.abc import Sequence
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
    z = np.array([NormalDist().inv_cdf(q) for q in quantiles])  # (Q,)
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
