import logging
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa

from tasks.clean import clean_frame
from tasks.config import parse_config
from tasks.db import safe_url
from tasks.extract import (
    SourceQueryError,
    extract,
    last_timestamp,
    read_watermark,
    resolve_as_of,
    run_extract,
)
from tasks.extract.store import _split_by_month
from tasks.extract.stream import _within
from tasks.parsing import MARK_COLUMNS, ZONE_COLUMN, ZONE_CONVERTED, ZONE_MISSING, ZONE_UTC, parse_as_of
from tests.helpers import sensor_config_dict, sensor_slice, write_table


def test_extract_keeps_only_rows_known_at_as_of(sensor_cfg):
    cfg = sensor_cfg()
    as_of = parse_as_of("2016-07-10 12:00")
    result = run_extract(cfg, as_of, chunk_rows=100)  # several chunks
    frame = pd.read_parquet(result.path)
    source = sensor_slice()
    expected = source[pd.to_datetime(source["ts"], utc=True) <= as_of]
    assert result.rows == len(frame) == len(expected)
    assert frame["ts"].max() == as_of
    assert result.series == 3 and result.future_rows == 0
    assert str(frame["ts"].dtype) == "datetime64[us, UTC]"
    merged = frame.merge(expected.assign(ts=pd.to_datetime(expected["ts"], utc=True)), on=["series_id", "ts"])
    assert (merged["value_x"] == merged["value_y"]).all()
    assert not list(frame.columns.difference(["series_id", "ts", "value", *MARK_COLUMNS]))


def test_future_covariates_beyond_as_of_keep_no_target(sales_cfg):
    as_of = parse_as_of("2014-06-01")
    result = run_extract(sales_cfg, as_of)
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
        run_extract(cfg, parse_as_of("2016-07-03"))


def test_missing_column_names_table_column_and_role(sensor_cfg):
    cfg = sensor_cfg(source={"target": "valeu"})
    with pytest.raises(LookupError) as err:
        run_extract(cfg, parse_as_of("2016-07-03"))
    assert str(err.value) == (
        "table 'readings' has no column 'valeu' (configured as source.target); "
        "its columns are ['series_id', 'ts', 'value']"
    )


def test_missing_column_in_query(sensor_cfg):
    cfg = sensor_cfg(source={"table": None, "query": "select series_id, ts from readings"})
    with pytest.raises(
        LookupError, match=r"the source query returns no column 'value' \(configured as source.target\)"
    ):
        run_extract(cfg, parse_as_of("2016-07-03"))


def test_unparseable_timestamp_is_named(sensor_cfg, sensor_db):
    frame = sensor_slice()
    frame.loc[5, "ts"] = "yesterday-ish"
    write_table(sensor_db, "readings", frame)
    with pytest.raises(
        ValueError,
        match=r"table 'readings': column 'ts' has a value that is not a timestamp: 'yesterday-ish'",
    ):
        run_extract(sensor_cfg(), parse_as_of("2016-07-03"))


def test_text_in_value_column(sensor_cfg, sensor_db, tmp_path):
    frame = sensor_slice().astype({"value": object})
    frame.loc[3, "value"] = "n/a"
    write_table(sensor_db, "readings", frame)
    result = run_extract(sensor_cfg(), parse_as_of("2016-07-03"))
    assert result.non_numeric == {"value": 1}
    assert pd.read_parquet(result.path)["value"].isna().sum() == 1

    frame["value"] = "high"
    write_table(sensor_db, "readings", frame)
    with pytest.raises(
        TypeError, match=r"table 'readings': column 'value' holds no numeric values \(first value: 'high'\)"
    ):
        run_extract(sensor_cfg(), parse_as_of("2016-07-03"))
    # the failed extract left no temp file behind and kept the earlier good file
    out = next((tmp_path / "work").rglob("extract.parquet")).parent
    assert [p.name for p in out.iterdir()] == ["extract.parquet"]


def test_empty_source_up_to_as_of(sensor_cfg):
    with pytest.raises(
        ValueError, match=r"table 'readings' has no rows with 'ts' <= 2001-01-01T00:00:00\+00:00"
    ):
        run_extract(sensor_cfg(), parse_as_of("2001-01-01"))


