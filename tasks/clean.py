"""Clean: one row per series and time step on the configured frequency, gaps imputed, every repair counted.

Series that cannot be used (too short, stale, all missing) are skipped with the reason recorded, never
fatal: one broken sensor must not stop the nightly forecast of the others.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task

from lstm_model.features import event_features
from tasks.config import PipelineConfig
from tasks.errors import DataError
from tasks.files import write_parquet_atomic
from tasks.parsing import (
    NON_NUMERIC_COLUMN,
    ZONE_COLUMN,
    ZONE_UTC,
    parse_as_of,
    to_float,
    to_utc,
    zone_repairs,
)

# Per-series repair counts, all integers, so the quality report can be summed and stored as it is.
COUNT_COLUMNS = [
    "raw_rows", "no_timestamp", "tz_normalized", "out_of_order", "duplicates", "off_grid", "non_numeric",
    "non_finite", "negative", "outliers_clipped", "missing", "imputed", "dropped_before_gap", "future_filled",
    "rows",
]  # fmt: skip
QUALITY_COLUMNS = ["series_id", "status", "reason", *COUNT_COLUMNS]
# Scales the median absolute deviation to the standard deviation for normally distributed data.
MAD_SCALE = 1.4826


@dataclass(frozen=True)
class CleanResult:
    history_path: str
    future_path: str
    quality_path: str
    series_kept: int
    series_skipped: int
    rows: int
    imputed: int
    seconds: float


def _gap_lengths(missing: np.ndarray) -> np.ndarray:
    """For each missing position, the length of the run of missing values it belongs to."""
    edges = np.diff(missing.astype(np.int8), prepend=0, append=0)
    lengths = np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)
    out = np.zeros(len(missing), dtype=np.int64)
    out[missing] = np.repeat(lengths, lengths)
    return out


def count_out_of_order(ts: pd.Series) -> int:
    """Rows that arrive with a timestamp earlier than one already seen for the series."""
    stamps = pd.DatetimeIndex(ts).asi8
    if len(stamps) < 2:
        return 0
    return int((stamps[1:] < np.maximum.accumulate(stamps)[:-1]).sum())


def clip_outliers(values: pd.Series, threshold: float) -> tuple[pd.Series, int]:
    """Pull values further than `threshold` scaled MADs from the median back to that bound.

    Median and MAD ignore the spikes they judge; a MAD of zero (a mostly constant series) gives no scale,
    so then nothing is clipped rather than everything.
    """
    observed = values.dropna()
    if observed.empty:
        return values, 0
    median = float(observed.median())
    spread = float((observed - median).abs().median()) * MAD_SCALE
    if spread == 0:
        return values, 0
    low, high = median - threshold * spread, median + threshold * spread
    return values.clip(low, high), int(((values < low) | (values > high)).sum())


def _seasonal_fill(values: pd.Series, fillable: np.ndarray, season_length: int) -> pd.Series:
    """Each fillable step takes the value one season earlier, earlier fills included so that gaps longer
    than a season chain; a step with nothing a season earlier takes the linear interpolation instead, and
    after the last value (where there is nothing to interpolate to) the step before it, as ffill would."""
    linear = values.interpolate(method="linear", limit_area="inside").to_numpy(dtype="float64")
    out = values.to_numpy(dtype="float64", copy=True)
    for i in np.flatnonzero(fillable):
        earlier = out[i - season_length] if i >= season_length else np.nan
        out[i] = linear[i] if np.isnan(earlier) else earlier
        if np.isnan(out[i]) and i > 0:
            out[i] = out[i - 1]
    return pd.Series(out, index=values.index, name=values.name)


def impute(values: pd.Series, method: str, max_gap: int, season_length: int = 1) -> pd.Series:
    """Fill gaps of at most `max_gap` steps; longer gaps stay missing, and so do leading steps."""
    missing = values.isna().to_numpy()
    if not missing.any() or max_gap == 0:
        return values
    fillable = missing & (_gap_lengths(missing) <= max_gap)
    if method == "seasonal":
        return _seasonal_fill(values, fillable, season_length)
    filled = (
        values.interpolate(method="linear", limit_area="inside") if method == "linear" else values.ffill()
    )
    return values.where(~fillable, filled)


def fill_trailing(values: pd.Series, max_gap: int) -> pd.Series:
    """Carry the last value forward to the as-of step when the series' newest readings are late."""
    last = values.last_valid_index()
    if last is None:
        return values
    tail = values.index > last
    if tail.sum() > max_gap:
        return values
    return values.where(~tail, values.ffill())


