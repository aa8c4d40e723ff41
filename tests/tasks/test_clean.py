import numpy as np
import pandas as pd
import pytest

from tasks.clean import clean, clean_frame, impute
from tasks.extract import run_extract
from tasks.parsing import parse_as_of
from tests.helpers import write_table


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
    extracted = run_extract(sales_cfg, as_of)
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
    extracted = run_extract(cfg, parse_as_of("2016-07-10"))
    with pytest.raises(
        ValueError, match=r"no series is usable for forecasting after cleaning table 'readings' \(HUFL: "
    ):
        clean.fn(cfg, extracted.path, "2016-07-10")


@pytest.mark.parametrize(
    ("rule", "expected"),
    [("mean", 4.0), ("sum", 12.0), ("first", 4.0), ("last", 7.0), ("min", 1.0), ("max", 7.0)],
)
def test_duplicate_timestamps_follow_the_configured_rule(sensor_cfg, rule, expected):
    cfg = sensor_cfg(forecast={"lookback": 4, "horizon": 2}, data={"max_gap": 2, "duplicates": rule})
    raw = hourly("a", "2020-01-01", np.arange(8.0))
    first = raw["ts"].iloc[3]
    raw = pd.concat([raw.drop(index=[3]), hourly("a", "", [4.0, 1.0, 7.0], ts=[first] * 3)])
    history, _, quality = clean_frame(raw, cfg, parse_as_of("2020-01-01 07:00"))
    assert history["value"].tolist() == [0.0, 1.0, 2.0, expected, 4.0, 5.0, 6.0, 7.0]
    assert (quality.iloc[0].duplicates, quality.iloc[0].out_of_order) == (2, 3)


def test_out_of_order_rows_are_sorted_and_counted(sensor_cfg):
    cfg = sensor_cfg(forecast={"lookback": 4, "horizon": 2}, data={"duplicates": "first"})
    raw = hourly("a", "2020-01-01", np.arange(8.0)).iloc[::-1]
    history, _, quality = clean_frame(raw, cfg, parse_as_of("2020-01-01 07:00"))
    assert history["value"].tolist() == list(np.arange(8.0))
    assert history["ts"].is_monotonic_increasing
    q = quality.iloc[0]
    assert (q.out_of_order, q.duplicates, q.imputed) == (7, 0, 0)


MIXED_ZONES = [
    "2020-01-01 00:00:00",  # naive: taken as UTC
    "2020-01-01T01:00:00Z",
    "2020-01-01T04:00:00+02:00",
    "2019-12-31T22:00:00-05:00",
    "2020-01-01 04:00:00+00:00",
    "2020-01-01T06:00:00+01:00",
    "2020-01-01 06:00",  # naive
    "2020-01-01T07:00:00.000+00:00",
]


def test_mixed_and_missing_time_zones_are_normalized_to_utc(sensor_cfg):
    cfg = sensor_cfg(forecast={"lookback": 4, "horizon": 2})
    raw = pd.DataFrame({"series_id": "a", "ts": MIXED_ZONES, "value": np.arange(8.0)})
    history, _, quality = clean_frame(raw, cfg, parse_as_of("2020-01-01 07:00"))
    assert history["ts"].tolist() == list(pd.date_range("2020-01-01", periods=8, freq="h", tz="UTC"))
    assert history["value"].tolist() == list(np.arange(8.0))
    q = quality.iloc[0]
    assert (q.tz_normalized, q.off_grid, q.duplicates, q.imputed) == (5, 0, 0, 0)


@pytest.mark.parametrize(
    ("ts", "normalized"),
    [
        (pd.date_range("2020-01-01 01:00", periods=8, freq="h", tz="Europe/Berlin"), 8),
        (pd.date_range("2020-01-01", periods=8, freq="h"), 0),  # naive means UTC: nothing to repair
        (pd.date_range("2020-01-01", periods=8, freq="h", tz="UTC"), 0),
    ],
    ids=["other-zone", "naive", "utc"],
)
def test_timestamp_columns_in_any_zone_end_up_in_utc(sensor_cfg, ts, normalized):
    cfg = sensor_cfg(forecast={"lookback": 4, "horizon": 2})
    history, _, quality = clean_frame(
        hourly("a", "", np.arange(8.0), ts=ts), cfg, parse_as_of("2020-01-01 07:00")
    )
    assert history["ts"].iloc[0] == pd.Timestamp("2020-01-01 00:00", tz="UTC") and len(history) == 8
    assert quality.iloc[0].tz_normalized == normalized