@pytest.mark.parametrize("order", ["by series", "by time", "shuffled"])
def test_rows_are_split_by_utc_month_keeping_their_order(order):
    """Long runs of one month (rows by series, or by time) and short ones (shuffled): each month's rows, in
    the order they came."""
    steps = pd.date_range("2019-12-30 22:00", periods=800, freq="h", tz="UTC")  # Dec 2019 to Feb 2020
    frame = pd.DataFrame(
        {"series_id": np.repeat(["a", "b"], len(steps)), "ts": np.tile(steps, 2), "value": np.arange(1600.0)}
    )
    if order == "by time":
        frame = frame.sort_values(["ts", "series_id"])
    elif order == "shuffled":
        frame = frame.sample(frac=1.0, random_state=0)
    parts = list(_split_by_month(pa.Table.from_pandas(frame, preserve_index=False)))
    assert [month for month, _ in parts] == ["2019-12", "2020-01", "2020-02"]
    for month, part in parts:
        expected = frame[frame["ts"].dt.strftime("%Y-%m") == month].reset_index(drop=True)
        pd.testing.assert_frame_equal(part.to_pandas(), expected)


def test_rows_outside_the_bounds_are_dropped_and_a_batch_inside_them_is_kept_as_it_is():
    ts = pd.date_range("2024-01-01", periods=4, freq="h", tz="UTC")
    table = pa.table({"ts": pa.array(ts, pa.timestamp("us", tz="UTC")), "value": [0.0, 1.0, 2.0, 3.0]})
    assert _within(table, ts[0] - pd.Timedelta(hours=1), ts[-1]) is table
    assert _within(table, None, ts[-1]) is table
    assert _within(table, ts[0], ts[2]).column("value").to_pylist() == [1.0, 2.0]  # lower < ts <= upper
    assert _within(table, None, ts[1]).column("value").to_pylist() == [0.0, 1.0]


def test_bad_as_of():
    with pytest.raises(ValueError, match="as_of 'soon' is not a timestamp"):
        parse_as_of("soon")


# ---------------------------------------------------------------- incremental extract, SQLite and PostgreSQL

START = pd.Timestamp("2024-01-30 00:00", tz="UTC")  # 100 hours cross into February: two month files


def hour(i: int) -> pd.Timestamp:
    return START + pd.Timedelta(hours=i)


