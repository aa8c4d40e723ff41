import numpy as np
import pandas as pd
import pytest

from tasks.parsing import ZONE_CONVERTED, ZONE_MISSING, ZONE_UTC, to_float, to_utc, zone_repairs

TEXT = [
    ("2020-01-01 00:00:00", ZONE_MISSING, "2020-01-01 00:00"),
    ("2020-01-01T01:00:00Z", ZONE_UTC, "2020-01-01 01:00"),
    ("2020-01-01T04:00:00+02:00", ZONE_CONVERTED, "2020-01-01 02:00"),
    ("2019-12-31T22:00:00-05:00", ZONE_CONVERTED, "2020-01-01 03:00"),
    ("2020-01-01 04:00:00+00:00", ZONE_UTC, "2020-01-01 04:00"),
    (" 2020-01-01T06:00:00+0100 ", ZONE_CONVERTED, "2020-01-01 05:00"),
    ("2020-01-01T06:00:00-00", ZONE_UTC, "2020-01-01 06:00"),
    ("2020-01-01T12:30:00.250+05:30", ZONE_CONVERTED, "2020-01-01 07:00:00.250"),
    ("2020-01-01 08:00", ZONE_MISSING, "2020-01-01 08:00"),
    ("20200101T110000+0200", ZONE_CONVERTED, "2020-01-01 09:00"),  # ISO 8601 basic format
    ("2020-01-01T12+02:00", ZONE_CONVERTED, "2020-01-01 10:00"),  # reduced precision
    ("2020-01-01T1300+02", ZONE_CONVERTED, "2020-01-01 11:00"),
    ("20200101T120000Z", ZONE_UTC, "2020-01-01 12:00"),
    ("2020-01-01 15:00:00 +2:00", ZONE_CONVERTED, "2020-01-01 13:00"),
    ("2020-01-02", ZONE_MISSING, "2020-01-02"),  # a date's "-02" is no offset
    (None, ZONE_UTC, None),
    ("garbage", ZONE_UTC, None),
]


def test_text_is_parsed_row_by_row_and_each_row_marked():
    parsed, zone = to_utc(pd.Series([t for t, _, _ in TEXT], dtype=object))
    assert zone.tolist() == [z for _, z, _ in TEXT]
    expected = [pd.Timestamp(e, tz="UTC") if e else pd.NaT for _, _, e in TEXT]
    assert parsed.tolist() == expected


@pytest.mark.parametrize(
    ("ts", "mark"),
    [
        (pd.date_range("2020-01-01", periods=3, freq="h", tz="UTC"), ZONE_UTC),
        (pd.date_range("2020-01-01", periods=3, freq="h", tz="Europe/Berlin"), ZONE_CONVERTED),
        (pd.date_range("2020-01-01", periods=3, freq="h"), ZONE_MISSING),
    ],
    ids=["utc", "other-zone", "naive"],
)
def test_typed_columns_are_marked_as_a_whole(ts, mark):
    parsed, zone = to_utc(pd.Series(ts))
    assert zone.tolist() == [mark] * 3
    assert parsed.tolist() == list(ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC"))


def test_naive_rows_are_a_repair_only_among_zoned_ones():
    assert zone_repairs(np.array([ZONE_MISSING] * 4)) == 0
    assert zone_repairs(np.array([ZONE_MISSING, ZONE_MISSING, ZONE_UTC])) == 2
    assert zone_repairs(np.array([ZONE_MISSING, ZONE_CONVERTED, ZONE_CONVERTED, ZONE_UTC])) == 3
    assert zone_repairs(np.array([ZONE_UTC, ZONE_UTC])) == 0
    assert zone_repairs(np.array([], dtype=np.int8)) == 0


def test_text_that_is_no_number_becomes_missing_and_is_marked():
    values, bad = to_float(pd.Series(["1.5", "n/a", None, "3", "-", 4.0], dtype=object))
    assert np.isnan(values[[1, 2, 4]]).all() and values[[0, 3, 5]].tolist() == [1.5, 3.0, 4.0]
    assert bad.tolist() == [False, True, False, False, True, False]
