"""Helpers that several test files share (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from lstmcast.demo import sales_frame, sensor_frame
from tasks.clean import CleanResult
from tasks.config import PipelineConfig
from tasks.forecast import ForecastResult, run_forecast_group, run_merge_forecasts, series_groups

# The output databases a publish is tested on: SQLite, PostgreSQL with the partitioned forecast table
# lstmcast creates there, and PostgreSQL with a plain one (`output.partitioned = false`).
OUTPUT_KINDS = [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("postgres-plain", marks=pytest.mark.postgres),
]


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


def sensor_slice(hours: int = 400, sensors: tuple[str, ...] = ("OT", "HUFL", "HULL")) -> pd.DataFrame:
    """The first `hours` of a few ETTh1 sensors (CC BY-ND 4.0, Zhou et al. 2021), long format."""
    frame = sensor_frame()
    frame = frame[frame["series_id"].isin(sensors)]
    return frame.groupby("series_id").head(hours).reset_index(drop=True)


def sales_slice(
    days: int = 200, products: tuple[str, ...] = ("B1_1", "B1_2", "B2_1", "B3_1")
) -> pd.DataFrame:
    """The first `days` of a few pasta products (Mancuso et al. 2021), long format with promotion flags."""
    frame = sales_frame()
    frame = frame[frame["product"].isin(products)]
    return frame.groupby("product").head(days).reset_index(drop=True)


# Pasta products (with B1_1 and B2_1, whose flags do not follow the sales) including two whose promotion
# flag is 1 on exactly the days with sales (B2_10, B2_13), and what the leakage guard says about them.
LEAKY_PRODUCTS = ("B1_1", "B2_1", "B2_10", "B2_13")
PROMO_REFUSED = (
    "source.future_covariates column 'promo' looks recorded from the target 'qty', not planned in advance: "
    "it is zero on the target's zero steps and non-zero on its non-zero steps on 2 of 4 series "
    "(on 99% or more of each; 2 on every step); remove it, or add it to source.checked_covariates if it is "
    "a plan fixed before each as-of"
)


def write_table(url: str, table: str, frame: pd.DataFrame) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        frame.to_sql(table, conn, if_exists="replace", index=False)
    engine.dispose()


TINY_MODEL = {"hidden_size": 8, "num_layers": 2, "dropout": 0.1}


TINY_TRAINING = {
    "max_epochs": 2,
    "steps_per_epoch": 3,
    "batch_size": 16,
    "patience": 2,
    "seed": 0,
    "device": "cpu",
    "threads": 1,  # tiny models gain nothing from more threads, and tests share the machine
}


def sensor_config_dict(url: str, data_dir: Path, **overrides) -> dict:
    cfg = {
        "name": "sensors",
        "source": {
            "url": url,
            "table": "readings",
            "series_id": "series_id",
            "timestamp": "ts",
            "target": "value",
        },
        "data": {"freq": "h", "season_length": 24, "max_gap": 6, "data_dir": str(data_dir)},
        # The tiny model's backtest decides nothing here; tests of the gate set it explicitly.
        "forecast": {"horizon": 12, "lookback": 24, "folds": 2, "gate": "off"},
        "model": dict(TINY_MODEL),
        "training": dict(TINY_TRAINING),
        "output": {"url": url, "table": "forecasts"},
    }
    for section, values in overrides.items():
        cfg[section] = {**cfg.get(section, {}), **values} if isinstance(values, dict) else values
    return cfg


def seasonal_frame(series: int = 3, hours: int = 400, seed: int = 0) -> pd.DataFrame:
    """Series that repeat a fixed random daily pattern exactly, plus 1e-3 noise: seasonal naive is
    all but perfect, and a model trained for a few steps cannot come close."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2020-01-01", periods=hours, freq="h", tz="UTC")
    parts = []
    for i in range(series):
        pattern = rng.normal(0.0, 5.0, 24)
        value = 50.0 + np.tile(pattern, hours // 24 + 1)[:hours] + rng.normal(0.0, 1e-3, hours)
        parts.append(pd.DataFrame({"series_id": f"s{i}", "ts": ts, "value": value}))
    return pd.concat(parts, ignore_index=True)