def hourly(hours: range, series: tuple[str, ...] = ("s0", "s1", "s2")) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"series_id": s, "ts": hour(i), "value": float(100 * k + i)}
            for k, s in enumerate(series)
            for i in hours
        ]
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request, tmp_path):
    """A uniquely named readings table in SQLite or in the PostgreSQL test server, dropped afterwards."""
    url = (
        f"sqlite:///{tmp_path / 'src.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    )
    table = f"readings_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(url)

    def load(frame: pd.DataFrame, if_exists: str = "append") -> None:
        if request.param == "sqlite":  # SQLite keeps timestamps as text, the way pandas writes them
            frame = frame.assign(ts=frame["ts"].dt.tz_convert(None).astype(str))
        with engine.begin() as conn:
            frame.to_sql(table, conn, if_exists=if_exists, index=False)

    def execute(sql: str, **params) -> None:
        with engine.begin() as conn:
            conn.execute(sa.text(sql.format(table=table)), params)

    def cfg(tmp: Path = tmp_path / "work", **source) -> object:
        return parse_config(
            sensor_config_dict(url, tmp, source={"table": table, **source}, data={"freq": "h"})
        )

    yield SimpleNamespace(kind=request.param, url=url, table=table, load=load, execute=execute, cfg=cfg)
    with engine.begin() as conn:
        conn.execute(sa.text(f'drop table if exists "{table}"'))
    engine.dispose()


def read_sorted(path: str) -> pd.DataFrame:
    """The data columns of an extract, in key order (without the parsing marks)."""
    frame = pd.read_parquet(path).drop(columns=list(MARK_COLUMNS))
    return frame.sort_values(["series_id", "ts"]).reset_index(drop=True)


def ts_text(ts: pd.Timestamp, kind: str) -> object:
    return str(ts.tz_convert(None)) if kind == "sqlite" else ts.to_pydatetime()


def test_incremental_extract_reads_only_new_rows(db):
    db.load(hourly(range(60)), if_exists="replace")
    cfg = db.cfg(reread_window="2h")
    first = run_extract(cfg, hour(59))
    assert (first.mode, first.rows_read, first.rows) == ("full", 180, 180)
    assert first.watermark == hour(59).isoformat()

    db.load(hourly(range(60, 100)))
    second = run_extract(cfg, hour(99))
    # new rows (hours 60-99) plus the re-read window (hours 58-59), for 3 series
    assert (second.mode, second.rows_read, second.rows, second.series) == ("incremental", 3 * 42, 300, 3)
    assert second.watermark == hour(99).isoformat()
    assert sorted(p.name for p in Path(second.path).iterdir()) == ["2024-01.parquet", "2024-02.parquet"]
    pd.testing.assert_frame_equal(read_sorted(second.path), hourly(range(100)), check_dtype=False)
    assert read_watermark(cfg).watermark == hour(99)


def test_late_rows_inside_the_window_are_picked_up_and_older_ones_are_not_reread(db):
    frame = hourly(range(60))
    db.load(frame[~((frame["series_id"] == "s0") & (frame["ts"] == hour(56)))], if_exists="replace")
    cfg = db.cfg(reread_window="6h")
    run_extract(cfg, hour(59))

    db.load(hourly(range(56, 57), series=("s0",)))  # late row inside the window (hours 54-59)
    db.execute(
        "update {table} set value = -1 where series_id = 's1' and ts = :ts", ts=ts_text(hour(57), db.kind)
    )
    db.execute(
        "update {table} set value = -2 where series_id = 's1' and ts = :ts", ts=ts_text(hour(10), db.kind)
    )
    db.load(hourly(range(60, 62)))
    result = run_extract(cfg, hour(61))
    assert result.rows_read == 3 * 8  # hours 54-61
    out = read_sorted(result.path).set_index(["series_id", "ts"])["value"]
    assert out[("s0", hour(56))] == 56.0  # added
    assert out[("s1", hour(57))] == -1.0  # corrected
    assert out[("s1", hour(10))] == 110.0  # older than the window: not re-read
    assert len(out) == 3 * 62 and out.index.is_unique


def test_repeated_runs_never_duplicate_rows(db):
    db.load(hourly(range(40)), if_exists="replace")
    cfg = db.cfg(reread_window="1D")
    for as_of in (hour(30), hour(30), hour(39), hour(39)):
        result = run_extract(cfg, as_of)
    db.load(hourly(range(40, 50)))
    result = run_extract(cfg, hour(49))
    pd.testing.assert_frame_equal(read_sorted(result.path), hourly(range(50)), check_dtype=False)
    store = pd.read_parquet(Path(cfg.data.data_dir) / cfg.name / "store")
    assert len(store) == 150 and not store.duplicated(["series_id", "ts"]).any()


def test_backfill_before_the_watermark_reads_in_full_and_keeps_the_watermark(db):
    db.load(hourly(range(100)), if_exists="replace")
    cfg = db.cfg()
    run_extract(cfg, hour(99))
    backfill = run_extract(cfg, hour(30))
    assert (backfill.mode, backfill.rows_read, backfill.rows) == ("backfill", 3 * 31, 3 * 31)
    pd.testing.assert_frame_equal(read_sorted(backfill.path), hourly(range(31)), check_dtype=False)
    assert read_watermark(cfg).watermark == hour(99)
    again = run_extract(cfg, hour(99))
    assert again.mode == "incremental" and again.rows == 300


def test_not_incremental_reads_everything_every_time(db):
    db.load(hourly(range(50)), if_exists="replace")
    cfg = db.cfg(incremental=False)
    for _ in range(2):
        result = run_extract(cfg, hour(49), chunk_rows=1_000)
        assert (result.mode, result.rows_read, result.rows) == ("full", 150, 150)
    assert read_watermark(cfg) is None


def test_empty_source_is_named(db):
    db.load(hourly(range(1)).iloc[:0], if_exists="replace")
    with pytest.raises(ValueError) as err:
        run_extract(db.cfg(), hour(10))
    assert str(err.value) == f"table {db.table!r} has no rows with 'ts' <= {hour(10).isoformat()}"


def test_missing_table_and_column_are_named(db):
    db.load(hourly(range(3)), if_exists="replace")
    with pytest.raises(LookupError, match=rf"table 'nope_{db.table}' does not exist in {db.kind}"):
        run_extract(db.cfg(table=f"nope_{db.table}"), hour(10))
    with pytest.raises(LookupError) as err:
        run_extract(db.cfg(target="valeu"), hour(10))
    assert str(err.value) == (
        f"table {db.table!r} has no column 'valeu' (configured as source.target); "
        "its columns are ['series_id', 'ts', 'value']"
    )


def test_text_in_the_value_column_is_named(db):
    frame = hourly(range(5)).astype({"value": object})
    frame.loc[2, "value"] = "n/a"
    frame["value"] = frame["value"].astype(str)
    db.load(frame, if_exists="replace")
    result = run_extract(db.cfg(), hour(4))
    assert result.non_numeric == {"value": 1}
    frame["value"] = "high"
    db.load(frame, if_exists="replace")
    with pytest.raises(TypeError) as err:
        run_extract(db.cfg(incremental=False), hour(4))
    assert (
        str(err.value) == f"table {db.table!r}: column 'value' holds no numeric values (first value: 'high')"
    )


def test_failing_query_carries_the_database_message(db):
    db.load(hourly(range(5)), if_exists="replace")
    cfg = db.cfg(table=None, query=f"select series_id, ts, value from {db.table} where nosuch > 0")
    with pytest.raises(SourceQueryError) as err:
        run_extract(cfg, hour(4))
    database = safe_url(db.url)
    message = "no such column: nosuch" if db.kind == "sqlite" else 'column "nosuch" does not exist'
    assert str(err.value) == f"reading the source query from {database} failed: {message}"
    assert not list((Path(cfg.data.data_dir) / cfg.name).rglob("*.parquet"))


def test_unknown_database_dialect_is_named_when_the_config_loads(sensor_cfg):
    with pytest.raises(
        ValueError, match=r"'source.url': source.url: no SQLAlchemy dialect 'nosuchdb' is installed"
    ):
        sensor_cfg(source={"url": "nosuchdb://host/x"})


@pytest.mark.parametrize(
    ("ts_type", "value", "shown"),
    [("float8", "1.5", "DOUBLE PRECISION"), ("text", "'2024-01-01 00:00'", "TEXT")],
)
def test_postgres_wrong_column_type_is_named_before_anything_is_written(
    pg_url, tmp_path, ts_type, value, shown
):
    table = f"readings_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'create table "{table}" (series_id text, ts {ts_type}, value float8)'))
        conn.execute(sa.text(f"insert into \"{table}\" values ('a', {value}, 2.0)"))
    try:
        cfg = parse_config(sensor_config_dict(pg_url, tmp_path / "work", source={"table": table}))
        with pytest.raises(TypeError) as err:
            run_extract(cfg, parse_as_of("2024-01-01"))
        assert str(err.value) == (
            f"table {table!r}: column 'ts' has database type {shown}, not a timestamp (first value: {value})"
        )
        assert not list((tmp_path / "work").rglob("*.parquet"))
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'drop table "{table}"'))
        engine.dispose()