def _trailing_complete(frame: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, int]:
    """The part after the last still-missing value: forecasts need an unbroken recent history."""
    incomplete = frame[columns].isna().any(axis=1).to_numpy()
    if not incomplete.any():
        return frame, 0
    last_bad = int(np.flatnonzero(incomplete)[-1])
    return frame.iloc[last_bad + 1 :], last_bad + 1


def _prepare(raw: pd.DataFrame, numeric: list[str]) -> pd.DataFrame:
    """A copy with UTC timestamps and float columns, plus per-row flags of what that repaired."""
    frame = raw.reset_index(drop=True)
    ts, zone = to_utc(frame["ts"])
    out = pd.DataFrame({"series_id": frame["series_id"], "ts": ts})
    non_numeric = np.zeros(len(frame), dtype=np.int64)
    for col in numeric:
        out[col], bad = to_float(frame[col])
        non_numeric += bad
    if ZONE_COLUMN in frame:  # rows from extract: their text was parsed there, and marked
        zone = np.maximum(zone, frame[ZONE_COLUMN].fillna(ZONE_UTC).to_numpy(dtype=np.int8))
    if NON_NUMERIC_COLUMN in frame:
        non_numeric += frame[NON_NUMERIC_COLUMN].fillna(0).to_numpy(dtype=np.int64)
    out["_zone"] = zone
    out["_non_numeric"] = non_numeric
    return out


def _aggregate(binned: pd.core.resample.Resampler, rule: str) -> pd.DataFrame:
    """Rows that share a step become one by the configured rule; an all-missing step stays missing."""
    return binned.sum(min_count=1) if rule == "sum" else getattr(binned, rule)()


def grid_end(as_of: pd.Timestamp, freq: str) -> pd.Timestamp:
    """The label of the resampling bin that holds as-of, computed the same way the series are binned."""
    return pd.Series([0.0], index=pd.DatetimeIndex([as_of])).resample(freq).sum().index[-1]


def measured(group: pd.DataFrame, cfg: PipelineConfig, as_of: pd.Timestamp, q: dict) -> pd.DataFrame:
    """A series' rows up to as-of in time order, as floats indexed by timestamp: non-finite values (and
    negative targets, when the target cannot be negative) become missing; each repair is counted in `q`."""
    numeric = numeric_columns(cfg)
    hist = group[group["ts"] <= as_of]
    q.update(raw_rows=len(hist))
    q["tz_normalized"] = zone_repairs(hist["_zone"].to_numpy())
    q["non_numeric"] = int(hist["_non_numeric"].sum())
    q["out_of_order"] = count_out_of_order(hist["ts"])
    # A stable sort keeps rows with equal timestamps in source order, which "first" and "last" rely on.
    hist = hist.sort_values("ts", kind="stable")
    values = hist[numeric].to_numpy(dtype="float64", copy=True)
    non_finite = ~np.isfinite(values) & ~np.isnan(values)
    q["non_finite"] = int(non_finite.sum())
    values[non_finite] = np.nan
    if cfg.data.non_negative:
        negative = values[:, 0] < 0
        q["negative"] = int(negative.sum())
        values[negative, 0] = np.nan
    return pd.DataFrame(values, columns=numeric, index=pd.DatetimeIndex(hist["ts"]))