def test_mixed_offsets_in_a_sqlite_text_column_come_through_extract_and_clean(sensor_cfg):
    cfg = sensor_cfg(source={"table": "mixed"}, forecast={"lookback": 4, "horizon": 2})
    write_table(
        cfg.source.url, "mixed", pd.DataFrame({"series_id": "a", "ts": MIXED_ZONES, "value": np.arange(8.0)})
    )
    as_of = parse_as_of("2020-01-01 07:00")
    result = clean.fn(cfg, run_extract(cfg, as_of).path, as_of.isoformat())
    history = pd.read_parquet(result.history_path)
    assert history["ts"].tolist() == list(pd.date_range("2020-01-01", periods=8, freq="h", tz="UTC"))
    assert history["value"].tolist() == list(np.arange(8.0))
    assert pd.read_parquet(result.quality_path).iloc[0].tz_normalized == 5  # as clean counts the raw text


def test_irregular_timestamps_are_resampled_to_freq(sensor_cfg):
    cfg = sensor_cfg(forecast={"lookback": 2, "horizon": 1}, data={"duplicates": "mean"})
    ts = pd.to_datetime(
        ["2020-01-01 00:00", "2020-01-01 00:20", "2020-01-01 00:40", "2020-01-01 01:10", "2020-01-01 02:05",
         "2020-01-01 03:00"], utc=True,
    )  # fmt: skip
    raw = hourly("a", "", [1.0, 2.0, 3.0, 10.0, 20.0, 30.0], ts=ts)
    history, _, quality = clean_frame(raw, cfg, parse_as_of("2020-01-01 03:00"))
    assert history["ts"].tolist() == list(pd.date_range("2020-01-01", periods=4, freq="h", tz="UTC"))
    assert history["value"].tolist() == [2.0, 10.0, 20.0, 30.0]
    q = quality.iloc[0]
    assert (q.off_grid, q.duplicates, q.missing, q.imputed, q.rows) == (4, 2, 0, 0, 4)


def test_impute_seasonal_takes_the_value_a_season_earlier_and_chains():
    s = pd.Series([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, *[np.nan] * 6, 13.0])
    assert impute(s, "seasonal", 6, season_length=3).tolist() == [
        1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 4.0, 5.0, 6.0, 4.0, 5.0, 6.0, 13.0,
    ]  # fmt: skip


def test_impute_seasonal_falls_back_to_linear_where_no_season_earlier_exists():
    s = pd.Series([1.0, np.nan, 3.0, 4.0, np.nan, 6.0, np.nan])
    # Step 1 has nothing a season earlier: linear. Step 4 takes step 1's fill; trailing step 6 takes step 3.
    assert impute(s, "seasonal", 2, season_length=3).tolist() == [1.0, 2.0, 3.0, 4.0, 2.0, 6.0, 4.0]
    leading = pd.Series([np.nan, 2.0, 3.0])
    assert np.isnan(impute(leading, "seasonal", 2, season_length=1).iloc[0])


@pytest.mark.parametrize("method", ["linear", "ffill", "seasonal"])
def test_every_impute_method_respects_max_gap(method):
    s = pd.Series([1.0, 2.0, 3.0, 4.0, np.nan, np.nan, 7.0, 8.0, np.nan, np.nan, np.nan, 12.0])
    out = impute(s, method, 2, season_length=2)
    assert out.iloc[4:6].notna().all()
    assert out.iloc[8:11].isna().all()
    assert impute(s, method, 0, season_length=2).isna().sum() == 5


def test_seasonal_imputation_in_clean_is_counted(sensor_cfg):
    cfg = sensor_cfg(
        forecast={"lookback": 4, "horizon": 2}, data={"impute": "seasonal", "season_length": 4, "max_gap": 4}
    )
    pattern = [10.0, 40.0, 20.0, 30.0]  # linear would give 16.7 and 23.3 at the gap
    raw = hourly("a", "2020-01-01", pattern * 3).drop(index=[5, 6])
    history, _, quality = clean_frame(raw, cfg, parse_as_of("2020-01-01 11:00"))
    assert history["value"].tolist() == pattern * 3
    assert (quality.iloc[0].missing, quality.iloc[0].imputed) == (2, 2)


