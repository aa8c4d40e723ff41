"""A heterogeneous hourly panel of a few hundred series, for judging the default settings.

Why: the defaults must hold up on the panel a new user brings, which mixes domains: smooth sensors,
noisy meters, counts, random walks and trends side by side. Seasonal naive is hard to beat on some of
these and easy on others, so a model tuned to one kind does not pass by luck.

The panel (`panel(seed)`), all series 13 weeks of hourly steps ending at the same hour:
- 49 real series: ETTh1's seven variables cut into seven non-overlapping 13-week segments, each
  re-stamped by a whole number of weeks so hour of day and day of week stay true (`ett_segments`);
- 250 synthetic series, 50 of each kind (`KINDS`), each with its own level, scale and phase.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from benchmarks import ett

WEEKS = 13
STEPS = WEEKS * 7 * 24  # 2,184 hourly steps per series
END = pd.Timestamp("2024-06-30 23:00", tz="UTC")
PER_KIND = 50


def ett_segments() -> pd.DataFrame:
    """ETTh1 cut into 13-week segments, every variable a series: long frame (series_id, ts, value).

    Segments end on ETTh1's timestamps that fall on END's weekday and hour, and are moved by whole weeks
    to end at END, so hour of day and day of week stay true.
    """
    df = ett.load_etth1()
    dates = df["date"].dt.tz_localize("UTC")
    if not (dates.diff().iloc[1:] == pd.Timedelta("1h")).all():
        raise AssertionError("ETTh1 must be a contiguous hourly series")
    ends = np.flatnonzero((dates.dt.dayofweek == END.dayofweek) & (dates.dt.hour == END.hour))
    parts = []
    for k, end in enumerate(range(int(ends[-1]), STEPS - 2, -STEPS)):
        block = slice(end - STEPS + 1, end + 1)
        stamps = dates.iloc[block] + (END - dates.iloc[end])
        for v in ett.VARIABLES:
            values = df[v].iloc[block].to_numpy()
            parts.append(
                pd.DataFrame({"series_id": f"ett_{v}_{k}", "ts": stamps.to_numpy(), "value": values})
            )
    return pd.concat(parts, ignore_index=True)


def _daily(hour: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    phase = rng.uniform(0, 2 * np.pi)
    return np.sin(2 * np.pi * hour / 24 + phase) + rng.uniform(0, 0.6) * np.sin(
        4 * np.pi * hour / 24 + 2 * phase
    )


def synthetic(kind: str, rng: np.random.Generator, hour: np.ndarray, weekend: np.ndarray) -> np.ndarray:
    """One series of `kind` on the grid given by `hour` and `weekend` (0/1)."""
    n = len(hour)
    level = rng.uniform(10, 500)
    daily = _daily(hour, rng)
    if kind == "load":  # building or feeder load: daily profile, weekend dip, slow drift, mild noise
        drift = lfilter([1.0], [1.0, -0.995], rng.normal(0, 0.02, n))
        noise = rng.normal(0, 0.05, n) * (1 + 0.5 * np.abs(daily))
        return level * (1 + drift + 0.2 * (daily - rng.uniform(0.1, 0.4) * weekend + noise))
    if kind == "noisy":  # a meter with a weak daily profile under heavy noise
        return level * (1 + 0.1 * daily + rng.uniform(0.2, 0.4) * rng.standard_normal(n))
    if kind == "counts":  # hourly arrivals (calls, orders): Poisson around a daily and weekly profile
        rate = rng.uniform(0.5, 20) * np.exp(0.8 * daily - 0.5 * weekend)
        return rng.poisson(rate).astype(np.float64)
    if kind == "walk":  # a price or level that wanders, with a little daily ripple
        walk = np.cumsum(rng.normal(0, 0.01, n))
        return level * np.exp(walk) * (1 + 0.02 * daily)
    if kind == "trend":  # growth with a multiplicative daily profile and AR(1) noise
        growth = 1 + rng.uniform(-0.3, 0.6) * np.arange(n) / n
        ar = lfilter([1.0], [1.0, -0.8], rng.normal(0, 0.05, n))
        return level * growth * (1 + 0.3 * daily) * (1 + ar)
    raise ValueError(f"unknown kind {kind!r}")


KINDS = ("load", "noisy", "counts", "walk", "trend")


def synthetic_panel(seed: int, per_kind: int = PER_KIND) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = pd.date_range(end=END, periods=STEPS, freq="h")
    hour = ts.hour.to_numpy()
    weekend = (ts.day_of_week.to_numpy() >= 5).astype(np.float64)
    parts = [
        pd.DataFrame({"series_id": f"{kind}_{i:03d}", "ts": ts, "value": synthetic(kind, rng, hour, weekend)})
        for kind in KINDS
        for i in range(per_kind)
    ]
    return pd.concat(parts, ignore_index=True)


def panel(seed: int = 0, per_kind: int = PER_KIND) -> pd.DataFrame:
    """The whole panel as a long frame (series_id, ts, value), ETTh1 segments first."""
    return pd.concat([ett_segments(), synthetic_panel(seed, per_kind)], ignore_index=True)