def on_grid(hist: pd.DataFrame, cfg: PipelineConfig, end: pd.Timestamp, q: dict) -> tuple[pd.DataFrame, int]:
    """One row per step from the first observation to `end`, duplicates aggregated by the configured
    rule; also the steps after the one holding the last target value (a stale series shows as missing)."""
    data, target = cfg.data, cfg.source.target
    binned = hist.resample(data.freq)
    q["duplicates"] = int((binned.size() - 1).clip(lower=0).sum())
    regular = _aggregate(binned, data.duplicates)
    q["off_grid"] = int((~hist.index.isin(regular.index)).sum())
    # Series stop at their last observation; the grid runs on to as-of so a stale series shows as missing.
    regular = regular.reindex(pd.date_range(regular.index[0], end, freq=data.freq))
    q["missing"] = int(regular[target].isna().sum())
    last_seen = hist.index[hist[target].notna()].max()
    # Steps after the one holding the last value: counted on the grid, since that value may be off it.
    return regular, int((regular.index > last_seen).sum())


def repaired(regular: pd.DataFrame, cfg: PipelineConfig, q: dict) -> pd.DataFrame:
    """Outliers clipped (when asked), gaps up to max_gap imputed, and only the part after the last gap
    still open: forecasts need an unbroken recent history."""
    data, numeric = cfg.data, numeric_columns(cfg)
    if data.outliers == "clip":
        # Future covariates are plans (prices, promotions), not measurements: they are never clipped.
        for col in [cfg.source.target, *cfg.source.covariates]:
            regular[col], clipped = clip_outliers(regular[col], data.outlier_threshold)
            q["outliers_clipped"] += clipped
    before = regular[numeric].isna().sum().sum()
    for col in numeric:
        filled = impute(regular[col], data.impute, data.max_gap, data.season_length)
        regular[col] = fill_trailing(filled, data.max_gap)
    q["imputed"] = int(before - regular[numeric].isna().sum().sum())
    regular, dropped = _trailing_complete(regular, numeric)
    q["dropped_before_gap"] = dropped
    q["rows"] = len(regular)
    return regular


def future_part(
    group: pd.DataFrame, regular: pd.DataFrame, cfg: PipelineConfig, as_of: pd.Timestamp,
    future_index: pd.DatetimeIndex, q: dict,
) -> pd.DataFrame:  # fmt: skip
    """The known-in-advance covariates for the horizon; unknown values repeat the last known one."""
    future = list(cfg.source.future_covariates)
    upcoming = group[group["ts"] > as_of].sort_values("ts", kind="stable").set_index("ts")[future]
    upcoming = upcoming.where(np.isfinite(upcoming))
    fut = upcoming.resample(cfg.data.freq).last().reindex(future_index)
    q["future_filled"] = int(fut.isna().sum().sum())
    # Unknown future covariate values repeat the last known one: the least surprising guess.
    fut = pd.concat([regular[future].iloc[[-1]], fut]).ffill().iloc[1:]
    fut.index.name = "ts"
    return fut.reset_index()


def clean_series(
    sid: object,
    group: pd.DataFrame,
    cfg: PipelineConfig,
    as_of: pd.Timestamp,
    end: pd.Timestamp,
    future_index: pd.DatetimeIndex,
) -> tuple[dict, pd.DataFrame | None, pd.DataFrame | None]:
    """One series: its quality row, and its history and future covariates (None when it is skipped)."""
    data, fc = cfg.data, cfg.forecast
    q = dict.fromkeys(QUALITY_COLUMNS, 0)
    q["no_timestamp"] = int(group["ts"].isna().sum())
    group = group[group["ts"].notna()]
    q.update(series_id=sid, status="ok", reason="")
    hist = measured(group, cfg, as_of, q)
    if hist[cfg.source.target].notna().sum() == 0:
        return {**q, "status": "skipped", "reason": "no values in the target column"}, None, None
    regular, stale_steps = on_grid(hist, cfg, end, q)
    if stale_steps > data.max_gap:
        last_seen = hist.index[hist[cfg.source.target].notna()].max()
        reason = (
            f"last value at {last_seen.isoformat()} is {stale_steps} steps before as_of "
            f"(max_gap {data.max_gap})"
        )
        return {**q, "status": "skipped", "reason": reason}, None, None
    regular = repaired(regular, cfg, q)
    min_rows = fc.lookback + fc.horizon
    if len(regular) < min_rows:
        reason = f"{len(regular)} usable steps < lookback + horizon = {min_rows}"
        if q["dropped_before_gap"]:
            reason += f" (history before a gap longer than max_gap={data.max_gap} was dropped)"
        return {**q, "status": "skipped", "reason": reason}, None, None
    regular.index.name = "ts"
    history = regular.reset_index().assign(series_id=sid)
    future = None
    if cfg.source.future_covariates:
        future = future_part(group, regular, cfg, as_of, future_index, q).assign(series_id=sid)
    elif cfg.source.events_table:  # the horizon's rows, for the event columns
        future = pd.DataFrame({"ts": future_index, "series_id": sid})
    return q, history, future


