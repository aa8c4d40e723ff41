"""Helpers that several test files share (fixtures live in conftest.py)."""

from __future__ import annotations

import pandas as pd

from tasks.clean import CleanResult
from tasks.config import PipelineConfig
from tasks.forecast import ForecastResult, run_forecast_group, run_merge_forecasts, series_groups


def forecast_all(
    cfg: PipelineConfig, checkpoint: str | None, cleaned: CleanResult, baseline: str = "seasonal_naive",
    groups: int = 1,
) -> ForecastResult:  # fmt: skip
    """The flow's forecast path without a flow: every group of series, then the merged forecast file."""
    history = cleaned.history_path
    parts = [
        run_forecast_group(cfg, checkpoint, history, cleaned.future_path, i, group, baseline)
        for i, group in enumerate(series_groups(history, groups))
    ]
    return run_merge_forecasts(cfg, history, parts, 0.0)


def read_forecast(result: ForecastResult) -> pd.DataFrame:
    return pd.read_parquet(result.path)