def test_postgres_query_source_streams_in_batches_and_checks_types(pg_url, tmp_path):
    """A query source through ADBC: several batches, text values parsed like SQLite's, a bad type named."""
    table = f"readings_{uuid.uuid4().hex[:12]}"
    write_table(pg_url, table, hourly(range(2000), series=tuple(f"s{i}" for i in range(20))))
    try:
        query = (
            f"select series_id, ts, value::text as value, ts as stamp from {table} where value::text like '%'"
        )
        cfg = parse_config(
            sensor_config_dict(pg_url, tmp_path / "work", source={"table": None, "query": query})
        )
        result = run_extract(cfg, hour(1999), chunk_rows=1_000)
        assert (result.rows_read, result.rows, result.series, result.non_numeric) == (40_000, 40_000, 20, {})
        wrong = {"table": None, "query": query, "target": "stamp"}
        bad = parse_config(sensor_config_dict(pg_url, tmp_path / "work2", source=wrong))
        with pytest.raises(TypeError) as err:
            run_extract(bad, hour(1999), chunk_rows=1_000)
        assert str(err.value) == (
            "the source query: column 'stamp' has database type timestamp[us, tz=UTC], not a number "
            "(first value: 2024-01-30T00:00:00+00:00)"
        )
    finally:
        with sa.create_engine(pg_url).begin() as conn:
            conn.execute(sa.text(f'drop table "{table}"'))


