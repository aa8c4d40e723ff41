import numpy as np
import pandas as pd
import pytest

from tasks.clean import clean
from tasks.extract import extract, resolve_as_of
from tasks.forecast import interval_columns
from tasks.train import train
from tests.helpers import forecast_all


@pytest.fixture
def cleaned(sales_cfg):
    as_of = resolve_as_of.fn(sales_cfg, None)
    extracted = extract.fn(sales_cfg, as_of)
    return clean.fn(sales_cfg, extracted.path, as_of)


def test_interval_columns_pick_the_outermost_symmetric_pair():
    assert interval_columns((0.1, 0.5, 0.9)) == (0, 1, 2)
    assert interval_columns((0.05, 0.1, 0.5, 0.9, 0.95)) == (0, 2, 4)
    assert interval_columns((0.5,)) is None


def test_lstm_forecast_has_ordered_intervals_and_uses_promotions(sales_cfg, cleaned):
    trained = train.fn(sales_cfg, cleaned.history_path)
    result = forecast_all(sales_cfg, trained.checkpoint_path, cleaned)
    frame = pd.read_parquet(result.path)
    assert result.rows == len(frame) == 4 * 14 and result.interval == pytest.approx(0.8)
    assert list(frame.columns) == ["series_id", "ts", "yhat", "yhat_lower", "yhat_upper"]
    assert (frame["yhat_lower"] <= frame["yhat"]).all() and (frame["yhat"] <= frame["yhat_upper"]).all()
    assert (frame["yhat_lower"] >= 0).all()  # sales are non-negative
    steps = frame.groupby("series_id")["ts"].diff().dropna()
    assert (steps == pd.Timedelta("1D")).all()


def test_seasonal_naive_forecast_repeats_the_last_week(sales_cfg, cleaned):
    result = forecast_all(sales_cfg, None, cleaned)
    frame = pd.read_parquet(result.path)
    history = pd.read_parquet(cleaned.history_path)
    for sid, fc in frame.groupby("series_id"):
        last_week = history[history["series_id"] == sid]["qty"].to_numpy()[-7:]
        np.testing.assert_allclose(fc["yhat"].to_numpy(), np.clip(np.tile(last_week, 2), 0, None))
        assert (fc["yhat_lower"] <= fc["yhat"]).all() and (fc["yhat"] <= fc["yhat_upper"]).all()


def test_forecast_groups_merge_into_the_forecast_of_all_series_at_once(sales_cfg, cleaned):
    whole = pd.read_parquet(forecast_all(sales_cfg, None, cleaned, groups=1).path)
    merged = forecast_all(sales_cfg, None, cleaned, groups=3)
    pd.testing.assert_frame_equal(pd.read_parquet(merged.path), whole)
    assert merged.series == whole["series_id"].nunique() == 4 and merged.rows == len(whole)
