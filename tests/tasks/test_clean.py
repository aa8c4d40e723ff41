import numpy as np
import pandas as pd
import pytest

from tasks.clean import clean, clean_frame, impute
from tasks.extract import extract_to_parquet, parse_as_of


def hourly(series: str, start: str, values, ts=None) -> pd.DataFrame:
    index = ts if ts is not None else pd.date_range(start, periods=len(values), freq="h", tz="UTC")
    return pd.DataFrame({"series_id": series, "ts": index, "value": np.asarray(values, dtype="float64")})


def test_impute_fills_only_gaps_up_to_max_gap():
    s = pd.Series([1.0, np.nan, 3.0, np.nan, np.nan, np.nan, 7.0, np.nan])
    assert impute(s, "linear", 2).tolist()[:3] == [1.0, 2.0, 3.0]
    out = impute(s, "linear", 2)
    assert out.iloc[3:6].isna().all() and np.isnan(out.iloc[7])
    assert impute(s, "ffill", 3).tolist()[:7] == [1.0, 1.0, 3.0, 3.0, 3.0, 3.0, 7.0]


def test_regular_grid_duplicates_and_gaps(sensor_cfg):
    cfg = sensor_cfg(forecast={"lookback": 4, "horizon": 2}, data={"max_gap": 2, "duplicates": "mean"})
    raw = hourly("a", "2020-01-01", np.arange(12.0))
    raw = raw.drop(index=[4, 5])  # a 2-step gap
    raw = pd.concat([raw, hourly("a", "", [100.0], ts=[raw["ts"].iloc[0]])])  # duplicate of the first step
    raw = raw.sample(frac=1.0, random_state=0)  # out of order
    history, _, quality = clean_frame(raw, cfg, parse_as_of("2020-01-01 11:00"))
    assert history["ts"].is_monotonic_increasing and len(history) == 12
    assert history["value"].tolist() == [50.0, *np.arange(1.0, 12.0)]
    q = quality.iloc[0]
    assert (q.status, q.duplicates, q.missing, q.imputed) == ("ok", 1, 2, 2)


def test_gap_longer_than_max_gap_drops_older_history_and_short_series_skip(sensor_cfg):
    cfg = sensor_cfg(forecast={"lookback": 4, "horizon": 2}, data={"max_gap": 1})
    long = hourly("long", "2020-01-01", np.arange(20.0)).drop(index=[5, 6, 7])
    short = hourly("short", "2020-01-01", np.arange(20.0)).drop(index=range(0, 15))
    history, _, quality = clean_frame(pd.concat([long, short]), cfg, parse_as_of("2020-01-01 19:00"))
    q = quality.set_index("series_id")
    assert q.loc["long", "status"] == "ok" and q.loc["long", "dropped_before_gap"] == 8
    assert history["value"].tolist() == list(np.arange(8.0, 20.0))
    assert q.loc["short", "status"] == "skipped"
    assert q.loc["short", "reason"] == "5 usable steps < lookback + horizon = 6"


def test_stale_and_empty_series_are_skipped_with_reasons(sensor_cfg):
    cfg = sensor_cfg(forecast={"lookback": 4, "horizon": 2}, data={"max_gap": 3})
    ok = hourly("ok", "2020-01-01", np.arange(24.0))
    stale = hourly("stale", "2020-01-01", np.arange(10.0))
    empty = hourly("empty", "2020-01-01", [np.nan] * 24)
    history, _, quality = clean_frame(pd.concat([ok, stale, empty]), cfg, parse_as_of("2020-01-01 23:00"))
    q = quality.set_index("series_id")
    assert set(history["series_id"]) == {"ok"}
    assert (
        q.loc["stale", "reason"]
        == "last value at 2020-01-01T09:00:00+00:00 is 14 steps before as_of (max_gap 3)"
    )
    assert q.loc["empty", "reason"] == "no values in the target column"


def test_late_newest_readings_are_carried_to_as_of(sensor_cfg):
    cfg = sensor_cfg(forecast={"lookback": 4, "horizon": 2}, data={"max_gap": 3})
    history, _, quality = clean_frame(
        hourly("a", "2020-01-01", np.arange(10.0)), cfg, parse_as_of("2020-01-01 11:00")
    )
    assert history["ts"].iloc[-1] == pd.Timestamp("2020-01-01 11:00", tz="UTC")
    assert history["value"].iloc[-3:].tolist() == [9.0, 9.0, 9.0]


def test_non_finite_and_negative_values(sensor_cfg):
    cfg = sensor_cfg(forecast={"lookback": 4, "horizon": 2}, data={"max_gap": 2, "non_negative": True})
    raw = hourly("a", "2020-01-01", [1.0, np.inf, 3.0, -5.0, 5.0, 6.0, 7.0, 8.0])
    history, _, quality = clean_frame(raw, cfg, parse_as_of("2020-01-01 07:00"))
    assert history["value"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    q = quality.iloc[0]
    assert (q.non_finite, q.negative, q.imputed) == (1, 1, 2)


def test_sales_future_covariates_cover_the_horizon(sales_cfg):
    as_of = parse_as_of("2014-06-01")
    extracted = extract_to_parquet(sales_cfg, as_of)
    result = clean.fn(sales_cfg, extracted.path, as_of.isoformat())
    history = pd.read_parquet(result.history_path)
    future = pd.read_parquet(result.future_path)
    assert result.series_kept == 4 and result.series_skipped == 0
    assert not history[["qty", "promo"]].isna().any().any()
    assert (history.groupby("series_id")["ts"].max() == as_of).all()
    assert len(future) == 4 * 14 and not future["promo"].isna().any()
    assert future["ts"].min() == as_of + pd.Timedelta(days=1)
    # pasta_sales has closed days missing from the file: they are imputed and counted
    assert result.imputed > 0


def test_nothing_usable_is_an_error_naming_reasons(sensor_cfg):
    cfg = sensor_cfg(forecast={"lookback": 300, "horizon": 200})
    extracted = extract_to_parquet(cfg, parse_as_of("2016-07-10"))
    with pytest.raises(
        ValueError, match=r"no series is usable for forecasting after cleaning table 'readings' \(HUFL: "
    ):
        clean.fn(cfg, extracted.path, "2016-07-10")
