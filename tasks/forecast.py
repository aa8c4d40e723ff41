"""Forecast: `horizon` steps after as-of for every usable series, with a prediction interval.

The forecast comes from the trained checkpoint, or, when the LSTM is not used (the backtest gate or a
failed training fell back), from the baseline that scored best in the backtest, with its intervals.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task

from lstm_model.baselines import baseline_quantiles
from lstm_model.calibration import quantile_pairs
from lstm_model.checkpoint import load_checkpoint
from lstm_model.features import event_names
from lstm_model.panel import Panel
from lstm_model.prediction import predict
from tasks.config import PipelineConfig
from tasks.files import write_parquet_atomic
from tasks.panel import future_names, load_panel, with_calendar

SEASONAL_NAIVE = "seasonal_naive"


@dataclass(frozen=True)
class ForecastResult:
    path: str
    series: int
    rows: int
    seconds: float
    interval: float | None  # nominal coverage of [yhat_lower, yhat_upper], None without an interval


def horizon_index(cfg: PipelineConfig, history_path: str) -> dict[str, pd.DatetimeIndex]:
    """The `horizon` timestamps after each series' last cleaned step."""
    last = pd.read_parquet(history_path, columns=["series_id", "ts"]).groupby("series_id")["ts"].max()
    offset = pd.tseries.frequencies.to_offset(cfg.data.freq)
    return {
        str(sid): pd.date_range(ts + offset, periods=cfg.forecast.horizon, freq=cfg.data.freq)
        for sid, ts in last.items()
    }


def future_arrays(
    cfg: PipelineConfig, future_path: str, index: dict[str, pd.DatetimeIndex], series_ids: tuple[str, ...]
) -> list[np.ndarray] | None:
    """Known-in-advance inputs for the horizon, one (horizon, F) array per series in panel order."""
    frame = None
    if cfg.source.future_covariates or cfg.source.events_table:
        frame = pd.read_parquet(future_path)
    events = event_names(frame.columns) if frame is not None else ()
    from_file = [*cfg.source.future_covariates, *events]
    names = future_names(cfg, events)
    if not names:
        return None
    groups: dict[str, pd.DataFrame] = {}
    if from_file:
        groups = {str(sid): g.set_index("ts")[from_file] for sid, g in frame.groupby("series_id")}
        missing = [sid for sid in series_ids if sid not in groups]
        if missing:
            raise ValueError(f"no future covariate rows for series {missing[:5]} in {future_path}")
    out = []
    for sid in series_ids:
        rows = pd.DataFrame({"ts": index[sid]})
        if from_file:
            rows = rows.join(groups[sid], on="ts")
            if rows[from_file].isna().any().any():
                raise ValueError(
                    f"series {sid!r}: future covariates do not cover the horizon in {future_path}"
                )
        out.append(with_calendar(cfg, rows)[list(names)].to_numpy("float32"))
    return out


def interval_columns(quantiles: tuple[float, ...]) -> tuple[int, int, int] | None:
    """(lower, median, upper) positions of the outermost symmetric interval, or None without one."""
    pairs = quantile_pairs(quantiles)
    return (pairs[0][0], quantiles.index(0.5), pairs[0][1]) if pairs else None


def nominal_coverage(quantiles: tuple[float, ...]) -> float | None:
    """The promised coverage of [yhat_lower, yhat_upper], None without an interval."""
    cols = interval_columns(quantiles)
    return round(quantiles[cols[2]] - quantiles[cols[0]], 6) if cols else None