def test_postgres_future_covariates_and_timestamp_types(pg_url, tmp_path):
    """Naive timestamps are UTC; rows after as_of keep only their known-in-advance covariates."""
    table = f"sales_{uuid.uuid4().hex[:12]}"
    days = pd.date_range("2024-03-01", periods=30, freq="D")
    frame = pd.DataFrame({"product": "p", "day": days, "qty": range(30), "promo": 1.0})
    write_table(pg_url, table, frame)
    try:
        cfg = parse_config(sensor_config_dict(
            pg_url, tmp_path / "work",
            source={"table": table, "series_id": "product", "timestamp": "day", "target": "qty",
                    "future_covariates": ["promo"]},
            data={"freq": "D", "season_length": 7}, forecast={"horizon": 5},
        ))  # fmt: skip
        result = run_extract(cfg, parse_as_of("2024-03-20"))
        out = pd.read_parquet(result.path)
        assert (result.rows, result.future_rows) == (20, 5)
        later = out[out["ts"] > parse_as_of("2024-03-20")]
        assert later["qty"].isna().all() and (later["promo"] == 1.0).all()
        assert out["ts"].min() == pd.Timestamp("2024-03-01", tz="UTC")
    finally:
        with sa.create_engine(pg_url).begin() as conn:
            conn.execute(sa.text(f'drop table "{table}"'))


def test_a_failed_incremental_run_leaves_store_watermark_and_files_as_they_were(db, monkeypatch):
    db.load(hourly(range(60)), if_exists="replace")
    cfg = db.cfg()
    first = run_extract(cfg, hour(59))
    pipeline = Path(cfg.data.data_dir) / cfg.name
    before = {p: p.read_bytes() for p in pipeline.rglob("*") if p.is_file()}
    db.load(hourly(range(60, 70)))

    def crash(self, table):
        raise OSError("disk full")

    monkeypatch.setattr("tasks.extract.store.MonthFiles.write", crash)
    with pytest.raises(OSError, match="disk full"):
        run_extract(cfg, hour(69))
    assert {p: p.read_bytes() for p in pipeline.rglob("*") if p.is_file()} == before
    assert read_watermark(cfg).watermark == hour(59)
    pd.testing.assert_frame_equal(read_sorted(first.path), hourly(range(60)), check_dtype=False)


def test_postgres_without_the_adbc_driver_reads_through_sqlalchemy_with_the_same_rows(
    pg_url, tmp_path, monkeypatch
):
    """A core install (no postgres extra) still reads PostgreSQL, in SQLAlchemy chunks, to the same data."""
    import tasks.extract.stream

    table = f"readings_{uuid.uuid4().hex[:12]}"
    write_table(pg_url, table, hourly(range(300), series=("a", "b", "c")))
    try:
        cfg = parse_config(sensor_config_dict(pg_url, tmp_path / "adbc", source={"table": table}))
        with_adbc = pd.read_parquet(run_extract(cfg, hour(250), chunk_rows=1_000).path)
        assert tasks.extract.stream.use_adbc(pg_url)
        monkeypatch.setattr(tasks.extract.stream, "use_adbc", lambda url: False)
        cfg = parse_config(sensor_config_dict(pg_url, tmp_path / "plain", source={"table": table}))
        without = pd.read_parquet(run_extract(cfg, hour(250), chunk_rows=1_000).path)
        assert len(without) == 3 * 251
        key = ["series_id", "ts"]
        pd.testing.assert_frame_equal(
            with_adbc.sort_values(key).reset_index(drop=True), without.sort_values(key).reset_index(drop=True)
        )
    finally:
        with sa.create_engine(pg_url).begin() as conn:
            conn.execute(sa.text(f'drop table "{table}"'))


def test_text_repairs_made_while_reading_reach_the_quality_report_per_series(db):
    """Offsets converted and text that is no number, parsed by extract, are counted per series by clean
    exactly as if clean had parsed the raw rows itself; the marks survive the incremental store.
    PostgreSQL refuses a text timestamp column, so there the instants come typed and need no repair."""
    frame = pd.DataFrame(
        {
            "series_id": ["s0"] * 5 + ["s1"] * 3,
            "ts": [
                "2024-01-30 00:00:00+00:00", "2024-01-30T03:00:00+02:00", "2024-01-30 02:00:00",
                "2024-01-29T22:00:00-05:00", "2024-01-30 04:00:00Z",  # s0: 2 converted, 1 naive amid zones
                "2024-01-30 00:00:00", "2024-01-30 01:00:00", "2024-01-30 02:00:00",  # s1: all naive: UTC
            ],
            "value": ["1.5", "n/a", "3", "4", "5", "?", "7", "-"],
        }
    )  # fmt: skip
    if db.kind == "postgres":
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
    engine = sa.create_engine(db.url)
    with engine.begin() as conn:
        frame.to_sql(db.table, conn, index=False)
    engine.dispose()
    cfg = db.cfg(reread_window="1h")
    as_of = hour(4)
    run_extract(cfg, hour(1))  # the store first holds hours 0-1, then the rest is added
    result = run_extract(cfg, as_of)
    assert result.non_numeric == {"value": 2}  # read by this run; "?" at s1's hour 0 came with the first
    _, _, from_extract = clean_frame(pd.read_parquet(result.path), cfg, as_of)
    _, _, from_raw = clean_frame(frame, cfg, as_of)
    counts = ["series_id", "raw_rows", "tz_normalized", "non_numeric", "missing"]
    converted = 3 if db.kind == "sqlite" else 0
    assert from_extract[counts].to_dict("records") == [
        {"series_id": "s0", "raw_rows": 5, "tz_normalized": converted, "non_numeric": 1, "missing": 1},
        {"series_id": "s1", "raw_rows": 3, "tz_normalized": 0, "non_numeric": 2, "missing": 4},
    ]
    pd.testing.assert_frame_equal(from_extract, from_raw)


