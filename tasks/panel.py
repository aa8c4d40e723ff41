"""The cleaned history as the model reads it: a Panel with the calendar, holiday and event features the
config asks for.

Shared by the stages that load the history (validate, train, registry, forecast), so every one of them
sees the same inputs in the same order: the source's future covariates, the events (columns the clean stage
added, "event:<name>"), the calendar, then the holidays.
"""

from __future__ import annotations

import pandas as pd

from lstm_model.features import (
    HOLIDAY_NAMES,
    calendar_features,
    calendar_names,
    event_names,
    holiday_features,
)
from lstm_model.panel import Panel
from tasks.config import PipelineConfig


def future_names(cfg: PipelineConfig, events: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Known-in-advance inputs of the model: the source's future covariates, the event columns `events`,
    then the calendar and holiday features."""
    calendar = calendar_names(cfg.data.freq) if cfg.data.calendar else ()
    holidays = HOLIDAY_NAMES if cfg.data.holidays else ()
    return (*cfg.source.future_covariates, *events, *calendar, *holidays)


def with_calendar(cfg: PipelineConfig, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` (with a `ts` column) plus the calendar and holiday feature columns the config asks for."""
    parts = []
    if cfg.data.calendar:
        parts.append(calendar_features(frame["ts"], cfg.data.freq))
    if cfg.data.holidays:
        parts.append(holiday_features(frame["ts"], cfg.data.holidays))
    if not parts:
        return frame
    frame = frame.reset_index(drop=True)
    return pd.concat([frame, *(p.reset_index(drop=True) for p in parts)], axis=1)


def load_panel(cfg: PipelineConfig, history_path: str, series: tuple[str, ...] | None = None) -> Panel:
    """The cleaned history as a Panel; only `series` (read with a Parquet filter) when given."""
    filters = [("series_id", "in", list(series))] if series is not None else None
    frame = with_calendar(cfg, pd.read_parquet(history_path, filters=filters))
    return Panel.from_frame(
        frame, series_col="series_id", time_col="ts", target_col=cfg.source.target,
        past=cfg.source.covariates, future=future_names(cfg, event_names(frame.columns)),
    )  # fmt: skip
