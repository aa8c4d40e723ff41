import numpy as np
import pandas as pd
import pytest

from lstm_model.features import calendar_features, calendar_names

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
