import pandas as pd
import pytest

from tasks.extract import extract, extract_to_parquet, last_timestamp, parse_as_of, resolve_as_of
from tests.conftest import sensor_slice, write_table


def test_extract_keeps_only_rows_known_at_as_of(sensor_cfg):
    cfg = sensor_cfg()
    as_of = parse_as_of("2016-07-10 12:00")
    result = extract_to_parquet(cfg, as_of, chunk_rows=100)  # several chunks
    frame = pd.read_parquet(result.path)
    source = sensor_slice()
    expected = source[pd.to_datetime(source["ts"], utc=True) <= as_of]
    assert result.rows == len(frame) == len(expected)
    assert frame["ts"].max() == as_of
    assert result.series == 3 and result.future_rows == 0
    assert str(frame["ts"].dtype) == "datetime64[us, UTC]"
    merged = frame.merge(expected.assign(ts=pd.to_datetime(expected["ts"], utc=True)), on=["series_id", "ts"])
    assert (merged["value_x"] == merged["value_y"]).all()
    assert not list(frame.columns.difference(["series_id", "ts", "value"]))


def test_future_covariates_beyond_as_of_keep_no_target(sales_cfg):
    as_of = parse_as_of("2014-06-01")
    result = extract_to_parquet(sales_cfg, as_of)
    frame = pd.read_parquet(result.path)
    later = frame[frame["ts"] > as_of]
    assert result.future_rows == len(later) > 0
    assert later["qty"].isna().all() and later["promo"].notna().all()
    assert later["ts"].max() <= as_of + pd.Timedelta(days=14)


def test_default_as_of_is_last_timestamp_with_a_value(sensor_cfg, sensor_db):
    frame = sensor_slice()
    frame.loc[len(frame)] = {"series_id": "OT", "ts": "2030-01-01 00:00:00", "value": None}
    write_table(sensor_db, "readings", frame)
    cfg = sensor_cfg()
    assert last_timestamp(cfg.source.url, cfg.source) == pd.Timestamp("2016-07-17 15:00", tz="UTC")
    assert resolve_as_of.fn(cfg, None) == "2016-07-17T15:00:00+00:00"
    assert resolve_as_of.fn(cfg, "2016-07-02") == "2016-07-02T00:00:00+00:00"


def test_query_source(sensor_cfg):
    cfg = sensor_cfg(source={"table": None, "query": "select * from readings where series_id = 'OT'"})
    result = extract.fn(cfg, "2016-07-03T00:00:00+00:00")
    assert result.series == 1 and result.rows == 49


def test_missing_table(sensor_cfg):
    cfg = sensor_cfg(source={"table": "readngs"})
    with pytest.raises(LookupError, match=r"table 'readngs' does not exist in sqlite:///"):
        extract_to_parquet(cfg, parse_as_of("2016-07-03"))


def test_missing_column_names_table_column_and_role(sensor_cfg):
    cfg = sensor_cfg(source={"target": "valeu"})
    with pytest.raises(LookupError) as err:
        extract_to_parquet(cfg, parse_as_of("2016-07-03"))
    assert str(err.value) == (
        "table 'readings' has no column 'valeu' (configured as source.target); "
        "its columns are ['series_id', 'ts', 'value']"
    )


def test_missing_column_in_query(sensor_cfg):
    cfg = sensor_cfg(source={"table": None, "query": "select series_id, ts from readings"})
    with pytest.raises(
        LookupError, match=r"the source query returns no column 'value' \(configured as source.target\)"
    ):
        extract_to_parquet(cfg, parse_as_of("2016-07-03"))


def test_unparseable_timestamp_is_named(sensor_cfg, sensor_db):
    frame = sensor_slice()
    frame.loc[5, "ts"] = "yesterday-ish"
    write_table(sensor_db, "readings", frame)
    with pytest.raises(
        ValueError,
        match=r"table 'readings': column 'ts' has a value that is not a timestamp: 'yesterday-ish'",
    ):
        extract_to_parquet(sensor_cfg(), parse_as_of("2016-07-03"))


def test_text_in_value_column(sensor_cfg, sensor_db, tmp_path):
    frame = sensor_slice().astype({"value": object})
    frame.loc[3, "value"] = "n/a"
    write_table(sensor_db, "readings", frame)
    result = extract_to_parquet(sensor_cfg(), parse_as_of("2016-07-03"))
    assert result.non_numeric == {"value": 1}
    assert pd.read_parquet(result.path)["value"].isna().sum() == 1

    frame["value"] = "high"
    write_table(sensor_db, "readings", frame)
    with pytest.raises(
        TypeError, match=r"table 'readings': column 'value' holds no numeric values \(first value: 'high'\)"
    ):
        extract_to_parquet(sensor_cfg(), parse_as_of("2016-07-03"))
    # the failed extract left no temp file behind and kept the earlier good file
    out = next((tmp_path / "work").rglob("extract.parquet")).parent
    assert [p.name for p in out.iterdir()] == ["extract.parquet"]


def test_empty_source_up_to_as_of(sensor_cfg):
    with pytest.raises(
        ValueError, match=r"table 'readings' has no rows with 'ts' <= 2001-01-01T00:00:00\+00:00"
    ):
        extract_to_parquet(sensor_cfg(), parse_as_of("2001-01-01"))


def test_bad_as_of():
    with pytest.raises(ValueError, match="as_of 'soon' is not a timestamp"):
        parse_as_of("soon")