def test_a_sqlite_datetime_column_is_marked_row_by_row(tmp_path):
    """A column declared DATETIME comes back from SQLAlchemy as datetimes, aware where the text had an
    offset: each row keeps its own mark, as text would."""
    url = f"sqlite:///{tmp_path / 'src.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("create table readings (series_id text, ts datetime, value float)"))
        stamps = ["2024-01-30 00:00:00+00:00", "2024-01-30 03:00:00+02:00", "2024-01-30 02:00:00",
                  "2024-01-29 22:00:00-05:00"]  # fmt: skip
        conn.execute(sa.text("insert into readings values ('a', :ts, 1.0)"), [{"ts": t} for t in stamps])
    engine.dispose()
    cfg = parse_config(sensor_config_dict(url, tmp_path / "work", data={"freq": "h"}))
    result = run_extract(cfg, hour(3))
    marks = pd.read_parquet(result.path).sort_values("ts")[ZONE_COLUMN].tolist()
    assert marks == [ZONE_UTC, ZONE_CONVERTED, ZONE_MISSING, ZONE_CONVERTED]
    _, _, quality = clean_frame(pd.read_parquet(result.path), cfg, hour(3))
    assert quality.iloc[0].tz_normalized == 3


def test_postgres_timestamptz_read_through_sqlalchemy_in_another_session_zone_needs_no_repair(
    pg_url, tmp_path, monkeypatch
):
    """Without ADBC, psycopg shows timestamptz in the session's zone; extract reads in UTC, so an instant
    is never counted as converted, whatever zone the login or database defaults to."""
    import tasks.extract.stream

    table = f"readings_{uuid.uuid4().hex[:12]}"
    write_table(pg_url, table, hourly(range(24), series=("a",)))
    monkeypatch.setattr(tasks.extract.stream, "use_adbc", lambda url: False)
    berlin = f"{pg_url}?options=-c%20TimeZone%3DEurope%2FBerlin"
    try:
        cfg = parse_config(sensor_config_dict(berlin, tmp_path / "work", source={"table": table}))
        result = run_extract(cfg, hour(23))
        frame = pd.read_parquet(result.path)
        assert frame["ts"].tolist() == list(pd.date_range(hour(0), hour(23), freq="h"))
        assert set(frame[ZONE_COLUMN]) == {ZONE_UTC}
    finally:
        with sa.create_engine(pg_url).begin() as conn:
            conn.execute(sa.text(f'drop table "{table}"'))


@pytest.mark.postgres
def test_postgres_without_the_adbc_driver_is_read_through_sqlalchemy_and_says_so_once(
    pg_url, tmp_path, monkeypatch, caplog
):
    import tasks._log
    import tasks.extract.stream

    table = f"readings_{uuid.uuid4().hex[:12]}"
    write_table(pg_url, table, hourly(range(24), series=("a", "b")))
    monkeypatch.setattr(tasks.extract.stream, "use_adbc", lambda url: False)
    monkeypatch.setattr(tasks._log, "_warned", set())
    try:
        cfg = parse_config(sensor_config_dict(pg_url, tmp_path / "work", source={"table": table}))
        with caplog.at_level(logging.WARNING, logger="lstmcast"):
            first = run_extract(cfg, hour(12))
            second = run_extract(cfg, hour(23))
        assert (first.rows, second.rows) == (26, 48)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == [
            f"no ADBC PostgreSQL driver: reading table {table!r} through SQLAlchemy, which is slower; "
            "pip install 'lstmcast[postgres]'"
        ]
    finally:
        with sa.create_engine(pg_url).begin() as conn:
            conn.execute(sa.text(f'drop table "{table}"'))
