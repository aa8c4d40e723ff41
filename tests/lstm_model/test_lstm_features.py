import numpy as np
import pandas as pd
import pytest

from lstm_model.features import (
    HOLIDAY_NAMES,
    NEAR_DAYS,
    calendar_features,
    calendar_names,
    check_calendar,
    event_features,
    event_names,
    holiday_features,
)

HOUR = ("hour_of_day_sin", "hour_of_day_cos")
WEEK = ("day_of_week_sin", "day_of_week_cos")
YEAR = ("day_of_year_sin", "day_of_year_cos")


@pytest.mark.parametrize(
    ("freq", "names"),
    [
        ("h", HOUR + WEEK + YEAR),
        ("15min", HOUR + WEEK + YEAR),
        ("D", WEEK + YEAR),  # hour of day is constant on a daily grid
        ("W", YEAR),  # and day of week on a weekly one
        ("MS", YEAR),
        ("YS", ()),  # day of year barely moves from one year to the next
    ],
)
def test_names_keep_only_the_cycles_a_step_can_resolve(freq, names):
    assert calendar_names(freq) == names


def encoded(ts, freq: str = "h") -> pd.DataFrame:
    return calendar_features(pd.DatetimeIndex(pd.to_datetime(ts)), freq)


def angle(frame: pd.DataFrame, cycle: str) -> np.ndarray:
    return np.arctan2(frame[f"{cycle}_sin"].to_numpy(np.float64), frame[f"{cycle}_cos"].to_numpy(np.float64))


def test_values_at_known_timestamps():
    # 2024-01-01 was a Monday: midnight, first day of the week and of the year are all angle 0
    f = encoded(["2024-01-01 00:00", "2024-01-01 06:00", "2024-01-01 12:00", "2024-01-04 00:00"])
    assert list(f.columns) == list(calendar_names("h")) and (f.dtypes == np.float32).all()
    np.testing.assert_allclose(f.iloc[0], [0, 1, 0, 1, 0, 1], atol=1e-7)
    np.testing.assert_allclose(f.loc[f.index[1], list(HOUR)], [1, 0], atol=1e-7)  # a quarter day
    np.testing.assert_allclose(f.loc[f.index[2], list(HOUR)], [0, -1], atol=1e-7)  # noon: opposite
    # Thursday 00:00 is 3/7 of the way through the week
    np.testing.assert_allclose(angle(f, "day_of_week")[3], 2 * np.pi * 3 / 7, atol=1e-6)


def test_cycles_wrap_around_so_neighbours_stay_neighbours():
    """23:00 is as close to 00:00 as 01:00 is; Sunday late evening is next to Monday morning."""
    f = encoded(["2024-01-07 23:00", "2024-01-08 00:00", "2024-01-08 01:00", "2024-01-11 00:00"])
    hour, week = f[list(HOUR)].to_numpy(), f[list(WEEK)].to_numpy()
    step = np.linalg.norm(hour[1] - hour[2])
    assert np.linalg.norm(hour[0] - hour[1]) == pytest.approx(step, rel=1e-5)
    sunday_to_monday = np.linalg.norm(week[0] - week[1])
    assert sunday_to_monday == pytest.approx(2 * np.sin(np.pi / 168), rel=1e-4)  # one hour of the week
    assert sunday_to_monday < 0.05 < np.linalg.norm(week[1] - week[3])  # Monday vs Thursday: far apart


def test_series_keep_their_index_and_a_datetimeindex_indexes_the_result():
    stamps = pd.date_range("2024-03-30 22:00", periods=5, freq="h")
    column = pd.Series(stamps, index=[10, 11, 12, 13, 14], name="ts")  # e.g. the ts column of a long frame
    from_series = calendar_features(column, "h")
    from_index = calendar_features(stamps, "h")
    assert list(from_series.index) == [10, 11, 12, 13, 14]
    assert from_index.index.equals(stamps)
    np.testing.assert_array_equal(from_series.to_numpy(), from_index.to_numpy())
    joined = pd.concat([column.to_frame(), from_series], axis=1)  # rows line up with their timestamps
    assert len(joined) == 5 and not joined.isna().any().any()


def test_daily_data_gets_week_and_year_only():
    f = calendar_features(pd.date_range("2024-01-01", periods=3, freq="D"), "D")
    assert tuple(f.columns) == WEEK + YEAR
    np.testing.assert_allclose(angle(f, "day_of_week"), 2 * np.pi * np.arange(3) / 7, atol=1e-6)
    assert calendar_features(pd.date_range("2024-01-01", periods=2, freq="YS"), "YS").shape == (2, 0)


def test_holiday_features_mark_italian_holidays_and_the_days_near_them():
    days = pd.date_range("2018-12-20", "2019-01-02", freq="D")
    feats = holiday_features(days, "IT")
    assert tuple(feats.columns) == HOLIDAY_NAMES
    marked = days[feats["holiday"].to_numpy() == 1.0]
    assert [d.date().isoformat() for d in marked] == ["2018-12-25", "2018-12-26", "2019-01-01"]
    before = feats["holiday_before"]
    # Christmas Eve is the day before a holiday (1); each day further out loses 1/NEAR_DAYS
    assert before["2018-12-24"] == 1.0 and before["2018-12-20"] == pytest.approx(1 - 4 / NEAR_DAYS)
    after = feats["holiday_after"]
    assert after["2018-12-27"] == 1.0 and after["2018-12-28"] == pytest.approx(1 - 1 / NEAR_DAYS)


def test_holiday_features_fall_to_zero_far_from_any_holiday_and_follow_the_wall_clock_date():
    feats = holiday_features(pd.date_range("2018-07-01", "2018-07-31", freq="D"), "IT")
    assert (feats.to_numpy() == 0.0).all()  # no Italian holiday within a week of July
    hourly = holiday_features(pd.date_range("2018-12-24 22:00", periods=4, freq="h", tz="UTC"), "IT")
    assert hourly["holiday"].tolist() == [0.0, 0.0, 1.0, 1.0]


def test_a_subdivision_adds_its_own_holidays():
    day = pd.DatetimeIndex(["2018-03-31"])  # Cesar Chavez Day: California only
    assert holiday_features(day, "US-CA")["holiday"].iloc[0] == 1.0
    assert holiday_features(day, "US")["holiday"].iloc[0] == 0.0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("XX", "country code 'XX' is not one the holidays library knows (ISO 3166-1 alpha-2 such as 'IT', "
               "'US', 'CN'; holidays.list_supported_countries() lists them)"),
        ("CN-ZZ", "subdivision 'ZZ' of 'CN' is unknown to the holidays library; it has none"),
        ("US-CA-X", "'US-CA-X' is not a country code ('IT') or a country and subdivision ('US-CA')"),
    ],
)  # fmt: skip
def test_an_unknown_calendar_is_refused_by_name(spec, message):
    with pytest.raises(ValueError) as err:
        check_calendar(spec)
    assert str(err.value) == message


def test_event_features_one_column_per_name_on_its_dates():
    events = pd.DataFrame({
        "date": pd.to_datetime(["2018-01-03", "2018-01-05", "2018-01-04"]),
        "name": ["closed", "closed", "flyer"],
    })  # fmt: skip
    ts = pd.Series(pd.date_range("2018-01-02", periods=5, freq="D"), index=range(10, 15))
    feats = event_features(ts, events)
    assert list(feats.columns) == ["event:closed", "event:flyer"] and list(feats.index) == list(ts.index)
    assert feats["event:closed"].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]
    assert feats["event:flyer"].tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert event_names(["ts", "event:flyer", "qty"]) == ("event:flyer",)
