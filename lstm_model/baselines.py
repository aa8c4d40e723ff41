"""Reference forecasts every LSTM result is compared against."""

from __future__ import annotations

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
