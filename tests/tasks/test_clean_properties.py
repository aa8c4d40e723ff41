"""Properties of clean_frame on generated raw extracts: no row is invented or lost beyond the cleaning rules.

The rules, as tasks/clean.py documents them: rows after as-of are ignored; rows are binned to the hourly
grid and rows that share a step are merged by the duplicates rule; the grid runs from a series' first step
to as-of; gaps (inside the series, or at its end before as-of) of at most max_gap steps are imputed, leading
ones never are; a series whose last value is more than max_gap steps before as-of is skipped as stale;
history before a gap that stays missing is dropped; a series with fewer than lookback + horizon steps left
is skipped. `expected` restates these rules on its own, and the tests compare clean_frame with it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.clean import MAD_SCALE, clean_frame
from tasks.config import PipelineConfig, parse_config
from tests.helpers import sensor_config_dict

START = pd.Timestamp("2020-01-01", tz="UTC")
HOUR = pd.Timedelta(hours=1)
RULES = {
    "mean": np.mean,
    "sum": np.sum,
    "first": lambda v: v[0],
    "last": lambda v: v[-1],
    "min": np.min,
    "max": np.max,
}
SETTINGS = settings(max_examples=50, deadline=None)


@pytest.fixture(scope="session", autouse=True)
def prefect_server():
    """clean_frame is a plain function: these tests need no Prefect server."""
    yield


@st.composite
def raw_frames(draw) -> pd.DataFrame:
    """Up to three series of hourly readings in shuffled order: steps without rows, steps with several rows,
    rows some minutes past the hour, missing values, and rows after as-of."""
    rows = []
    for sid in draw(st.sampled_from([("a",), ("a", "b"), ("a", "b", "ü ß")])):
        first = draw(st.integers(0, 5))
        for step in range(first, first + draw(st.integers(1, 30))):
            for _ in range(draw(st.sampled_from([0, 1, 1, 1, 1, 2, 3]))):
                minute = draw(st.sampled_from([0, 0, 0, 20, 59]))
                value = draw(st.none() | st.floats(-1e3, 1e3) | st.floats(-1e3, 1e3) | st.floats(-1e3, 1e3))
                rows.append((sid, START + step * HOUR + pd.Timedelta(minutes=minute), value))
    order = draw(st.permutations(range(len(rows))))
    frame = pd.DataFrame([rows[i] for i in order], columns=["series_id", "ts", "value"])
    return frame.astype({"series_id": str, "value": "float64"}).astype({"ts": "datetime64[us, UTC]"})


@st.composite
def configs(draw, outliers: str = "off") -> PipelineConfig:
    data = {
        "max_gap": draw(st.integers(0, 4)),
        "duplicates": draw(st.sampled_from(sorted(RULES))),
        "impute": draw(st.sampled_from(["linear", "ffill", "seasonal"])),
        "season_length": draw(st.integers(1, 4)),
        "outliers": outliers,
        "outlier_threshold": draw(st.floats(1.0, 6.0)),
    }
    forecast = {"lookback": draw(st.integers(1, 3)), "horizon": draw(st.integers(1, 2))}
    return parse_config(sensor_config_dict("sqlite:///unused.db", "unused", data=data, forecast=forecast))


@dataclass
class Expected:
    status: str
    reason: str
    grid: pd.DatetimeIndex  # every step from the series' first step to as-of
    binned: np.ndarray  # the duplicates rule's value per step, NaN where no row has a value
    filled: np.ndarray  # steps the imputation fills
    start: int  # first grid step that is kept
    counts: dict[str, int]


def expected(rows: pd.DataFrame, cfg: PipelineConfig, as_of: pd.Timestamp) -> Expected:
    """One series' outcome, from the cleaning rules alone."""
    data = cfg.data
    known = rows[rows["ts"] <= as_of]  # in source order
    stamps = known["ts"].to_numpy()
    counts = {
        "raw_rows": len(known),
        "out_of_order": int((stamps[1:] < np.maximum.accumulate(stamps)[:-1]).sum()) if len(stamps) else 0,
    }
    if known["value"].notna().sum() == 0:
        return Expected("skipped", "no values in the target column", pd.DatetimeIndex([]), np.array([]),
                        np.array([], bool), 0, counts)  # fmt: skip
    hist = known.sort_values("ts", kind="stable")  # equal timestamps keep source order
    steps = hist["ts"].dt.floor("h")
    grid = pd.date_range(steps.min(), as_of.floor("h"), freq="h")
    binned = np.full(len(grid), np.nan)
    for step, group in hist.groupby(steps, sort=True):
        present = group["value"].dropna().to_numpy()
        if len(present):
            binned[grid.get_loc(step)] = RULES[data.duplicates](present)
    counts |= {
        "duplicates": len(hist) - steps.nunique(),
        "off_grid": int((hist["ts"] != steps).sum()),
        "missing": int(np.isnan(binned).sum()),
    }

    last_seen = hist["ts"][hist["value"].notna()].max()
    late = len(grid) - 1 - int(np.flatnonzero(~np.isnan(binned))[-1])
    if late > data.max_gap:
        reason = (
            f"last value at {last_seen.isoformat()} is {late} steps before as_of (max_gap {data.max_gap})"
        )
        counts |= {"imputed": 0, "dropped_before_gap": 0, "rows": 0}
        return Expected("skipped", reason, grid, binned, np.zeros(len(grid), bool), 0, counts)

    missing = np.isnan(binned)
    filled = np.zeros(len(grid), bool)
    i = 0
    while i < len(grid):
        if not missing[i]:
            i += 1
            continue
        j = i
        while j < len(grid) and missing[j]:
            j += 1
        if i > 0 and j - i <= data.max_gap:  # a leading gap has nothing to fill from
            filled[i:j] = True
        i = j
    unfilled = np.flatnonzero(missing & ~filled)
    start = int(unfilled[-1]) + 1 if len(unfilled) else 0
    rows_left = len(grid) - start
    counts |= {"imputed": int(filled.sum()), "dropped_before_gap": start, "rows": rows_left}
    need = cfg.forecast.lookback + cfg.forecast.horizon
    if rows_left < need:
        reason = f"{rows_left} usable steps < lookback + horizon = {need}"
        if start:
            reason += f" (history before a gap longer than max_gap={data.max_gap} was dropped)"
        return Expected("skipped", reason, grid, binned, filled, start, counts)
    return Expected("ok", "", grid, binned, filled, start, counts)