def numeric_columns(cfg: PipelineConfig) -> list[str]:
    return [cfg.source.target, *cfg.source.covariates, *cfg.source.future_covariates]


def clean_frame(
    raw: pd.DataFrame, cfg: PipelineConfig, as_of: pd.Timestamp, events: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Raw extract -> (history on a regular grid, future covariates for the horizon, per-series quality);
    with `events` (date, name), both frames gain a 0/1 column per event name."""
    offset = pd.tseries.frequencies.to_offset(cfg.data.freq)
    numeric = numeric_columns(cfg)
    end = grid_end(as_of, cfg.data.freq)
    future_index = pd.date_range(end + offset, periods=cfg.forecast.horizon, freq=cfg.data.freq)
    history_parts, future_parts, quality = [], [], []
    for sid, group in _prepare(raw, numeric).groupby("series_id", sort=True):
        q, history, future = clean_series(sid, group, cfg, as_of, end, future_index)
        quality.append(q)
        if history is not None:
            history_parts.append(history)
        if future is not None:
            future_parts.append(future)
    columns = ["series_id", "ts", *numeric]
    history = (
        pd.concat(history_parts, ignore_index=True)[columns]
        if history_parts
        else pd.DataFrame(columns=columns)
    )
    fut_cols = ["series_id", "ts", *cfg.source.future_covariates]
    fut_frame = (
        pd.concat(future_parts, ignore_index=True)[fut_cols]
        if future_parts
        else pd.DataFrame(columns=fut_cols)
    )
    if events is not None:
        history, fut_frame = (
            pd.concat(
                [f.reset_index(drop=True), event_features(f["ts"].reset_index(drop=True), events)], axis=1
            )
            for f in (history, fut_frame)
        )
    types = {**dict.fromkeys(COUNT_COLUMNS, "int64"), "status": "str", "reason": "str"}
    return history, fut_frame, pd.DataFrame(quality, columns=QUALITY_COLUMNS).astype(types)


def run_clean(
    cfg: PipelineConfig, extract_path: str, as_of: pd.Timestamp, events_path: str | None = None
) -> CleanResult:
    started = time.perf_counter()
    raw = pd.read_parquet(extract_path)
    events = pd.read_parquet(events_path) if events_path is not None else None
    history, future, quality = clean_frame(raw, cfg, as_of, events)
    if history.empty:
        reasons = "; ".join(f"{r.series_id}: {r.reason}" for r in quality.head(5).itertuples())
        raise DataError(f"no series is usable for forecasting after cleaning {cfg.source.label} ({reasons})")
    out = Path(extract_path).parent
    paths = {name: out / f"{name}.parquet" for name in ("history", "future", "quality")}
    write_parquet_atomic(history, paths["history"])
    write_parquet_atomic(future, paths["future"])
    write_parquet_atomic(quality, paths["quality"])
    return CleanResult(
        history_path=str(paths["history"]),
        future_path=str(paths["future"]),
        quality_path=str(paths["quality"]),
        series_kept=int((quality["status"] == "ok").sum()),
        series_skipped=int((quality["status"] == "skipped").sum()),
        rows=len(history),
        imputed=int(quality["imputed"].sum()),
        seconds=round(time.perf_counter() - started, 3),
    )


@task
def clean(cfg: PipelineConfig, extract_path: str, as_of: str, events_path: str | None = None) -> CleanResult:
    """Put every series on the grid, impute its gaps and count each repair in the quality report."""
    return run_clean(cfg, extract_path, parse_as_of(as_of), events_path)
