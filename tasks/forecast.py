"""Forecast: `horizon` steps after as-of for every usable series, from the trained checkpoint."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task

from lstm_model.checkpoint import load_checkpoint
from lstm_model.train import predict
from tasks.clean import write_parquet_atomic
from tasks.config import PipelineConfig
from tasks.validate import load_panel


@dataclass(frozen=True)
class ForecastResult:
    path: str
    series: int
    rows: int
    seconds: float


def future_arrays(
    cfg: PipelineConfig, future_path: str, series_ids: tuple[str, ...]
) -> list[np.ndarray] | None:
    """Known-in-advance covariates for the horizon, one (horizon, F) array per series in panel order."""
    names = list(cfg.source.future_covariates)
    if not names:
        return None
    frame = pd.read_parquet(future_path)
    groups = {sid: g.sort_values("ts")[names].to_numpy("float32") for sid, g in frame.groupby("series_id")}
    missing = [sid for sid in series_ids if sid not in groups]
    if missing:
        raise ValueError(f"no future covariate rows for series {missing[:5]} in {future_path}")
    return [groups[sid] for sid in series_ids]


def make_forecast(
    cfg: PipelineConfig, checkpoint_path: str, history_path: str, future_path: str
) -> ForecastResult:
    started = time.perf_counter()
    model = load_checkpoint(checkpoint_path)
    panel = load_panel(cfg, history_path)
    yhat = predict(model, panel, future_arrays(cfg, future_path, panel.series_ids))
    if cfg.data.non_negative:
        yhat = np.clip(yhat, 0.0, None)
    if not np.isfinite(yhat).all():
        bad = [panel.series_ids[i] for i in np.flatnonzero(~np.isfinite(yhat).all(axis=1))]
        raise FloatingPointError(f"the model produced non-finite forecasts for series {bad[:5]}")
    last = pd.read_parquet(history_path, columns=["series_id", "ts"]).groupby("series_id")["ts"].max()
    offset = pd.tseries.frequencies.to_offset(cfg.data.freq)
    horizon = cfg.forecast.horizon
    frames = [
        pd.DataFrame(
            {
                "series_id": sid,
                "ts": pd.date_range(last[sid] + offset, periods=horizon, freq=cfg.data.freq),
                "yhat": yhat[i],
            }
        )
        for i, sid in enumerate(panel.series_ids)
    ]
    frame = pd.concat(frames, ignore_index=True)
    path = Path(history_path).with_name("forecast.parquet")
    write_parquet_atomic(frame, path)
    return ForecastResult(
        path=str(path),
        series=len(panel.series_ids),
        rows=len(frame),
        seconds=round(time.perf_counter() - started, 3),
    )


@task
def forecast(
    cfg: PipelineConfig, checkpoint_path: str, history_path: str, future_path: str
) -> ForecastResult:
    return make_forecast(cfg, checkpoint_path, history_path, future_path)
