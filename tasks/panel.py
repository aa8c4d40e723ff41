"""The cleaned history as the model reads it: a Panel with the calendar features the config asks for.

Shared by the stages that load the history (validate, train, registry, forecast), so every one of them
sees the same inputs in the same order.
"""

from __future__ import annotations

import pandas as pd

from lstm_model.features import calendar_features, calendar_names
from lstm_model.panel import Panel
from tasks.config import PipelineConfig


def future_names(cfg: PipelineConfig) -> tuple[str, ...]:
    """Known-in-advance inputs of the model: the source's future covariates, then calendar features."""
    calendar = calendar_names(cfg.data.freq) if cfg.data.calendar else ()
    return (*cfg.source.future_covariates, *calendar)


def with_calendar(cfg: PipelineConfig, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` (with a `ts` column) plus the calendar feature columns the config asks for."""
    if not cfg.data.calendar:
        return frame
    frame = frame.reset_index(drop=True)
    return pd.concat([frame, calendar_features(frame["ts"], cfg.data.freq)], axis=1)


def load_panel(cfg: PipelineConfig, history_path: str, series: tuple[str, ...] | None = None) -> Panel:
    """The cleaned history as a Panel; only `series` (read with a Parquet filter) when given."""
    filters = [("series_id", "in", list(series))] if series is not None else None
    frame = with_calendar(cfg, pd.read_parquet(history_path, filters=filters))
    return Panel.from_frame(
        frame, series_col="series_id", time_col="ts", target_col=cfg.source.target,
        past=cfg.source.covariates, future=future_names(cfg),
    )  # fmt: skip
