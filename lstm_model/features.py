"""Calendar features: known in advance for any timestamp, so they are future covariates."""

from __future__ import annotations

import numpy as np
import pandas as pd

# (name, period) of each cycle, and the span (in hours) a step must be clearly shorter than for the
# cycle to carry information: hour of day is constant on a daily grid, day of week on a weekly grid.
_CYCLES = (
    ("hour_of_day", 24.0, 24.0),
    ("day_of_week", 7.0, 24.0 * 7),
    ("day_of_year", 365.25, 24.0 * 365.25),
)


def calendar_names(freq: str) -> tuple[str, ...]:
    """Feature column names for data on `freq` (a pandas offset alias): a sin and cos per useful cycle."""
    offset = pd.tseries.frequencies.to_offset(freq)
    first = pd.Timestamp("2001-01-01") + offset  # on the grid, so anchored offsets (W, MS) step a full period
    step_hours = ((first + offset) - first).total_seconds() / 3600
    # "Clearly": a yearly step (365 days) is a hair under 365.25, yet day of year barely moves on it.
    useful = [name for name, _, span in _CYCLES if step_hours < 0.99 * span]
    return tuple(f"{name}_{fn}" for name in useful for fn in ("sin", "cos"))


def calendar_features(ts: pd.Series | pd.DatetimeIndex, freq: str) -> pd.DataFrame:
    """Sin/cos encodings of each cycle shorter than the series' natural span, one row per timestamp.

    Sin/cos pairs keep 23:00 next to 00:00 and Sunday next to Monday, which a plain integer would not.
    The frame keeps the Series' index (to join back onto its frame), or is indexed by the timestamps.
    """
    index = pd.DatetimeIndex(ts)
    values = {
        "hour_of_day": index.hour + index.minute / 60.0,
        "day_of_week": index.day_of_week + (index.hour + index.minute / 60.0) / 24.0,
        "day_of_year": index.day_of_year - 1 + index.hour / 24.0,
    }
    periods = {name: period for name, period, _ in _CYCLES}
    out: dict[str, np.ndarray] = {}
    for column in calendar_names(freq):
        name, fn = column.rsplit("_", 1)
        angle = 2 * np.pi * np.asarray(values[name], dtype=np.float64) / periods[name]
        out[column] = (np.sin if fn == "sin" else np.cos)(angle).astype(np.float32)
    return pd.DataFrame(out, index=ts.index if isinstance(ts, pd.Series) else index)
