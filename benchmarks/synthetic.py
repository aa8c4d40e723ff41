"""Synthetic but realistic hourly sensor panels for load benchmarks.

Each series has its own level, a daily profile with a random phase, a weekday/weekend difference,
a slow AR(1) drift and heteroscedastic noise, like building or feeder load readings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.signal import lfilter


def hourly_panel(n_series: int, days: int, seed: int = 0, end: str = "2024-06-30 23:00") -> pd.DataFrame:
    """Long frame (series_id, ts, value): `n_series` x `days * 24` hourly rows ending at `end` (UTC)."""
    rng = np.random.default_rng(seed)
    steps = days * 24
    ts = pd.date_range(end=pd.Timestamp(end, tz="UTC"), periods=steps, freq="h")
    hour = ts.hour.to_numpy()
    weekend = (ts.day_of_week.to_numpy() >= 5).astype(np.float64)
    parts = []
    for i in range(n_series):
        level = rng.uniform(20, 200)
        phase = rng.uniform(0, 2 * np.pi)
        daily = np.sin(2 * np.pi * hour / 24 + phase) + 0.4 * np.sin(4 * np.pi * hour / 24 + 2 * phase)
        drift = lfilter([1.0], [1.0, -0.995], rng.normal(0, 0.02, steps))  # AR(1) drift
        scale = level * (0.15 + 0.1 * rng.random())
        noise = rng.normal(0, 0.05, steps) * (1 + 0.5 * np.abs(daily))
        value = level * (1 + drift) + scale * (daily - rng.uniform(0.1, 0.4) * weekend + noise)
        parts.append(pd.DataFrame({"series_id": f"sensor_{i:04d}", "ts": ts, "value": value}))
    return pd.concat(parts, ignore_index=True)