def check_values(exp: Expected, got: pd.Series, cfg: PipelineConfig) -> None:
    """Observed steps keep the duplicates rule's value; filled steps follow the imputation method."""
    kept = slice(exp.start, None)
    binned, filled = exp.binned[kept], exp.filled[kept]
    values = got.to_numpy()
    assert np.isfinite(values).all()
    observed = ~np.isnan(binned)
    if cfg.data.duplicates in ("mean", "sum"):
        np.testing.assert_allclose(values[observed], binned[observed], rtol=1e-12, atol=1e-9)
    else:  # a value picked from the rows, unchanged
        np.testing.assert_array_equal(values[observed], binned[observed])
    # Linear and ffill are checked over the whole grid: a filled step may lean on a step that was dropped.
    full = np.arange(len(exp.grid))
    known = ~np.isnan(exp.binned)
    for i in np.flatnonzero(filled) + exp.start:
        before = full[known & (full < i)][-1]
        after = full[known & (full > i)]
        if cfg.data.impute == "seasonal":
            continue  # a season earlier, else linear, else carried on: finiteness is checked above
        if cfg.data.impute == "ffill" or not len(after):  # linear has nothing to reach after the last value
            want = exp.binned[before]
        else:
            want = np.interp(i, full[known], exp.binned[known])
        assert values[i - exp.start] == pytest.approx(want, rel=1e-9, abs=1e-9), (i, cfg.data.impute)


@SETTINGS
@given(raw=raw_frames(), cfg=configs(), as_of_step=st.integers(0, 40))
def test_clean_keeps_every_observed_step_and_invents_only_imputed_ones(raw, cfg, as_of_step):
    as_of = START + as_of_step * HOUR
    history, _, quality = clean_frame(raw, cfg, as_of)
    quality = quality.set_index("series_id")
    assert sorted(quality.index) == sorted(raw["series_id"].unique())  # one row per series, skipped too
    assert not history.duplicated(["series_id", "ts"]).any()
    for sid, rows in raw.groupby("series_id", sort=False):
        exp = expected(rows, cfg, as_of)
        q = quality.loc[sid]
        assert (q["status"], q["reason"]) == (exp.status, exp.reason), sid
        for name, value in exp.counts.items():
            assert q[name] == value, (sid, name)
        got = history[history["series_id"] == sid].set_index("ts")["value"]
        if exp.status == "skipped":
            assert got.empty
            continue
        # The grid from the first kept step to as-of, every step once: nothing outside it, nothing missing.
        assert got.index.equals(pd.DatetimeIndex(exp.grid[exp.start :], name="ts"))
        check_values(exp, got, cfg)


@SETTINGS
@given(raw=raw_frames(), cfg=configs(outliers="clip"), as_of_step=st.integers(0, 40))
def test_clipping_bounds_every_value_and_counts_what_it_moved(raw, cfg, as_of_step):
    as_of = START + as_of_step * HOUR
    history, _, quality = clean_frame(raw, cfg, as_of)
    quality = quality.set_index("series_id")
    for sid, rows in raw.groupby("series_id", sort=False):
        exp = expected(rows, cfg, as_of)
        assert quality.loc[sid, "status"] == exp.status
        if exp.status != "ok":
            continue
        values = exp.binned[~np.isnan(exp.binned)]
        median = np.median(values)
        spread = np.median(np.abs(values - median)) * MAD_SCALE
        got = history.loc[history["series_id"] == sid, "value"].to_numpy()
        if spread == 0:  # no scale to judge by: nothing is clipped
            assert quality.loc[sid, "outliers_clipped"] == 0
            continue
        low, high = median - cfg.data.outlier_threshold * spread, median + cfg.data.outlier_threshold * spread
        assert quality.loc[sid, "outliers_clipped"] == int(((values < low) | (values > high)).sum())
        tolerance = 1e-9 * max(1.0, abs(low), abs(high))
        assert (got >= low - tolerance).all() and (got <= high + tolerance).all()