def test_non_numeric_values_become_missing_and_are_counted(sensor_cfg):
    cfg = sensor_cfg(forecast={"lookback": 4, "horizon": 2}, data={"max_gap": 2})
    values = pd.Series(["1", "n/a", 3.0, "4", None, "", "7", 8], dtype=object)
    raw = pd.DataFrame({"series_id": "a", "ts": pd.date_range("2020-01-01", periods=8, freq="h", tz="UTC")})
    history, _, quality = clean_frame(raw.assign(value=values), cfg, parse_as_of("2020-01-01 07:00"))
    assert history["value"].tolist() == list(np.arange(1.0, 9.0))
    q = quality.iloc[0]
    assert (q.non_numeric, q.missing, q.imputed) == (2, 3, 3)


def test_negative_values_are_removed_from_the_target_only(sensor_cfg):
    cfg = sensor_cfg(
        source={"covariates": ["temp"]}, forecast={"lookback": 4, "horizon": 2},
        data={"max_gap": 2, "non_negative": True},
    )  # fmt: skip
    raw = hourly("a", "2020-01-01", [1.0, 2.0, -3.0, 4.0, 5.0, 6.0]).assign(temp=-5.0)
    history, _, quality = clean_frame(raw, cfg, parse_as_of("2020-01-01 05:00"))
    assert history["value"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert (history["temp"] == -5.0).all()
    assert (quality.iloc[0].negative, quality.iloc[0].imputed) == (1, 1)


def spiky(outliers: str, **data) -> tuple[dict, pd.DataFrame]:
    """A target and a past covariate with one spike each, a future covariate with a planned jump."""
    cfg = {
        "source": {"covariates": ["temp"], "future_covariates": ["plan"]},
        "forecast": {"lookback": 4, "horizon": 2},
        "data": {"max_gap": 2, "outliers": outliers, **data},
    }
    raw = hourly("a", "2020-01-01", [10.0, 11.0, 9.0, 10.0, 12.0, 8.0, 10.0, 100.0, np.nan, 10.0])
    raw = raw.assign(
        temp=[5.0, 5.5, 4.5, 5.5, 6.0, 4.0, 4.5, 5.5, 5.0, -50.0], plan=[1.0, 2.0] * 4 + [1.0, 50.0]
    )
    return cfg, raw


def test_outliers_are_kept_by_default(sensor_cfg):
    cfg, raw = spiky("off")
    history, _, quality = clean_frame(raw, sensor_cfg(**cfg), parse_as_of("2020-01-01 09:00"))
    assert history["value"].iloc[7] == 100.0 and history["value"].iloc[8] == 55.0
    assert quality.iloc[0].outliers_clipped == 0


def test_outliers_are_clipped_to_median_plus_threshold_mads_before_imputation(sensor_cfg):
    cfg, raw = spiky("clip", outlier_threshold=6.0)
    history, _, quality = clean_frame(raw, sensor_cfg(**cfg), parse_as_of("2020-01-01 09:00"))
    # value: median 10, MAD 1; temp: median 5, MAD 0.5
    high = 10.0 + 6.0 * 1.4826 * 1.0
    assert history["value"].iloc[7] == pytest.approx(high)
    assert history["value"].iloc[8] == pytest.approx((high + 10.0) / 2)  # imputed from the clipped value
    assert history["temp"].iloc[9] == pytest.approx(5.0 - 6.0 * 1.4826 * 0.5)
    assert history["plan"].iloc[9] == 50.0  # future covariates are never clipped
    q = quality.iloc[0]
    assert (q.outliers_clipped, q.imputed) == (2, 1)


def test_outliers_are_not_clipped_when_the_series_has_no_spread(sensor_cfg):
    cfg = sensor_cfg(forecast={"lookback": 4, "horizon": 2}, data={"outliers": "clip"})
    raw = hourly("a", "2020-01-01", [5.0] * 7 + [50.0])
    history, _, quality = clean_frame(raw, cfg, parse_as_of("2020-01-01 07:00"))
    assert history["value"].iloc[-1] == 50.0 and quality.iloc[0].outliers_clipped == 0


def test_series_with_only_unusable_values_are_skipped(sensor_cfg):
    cfg = sensor_cfg(forecast={"lookback": 4, "horizon": 2}, data={"non_negative": True})
    texts = pd.DataFrame(
        {"series_id": "text", "ts": pd.date_range("2020-01-01", periods=8, freq="h", tz="UTC")}
    )
    texts = texts.assign(value=pd.Series(["n/a"] * 8, dtype=object))
    negative = hourly("negative", "2020-01-01", [-1.0] * 8).astype({"value": object})
    infinite = hourly("infinite", "2020-01-01", [np.inf] * 8).astype({"value": object})
    ok = hourly("ok", "2020-01-01", np.arange(8.0)).astype({"value": object})
    raw = pd.concat([texts, negative, infinite, ok])
    history, _, quality = clean_frame(raw, cfg, parse_as_of("2020-01-01 07:00"))
    q = quality.set_index("series_id")
    assert set(history["series_id"]) == {"ok"}
    for sid in ("text", "negative", "infinite"):
        assert (q.loc[sid, "status"], q.loc[sid, "reason"]) == ("skipped", "no values in the target column")
    assert (q.loc["text", "non_numeric"], q.loc["negative", "negative"], q.loc["infinite", "non_finite"]) == (
        8,
        8,
        8,
    )


def test_messy_extract_file_gives_an_integer_quality_report_and_keeps_the_good_series(sensor_cfg, tmp_path):
    cfg = sensor_cfg(forecast={"lookback": 4, "horizon": 2}, data={"max_gap": 2})
    good = pd.DataFrame({"series_id": "good", "ts": MIXED_ZONES, "value": np.arange(8.0)})
    short = pd.DataFrame({"series_id": "short", "ts": MIXED_ZONES[-3:], "value": [1.0, 2.0, 3.0]})
    empty = pd.DataFrame({"series_id": "empty", "ts": MIXED_ZONES, "value": np.nan})
    broken = pd.DataFrame({"series_id": "good", "ts": ["not a time"], "value": [1.0]})
    path = tmp_path / "extract.parquet"
    pd.concat([good, short, empty, broken]).to_parquet(path, index=False)
    result = clean.fn(cfg, str(path), "2020-01-01 07:00")
    assert (result.series_kept, result.series_skipped, result.rows) == (1, 2, 8)
    quality = pd.read_parquet(result.quality_path).set_index("series_id")
    counts = quality.drop(columns=["status", "reason"])
    assert all(pd.api.types.is_integer_dtype(t) for t in counts.dtypes)
    assert all(pd.api.types.is_string_dtype(quality[c]) for c in ("status", "reason"))
    assert (quality.loc["good", "tz_normalized"], quality.loc["good", "no_timestamp"]) == (5, 1)
    assert quality.loc["short", "reason"] == "3 usable steps < lookback + horizon = 6"
    assert quality.loc["empty", "reason"] == "no values in the target column"


def test_no_row_is_invented_or_lost(sensor_cfg):
    cfg = sensor_cfg(forecast={"lookback": 4, "horizon": 2}, data={"max_gap": 3, "duplicates": "max"})
    rng = np.random.default_rng(1)
    raw = hourly("a", "2020-01-01", rng.normal(10.0, 1.0, 48)).drop(index=[3, 10, 11, 20, 21, 22])
    raw = pd.concat([raw, raw.sample(5, random_state=2).assign(value=-1.0)]).sample(frac=1.0, random_state=3)
    history, _, quality = clean_frame(raw, cfg, parse_as_of("2020-01-02 23:00"))
    q = quality.iloc[0]
    observed = raw.groupby("ts")["value"].max()
    assert len(history) == len(observed) + q.imputed == q.rows
    kept = history.set_index("ts")["value"]
    assert (kept.loc[observed.index] == observed).all()
    assert (q.duplicates, q.missing, q.imputed, q.dropped_before_gap) == (5, 6, 6, 0)


def test_events_become_columns_of_the_history_and_of_the_horizon(sales_cfg):
    cfg = sales_cfg.model_copy(update={"source": sales_cfg.source.model_copy(update={"events_table": "ev"})})
    as_of = parse_as_of("2014-06-01")
    raw = pd.read_parquet(run_extract(sales_cfg, as_of).path)
    events = pd.DataFrame({
        "date": pd.to_datetime(["2014-05-30", "2014-06-03", "2014-06-03"]), "name": ["fair", "fair", "sale"],
    })  # fmt: skip
    history, future, _ = clean_frame(raw, cfg, as_of, events)
    assert list(future.columns) == ["series_id", "ts", "promo", "event:fair", "event:sale"]
    assert len(future) == 4 * 14 and not future["promo"].isna().any()  # with the promotion plan
    marked = future[future["event:fair"] == 1]
    assert set(marked["ts"]) == {pd.Timestamp("2014-06-03", tz="UTC")} and len(marked) == 4
    assert future["event:sale"].equals(future["event:fair"])
    assert set(history.loc[history["event:fair"] == 1, "ts"]) == {pd.Timestamp("2014-05-30", tz="UTC")}
    assert (history["event:sale"] == 0).all()
    without = clean_frame(raw, cfg, as_of)[0]
    pd.testing.assert_frame_equal(history.drop(columns=["event:fair", "event:sale"]), without)