def forecast_frame(
    cfg: PipelineConfig, panel: Panel, index: dict[str, pd.DatetimeIndex], q: np.ndarray
) -> tuple[pd.DataFrame, float | None]:
    """Long frame (series_id, ts, yhat, yhat_lower, yhat_upper) from quantiles (n_series, horizon, Q)."""
    levels = cfg.model_config_for_lstm().quantiles
    if cfg.data.non_negative:
        q = np.clip(q, 0.0, None)
    if not np.isfinite(q).all():
        bad = [panel.series_ids[i] for i in np.flatnonzero(~np.isfinite(q).all(axis=(1, 2)))]
        raise FloatingPointError(f"the forecast has non-finite values for series {bad[:5]}")
    cols = interval_columns(levels)
    median = levels.index(0.5)
    frames = []
    for i, sid in enumerate(panel.series_ids):
        part = {"series_id": sid, "ts": index[sid], "yhat": q[i, :, median]}
        part["yhat_lower"] = q[i, :, cols[0]] if cols else np.nan
        part["yhat_upper"] = q[i, :, cols[2]] if cols else np.nan
        frames.append(pd.DataFrame(part))
    return pd.concat(frames, ignore_index=True), nominal_coverage(levels)


def series_groups(history_path: str, groups: int) -> list[tuple[str, ...]]:
    """The series split into at most `groups` contiguous groups of near-equal size, in id order."""
    ids = sorted(pd.read_parquet(history_path, columns=["series_id"])["series_id"].astype(str).unique())
    return [
        tuple(part)
        for part in np.array_split(np.array(ids, dtype=object), min(groups, len(ids)))
        if len(part)
    ]


def forecast_series(
    cfg: PipelineConfig, checkpoint_path: str | None, history_path: str, future_path: str,
    series: tuple[str, ...] | None = None, baseline: str = SEASONAL_NAIVE,
) -> tuple[pd.DataFrame, float | None]:  # fmt: skip
    """Forecast frame of `series` (all when None) from the checkpoint, or from `baseline` without one."""
    panel = load_panel(cfg, history_path, series)
    index = horizon_index(cfg, history_path)
    levels = cfg.model_config_for_lstm().quantiles
    if checkpoint_path is None:
        q = baseline_quantiles(
            baseline, panel, cfg.forecast.horizon, cfg.data.season_length, cfg.forecast.lookback, levels
        )
    else:
        model = load_checkpoint(checkpoint_path)
        q = predict(model, panel, future_arrays(cfg, future_path, index, panel.series_ids))
    return forecast_frame(cfg, panel, index, q)


def run_forecast_group(
    cfg: PipelineConfig, checkpoint_path: str | None, history_path: str, future_path: str, group: int,
    series: tuple[str, ...], baseline: str,
) -> str:  # fmt: skip
    """One group's forecasts (from the checkpoint, or from `baseline` without one), next to the history as
    forecast-part-<group>.parquet."""
    frame, _ = forecast_series(cfg, checkpoint_path, history_path, future_path, series, baseline)
    path = Path(history_path).with_name(f"forecast-part-{group:04d}.parquet")
    write_parquet_atomic(frame, path)
    return str(path)


def run_merge_forecasts(
    cfg: PipelineConfig, history_path: str, parts: list[str], seconds: float
) -> ForecastResult:
    """The groups' forecasts as one forecast.parquet, in group order."""
    frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    path = Path(history_path).with_name("forecast.parquet")
    write_parquet_atomic(frame, path)
    return ForecastResult(
        path=str(path),
        series=int(frame["series_id"].nunique()),
        rows=len(frame),
        seconds=round(seconds, 3),
        interval=nominal_coverage(cfg.model_config_for_lstm().quantiles),
    )


@task
def forecast_group(
    cfg: PipelineConfig, checkpoint_path: str | None, history_path: str, future_path: str, group: int,
    series: tuple[str, ...], baseline: str,
) -> str:  # fmt: skip
    """Forecast one group of series; the path of its Parquet part."""
    return run_forecast_group(cfg, checkpoint_path, history_path, future_path, group, series, baseline)


@task
def merge_forecasts(
    cfg: PipelineConfig, history_path: str, parts: list[str], seconds: float
) -> ForecastResult:
    """Join the groups' forecasts into the run's forecast file."""
    return run_merge_forecasts(cfg, history_path, parts, seconds)
