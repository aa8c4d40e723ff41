import dataclasses
import hashlib
import json
import logging
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
import pytest
import sqlalchemy as sa

import tasks._log
import tasks.publish.copy
import tasks.publish.transaction
from tasks.db import is_transient
from tasks.publish import publish, write_forecasts
from tasks.publish.partitioned import partition_name
from tasks.schemas import forecast_table
from tasks.summary import build_run_record
from tests.helpers import OUTPUT_KINDS


def forecasts(series=("a", "b"), horizon=3, as_of="2020-01-01 00:00", level=1.0) -> pd.DataFrame:
    start = pd.Timestamp(as_of, tz="UTC")
    frame = pd.concat(
        pd.DataFrame(
            {
                "series_id": sid,
                "ts": pd.date_range(start + pd.Timedelta(hours=1), periods=horizon, freq="h"),
                "yhat": level + i + pd.RangeIndex(horizon) / 10,
            }
        )
        for i, sid in enumerate(series)
    )
    return frame.assign(yhat_lower=frame["yhat"] - 1.0, yhat_upper=frame["yhat"] + 1.0)


def quality(series=("a", "b", "c"), **extra: int) -> pd.DataFrame:
    """Shaped like clean's quality frame, plus any extra repair counts."""
    frame = pd.DataFrame(
        {
            "series_id": list(series),
            "status": ["ok"] * (len(series) - 1) + ["skipped"],
            "reason": [None] * (len(series) - 1) + ["shorter than lookback + horizon"],
            "raw_rows": [100 + i for i in range(len(series))],
            "duplicates": [i for i in range(len(series))],
            "imputed": [2] * len(series),
        }
    )
    return frame.assign(**{name: [value] * len(series) for name, value in extra.items()})


def record(cfg, as_of="2020-01-01T00:00:00+00:00", run_id=None, version="lstm-abc"):
    return build_run_record(
        cfg, run_id=run_id or uuid.uuid4().hex, as_of=as_of, started_at="2020-01-02T00:00:00+00:00",
        model_version=version, metrics={"lstm": {"mase": 0.9}}, timings={"train": 1.0}, counts={"series": 2},
    )  # fmt: skip


@dataclass
class Db:
    url: str
    table: str
    runs: str
    quality: str
    partitioned: bool = True  # on PostgreSQL: the forecast table gets a partition per (pipeline, as_of)

    @property
    def by_partition(self) -> bool:
        """A publish replaces its as-of's partition whole (every row rewritten)."""
        return self.partitioned and self.url.startswith("postgresql")

    def write(self, frame: pd.DataFrame, run, quality_frame: pd.DataFrame | None = None):
        return write_forecasts(
            self.url, self.table, self.runs, frame, run, quality=quality_frame, quality_name=self.quality,
            partitioned=self.partitioned,
        )  # fmt: skip

    def query(self, statement) -> pd.DataFrame:
        engine = sa.create_engine(self.url)
        with engine.connect() as conn:
            frame = pd.read_sql(statement, conn)
        engine.dispose()
        return frame

    def forecasts(self) -> pd.DataFrame:
        frame = self.query(sa.select(forecast_table(self.table, sa.MetaData())))
        return frame.sort_values(["as_of", "series_id", "ts"]).reset_index(drop=True)

    def quality_rows(self) -> pd.DataFrame:
        table = sa.Table(self.quality, sa.MetaData(), autoload_with=sa.create_engine(self.url))
        return self.query(sa.select(table)).sort_values(["as_of", "series_id"]).reset_index(drop=True)

    def runs_rows(self) -> pd.DataFrame:
        return self.query(sa.text(f'select * from "{self.runs}"'))


@pytest.fixture(params=OUTPUT_KINDS)
def db(request, sqlite_url):
    """SQLite; PostgreSQL with the partitioned forecast table lstmcast creates there; PostgreSQL with a
    plain one (`output.partitioned = false`)."""
    if request.param == "sqlite":
        yield Db(sqlite_url, "forecasts", "lstmcast_runs", "lstmcast_quality")
        return
    pg_url = request.getfixturevalue("pg_url")
    suffix = uuid.uuid4().hex[:8]
    names = Db(pg_url, f"fc_{suffix}", f"runs_{suffix}", f"quality_{suffix}", request.param == "postgres")
    try:
        yield names
    finally:
        engine = sa.create_engine(pg_url)
        with engine.begin() as conn:
            conn.execute(sa.text(f'drop table if exists "{names.table}", "{names.runs}", "{names.quality}"'))
        engine.dispose()


def test_publish_creates_tables_and_replaces_the_same_as_of(db, sensor_cfg):
    cfg = sensor_cfg()
    first = db.write(forecasts(), record(cfg))
    assert (first.rows, first.replaced) == (6, 0)
    again = db.write(forecasts(level=5.0), record(cfg, version="lstm-def"))
    assert (again.rows, again.replaced) == (6, 6)
    rows = db.forecasts()
    assert len(rows) == 6
    assert rows["yhat"].min() == 5.0 and set(rows["model_version"]) == {"lstm-def"}
    assert (rows["yhat_lower"] == rows["yhat"] - 1.0).all()
    assert (rows["yhat_upper"] == rows["yhat"] + 1.0).all()
    other = db.write(forecasts(as_of="2020-01-02"), record(cfg, as_of="2020-01-02"))
    assert other.replaced == 0
    rows = db.forecasts()
    assert len(rows) == 12 and rows["as_of"].nunique() == 2
    runs = db.runs_rows()
    assert len(runs) == 3 and set(runs["pipeline"]) == {"sensors"}
    assert json.loads(runs["config"][0])["forecast"]["horizon"] == 12
    assert json.loads(runs["metrics"][0]) == {"lstm": {"mase": 0.9}}


def test_republishing_the_same_run_gives_identical_rows(db, sensor_cfg):
    cfg = sensor_cfg()
    run, frame = record(cfg), forecasts(series=("a", "b", "c"), horizon=4)
    frame.iloc[1, frame.columns.get_loc("yhat_lower")] = float("nan")  # a missing bound stays NULL
    db.write(frame, run, quality())
    before, quality_before = db.forecasts(), db.quality_rows()
    again = db.write(frame, run, quality())
    after, quality_after = db.forecasts(), db.quality_rows()
    assert len(after) == 12 and after["yhat_lower"].isna().sum() == 1
    if db.by_partition:  # the partition is written anew: the same rows, stamped with the new write's time
        assert (again.rows, again.replaced, again.written) == (12, 12, 12)
        assert (after["created_at"] > before["created_at"]).all()
        pd.testing.assert_frame_equal(before.drop(columns="created_at"), after.drop(columns="created_at"))
    else:  # unchanged rows are not rewritten
        assert (again.rows, again.replaced, again.written) == (12, 12, 0)
        pd.testing.assert_frame_equal(before, after)
    pd.testing.assert_frame_equal(quality_before, quality_after)
    assert len(db.runs_rows()) == 1


def utc_instant(value) -> pd.Timestamp:
    """A timestamp read back: aware ones (PostgreSQL) converted to UTC, naive ones (SQLite) taken as UTC."""
    t = pd.Timestamp(value)
    return t.tz_convert("UTC") if t.tzinfo else t.tz_localize("UTC")


def test_values_round_trip_exactly(db, sensor_cfg):
    """Whatever the load path (COPY of Arrow batches on PostgreSQL, executemany elsewhere), a row reads
    back as it was given: text beyond ASCII, microsecond timestamps, every float, a missing bound as NULL."""
    stamps = pd.to_datetime(
        ["1999-12-31 23:59:59.999999", "2020-01-01 02:30:00.5", "2300-01-01 00:00:00.000001"], utc=True
    )  # the last is beyond what nanoseconds hold
    frame = pd.DataFrame(
        {
            "series_id": ["Zürich/ß-7", "магазин 1", "c"],
            "ts": stamps,
            "yhat": [1e-300, -123456.789012345, 0.0],
            "yhat_lower": [float("nan"), -1e308, 0.0],
            "yhat_upper": [2.5, float("inf"), 0.0],
        }
    )
    # a first publish, then every row replaced; the version's text is written into DDL on PostgreSQL
    for version in ("lstm-a", "lstm-b 100% o'clock :x \\"):
        db.write(frame, record(sensor_cfg(), version=version))
        rows = db.forecasts().sort_values("ts").reset_index(drop=True)
        assert rows["series_id"].tolist() == ["Zürich/ß-7", "магазин 1", "c"]
        assert [utc_instant(t) for t in rows["ts"]] == list(stamps)
        assert rows["yhat"].tolist() == [1e-300, -123456.789012345, 0.0]
        assert rows["yhat_lower"].isna().tolist() == [True, False, False] and rows["yhat_lower"][1] == -1e308
        assert rows["yhat_upper"].tolist() == [2.5, float("inf"), 0.0]
        assert set(rows["model_version"]) == {version}


def test_republish_rewrites_only_changed_rows(db, sensor_cfg):
    """A plain table keeps the rows a re-run left unchanged, with the run that wrote them; a partition
    is replaced whole, every row then the new run's."""
    cfg = sensor_cfg()
    first_run = record(cfg)
    db.write(forecasts(series=("a", "b")), first_run)
    frame = forecasts(series=("a", "b"))
    changed = frame["series_id"] == "b"
    frame.loc[changed, "yhat"] += 0.5
    frame.loc[changed & (frame["ts"] == frame["ts"].max()), "yhat_upper"] = float("nan")
    second_run = record(cfg)
    result = db.write(frame, second_run)
    assert (result.rows, result.replaced, result.written) == (6, 6, 6 if db.by_partition else 3)
    rows = db.forecasts()
    a, b = rows[rows["series_id"] == "a"], rows[rows["series_id"] == "b"]
    a_run = second_run if db.by_partition else first_run
    assert set(a["run_id"]) == {a_run.run_id} and set(b["run_id"]) == {second_run.run_id}
    assert a["yhat"].tolist() == frame.loc[~changed, "yhat"].tolist()
    assert b["yhat"].tolist() == frame.loc[changed, "yhat"].tolist()
    assert b["yhat_upper"].isna().sum() == 1
    # the same values under another model version are that version's rows
    relabelled = db.write(frame, record(cfg, version="lstm-def"))
    assert relabelled.written == 6 and set(db.forecasts()["model_version"]) == {"lstm-def"}


def test_rerun_with_a_series_fewer_leaves_exactly_the_new_set(db, sensor_cfg):
    cfg = sensor_cfg()
    db.write(forecasts(series=("a", "b", "c")), record(cfg))
    db.write(forecasts(series=("a", "b", "c"), as_of="2020-01-02"), record(cfg, as_of="2020-01-02"))
    result = db.write(forecasts(series=("a", "c"), level=7.0), record(cfg, version="lstm-def"))
    assert (result.rows, result.replaced) == (6, 9)
    rows = db.forecasts()
    first = rows[rows["as_of"] == rows["as_of"].min()]
    assert len(first) == 6 and set(first["series_id"]) == {"a", "c"}
    assert set(first["model_version"]) == {"lstm-def"} and first["yhat"].min() == 7.0
    assert len(rows) - len(first) == 9  # the other as-of is untouched


def test_quality_report_is_written_replaced_and_summarised(db, sensor_cfg):
    cfg = sensor_cfg()
    run = record(cfg)
    result = db.write(forecasts(), run, quality(outliers_clipped=1))
    assert result.quality_rows == 3
    rows = db.quality_rows()
    assert list(rows["series_id"]) == ["a", "b", "c"] and set(rows["run_id"]) == {run.run_id}
    assert set(rows["pipeline"]) == {"sensors"}
    assert list(rows["duplicates"]) == [0, 1, 2] and list(rows["outliers_clipped"]) == [1, 1, 1]
    assert list(rows["status"]) == ["ok", "ok", "skipped"]
    assert (
        rows["reason"].iloc[2] == "shorter than lookback + horizon" and rows["reason"].iloc[:2].isna().all()
    )
    counts = json.loads(db.runs_rows()["counts"][0])
    assert counts["series"] == 2  # the flow's own counts stay
    assert counts["quality"] == {
        "series": 3, "ok": 2, "skipped": 1,
        "raw_rows": 303, "duplicates": 3, "imputed": 6, "outliers_clipped": 3,
    }  # fmt: skip

    # a re-run of the date replaces the report; a repair count clean has started counting becomes a column
    rerun = record(cfg)
    db.write(forecasts(series=("a",)), rerun, quality(series=("a", "b"), outliers_clipped=0, tz_normalized=4))
    db.write(forecasts(as_of="2020-01-02"), record(cfg, as_of="2020-01-02"), quality(outliers_clipped=2))
    rows = db.quality_rows()
    first = rows[rows["as_of"] == rows["as_of"].min()]
    assert list(first["series_id"]) == ["a", "b"] and set(first["run_id"]) == {rerun.run_id}
    assert list(first["tz_normalized"]) == [4, 4]
    later = rows[rows["as_of"] == rows["as_of"].max()]
    assert len(later) == 3 and later["tz_normalized"].isna().all()  # not counted by that run


def test_existing_table_with_the_earlier_key_order_is_upserted(db, sensor_cfg):
    engine = sa.create_engine(db.url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            f'create table "{db.table}" (pipeline text, series_id text, as_of timestamp with time zone, '
            "ts timestamp with time zone, yhat double precision not null, yhat_lower double precision, "
            "yhat_upper double precision, model_version text not null, run_id text not null, "
            "created_at timestamp with time zone not null, primary key (pipeline, series_id, as_of, ts))"
        ))  # fmt: skip
    engine.dispose()
    cfg = sensor_cfg()
    db.write(forecasts(series=("a", "b")), record(cfg))
    result = db.write(forecasts(series=("b",), level=3.0), record(cfg))
    assert (result.rows, result.replaced) == (3, 6)
    rows = db.forecasts()
    assert set(rows["series_id"]) == {"b"} and rows["yhat"].min() == 3.0


def fail_after(monkeypatch, step: str) -> None:
    """`tasks.publish.transaction.<step>` does its work, then the connection is 'lost'."""
    real = getattr(tasks.publish.transaction, step)

    def then_fail(*args, **kwargs):
        real(*args, **kwargs)
        raise RuntimeError(f"connection lost after {step}")

    monkeypatch.setattr(tasks.publish.transaction, step, then_fail)


def test_failure_mid_publish_leaves_the_previous_rows_intact(db, sensor_cfg, monkeypatch):
    cfg = sensor_cfg()
    db.write(forecasts(series=("a", "b", "c")), record(cfg), quality())
    before, quality_before, runs_before = db.forecasts(), db.quality_rows(), db.runs_rows()
    fail_after(monkeypatch, "write_forecast_rows")
    with pytest.raises(RuntimeError, match="connection lost after write_forecast_rows"):
        db.write(forecasts(series=("a",), level=9.0), record(cfg, version="lstm-new"), quality(series=("a",)))
    pd.testing.assert_frame_equal(db.forecasts(), before)
    pd.testing.assert_frame_equal(db.quality_rows(), quality_before)
    pd.testing.assert_frame_equal(db.runs_rows(), runs_before)
    # the first publish of an as-of (plain insert from staging) rolls back the same way
    with pytest.raises(RuntimeError, match="connection lost after write_forecast_rows"):
        db.write(forecasts(as_of="2020-01-02"), record(cfg, as_of="2020-01-02"), quality())
    pd.testing.assert_frame_equal(db.forecasts(), before)
    pd.testing.assert_frame_equal(db.quality_rows(), quality_before)


@pytest.mark.postgres
def test_column_types_and_index_on_postgres(pg_url, sensor_cfg):
    suffix = uuid.uuid4().hex[:8]
    names = Db(pg_url, f"fc_{suffix}", f"runs_{suffix}", f"quality_{suffix}")
    engine = sa.create_engine(pg_url)
    try:
        names.write(forecasts(), record(sensor_cfg()), quality(outliers_clipped=1))
        with engine.connect() as conn:
            types = {
                (table, column): kind
                for table, column, kind in conn.execute(sa.text(
                    "select table_name, column_name, data_type from information_schema.columns "
                    "where table_name in (:f, :q)"
                ), {"f": names.table, "q": names.quality}).all()
            }  # fmt: skip
            key = sa.inspect(conn).get_pk_constraint(names.table)["constrained_columns"]
        assert types[names.table, "as_of"] == "timestamp with time zone"
        assert types[names.table, "yhat"] == "double precision"
        assert types[names.table, "series_id"] == "text"
        assert types[names.quality, "as_of"] == "timestamp with time zone"
        assert types[names.quality, "outliers_clipped"] == "bigint"
        assert types[names.quality, "reason"] == "text"
        assert key == ["as_of", "pipeline", "series_id", "ts"]
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'drop table if exists "{names.table}", "{names.runs}", "{names.quality}"'))
        engine.dispose()


def test_existing_table_without_required_columns(sensor_cfg, sqlite_url):
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("create table forecasts (series_id text, ts text, yhat real)"))
    engine.dispose()
    with pytest.raises(
        LookupError, match=r"output table 'forecasts' exists but lacks columns \['pipeline', 'as_of', "
    ):
        write_forecasts(sqlite_url, "forecasts", "lstmcast_runs", forecasts(), record(sensor_cfg()))


def test_existing_quality_table_without_required_columns(sensor_cfg, sqlite_url):
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("create table lstmcast_quality (series_id text, imputed integer)"))
    engine.dispose()
    with pytest.raises(
        LookupError,
        match=r"^output table 'lstmcast_quality' exists but lacks columns "
        r"\['pipeline', 'as_of', 'run_id', 'status', 'reason'\]$",
    ):
        write_forecasts(
            sqlite_url, "forecasts", "lstmcast_runs", forecasts(), record(sensor_cfg()), quality=quality()
        )
    assert not sa.inspect(sa.create_engine(sqlite_url)).has_table("forecasts")


def test_quality_count_column_that_is_no_identifier_is_refused(sensor_cfg, sqlite_url):
    bad = quality().assign(**{"bad name": 1})
    with pytest.raises(
        ValueError, match=r"^quality column 'bad name' cannot be a column of the quality table$"
    ):
        write_forecasts(
            sqlite_url, "forecasts", "lstmcast_runs", forecasts(), record(sensor_cfg()), quality=bad
        )


def test_quality_frame_without_series_id_is_refused(sensor_cfg, sqlite_url):
    bad = quality().drop(columns=["series_id", "reason"])
    with pytest.raises(
        ValueError,
        match=r"^the quality frame has no series_id column \(columns: \['status', 'raw_rows', 'duplicates', "
        r"'imputed'\]\)$",
    ):
        write_forecasts(
            sqlite_url, "forecasts", "lstmcast_runs", forecasts(), record(sensor_cfg()), quality=bad
        )


def test_repeated_keys_are_refused_before_anything_is_written(sensor_cfg, sqlite_url):
    cfg = sensor_cfg()
    write_forecasts(sqlite_url, "forecasts", "lstmcast_runs", forecasts(), record(cfg))
    bad = forecasts(level=9.0)
    bad = pd.concat([bad, bad.iloc[[0]]])
    with pytest.raises(
        ValueError,
        match=r"^1 forecasts repeat a \(series_id, ts\) key \(first: 'a' at 2020-01-01 01:00:00\+00:00\); "
        r"nothing was published$",
    ):
        write_forecasts(sqlite_url, "forecasts", "lstmcast_runs", bad, record(cfg))
    rows = Db(sqlite_url, "forecasts", "lstmcast_runs", "").forecasts()
    assert len(rows) == 6 and rows["yhat"].max() < 9.0


def test_nan_forecast_is_refused_before_anything_is_written(sensor_cfg, sqlite_url):
    frame = forecasts()
    frame.iloc[4, 2] = float("nan")
    with pytest.raises(
        ValueError, match=r"^1 forecasts have NaN yhat \(first: series 'b'\); nothing was published$"
    ):
        write_forecasts(sqlite_url, "forecasts", "lstmcast_runs", frame, record(sensor_cfg()))
    assert not sa.inspect(sa.create_engine(sqlite_url)).has_table("forecasts")


def test_unreachable_database_is_a_transient_error(sensor_cfg):
    with pytest.raises(sa.exc.OperationalError) as info:
        write_forecasts(
            "postgresql+psycopg://postgres@127.0.0.1:1/test", "forecasts", "lstmcast_runs", forecasts(),
            record(sensor_cfg()), quality=quality(),
        )  # fmt: skip
    assert is_transient(info.value)


def test_publish_task_refuses_nan(sensor_cfg, tmp_path):
    path = tmp_path / "fc.parquet"
    frame = forecasts()
    frame.iloc[2, 2] = float("nan")
    frame.to_parquet(path)
    with pytest.raises(
        ValueError, match=r"^1 forecasts have NaN yhat \(first: series 'a'\); nothing was published$"
    ):
        publish.fn(sensor_cfg(), str(path), record(sensor_cfg()))


def test_publish_task_writes_the_quality_parquet(sensor_cfg, sqlite_url, tmp_path):
    cfg = sensor_cfg(output={"quality_table": "dq"})
    forecasts().to_parquet(tmp_path / "fc.parquet")
    quality().to_parquet(tmp_path / "quality.parquet")
    result = publish.fn(cfg, str(tmp_path / "fc.parquet"), record(cfg), str(tmp_path / "quality.parquet"))
    assert (result.rows, result.quality_rows) == (6, 3)
    assert len(Db(sqlite_url, "forecasts", "lstmcast_runs", "dq").quality_rows()) == 3


def test_a_table_made_without_the_key_still_gets_every_missing_row(db, sensor_cfg):
    """A forecast table created by hand without the primary key may hold a key twice; a re-publish then
    cannot assume that as many unchanged rows as staged ones means nothing is missing."""
    cfg = sensor_cfg()
    table = forecast_table(db.table, sa.MetaData(), keyed=False)
    engine = sa.create_engine(db.url)
    table.create(engine)
    db.write(forecasts(series=("a", "b")), record(cfg))
    with engine.begin() as conn:  # a's rows twice: as many rows (9) as the next publish stages
        again = conn.execute(sa.select(table).where(table.c.series_id == "a")).mappings().all()
        conn.execute(sa.insert(table), [dict(row) for row in again])
    engine.dispose()
    result = db.write(forecasts(series=("a", "b", "c")), record(cfg))
    rows = db.forecasts()
    assert result.written == 3 and rows["series_id"].value_counts().to_dict() == {"a": 6, "b": 3, "c": 3}


def partitions(url: str, table: str) -> dict[str, tuple[str, int]]:
    """The forecast table's partitions: name -> (bound, rows)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("set time zone 'UTC'"))  # the bounds as text, in UTC
            found = conn.execute(
                sa.text(
                    "select c.relname, c.oid::regclass::text, pg_get_expr(c.relpartbound, c.oid) "
                    "from pg_inherits i join pg_class c on c.oid = i.inhrelid "
                    "where i.inhparent = to_regclass(:t)"
                ),
                {"t": table},
            ).all()
            return {
                name: (bound, conn.execute(sa.text(f"select count(*) from {qualified}")).scalar_one())
                for name, qualified, bound in found
            }
    finally:
        engine.dispose()


@pytest.fixture
def pg_db(pg_url):
    suffix = uuid.uuid4().hex[:8]
    names = Db(pg_url, f"fc_{suffix}", f"runs_{suffix}", f"quality_{suffix}")
    yield names
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'drop table if exists "{names.table}", "{names.runs}", "{names.quality}"'))
    engine.dispose()


@pytest.mark.postgres
def test_each_publish_is_a_partition_of_its_pipeline_and_as_of(pg_db, sensor_cfg):
    cfg = sensor_cfg()
    sales = dataclasses.replace(record(cfg), pipeline="Sales.EU-1")  # a name SQL must quote
    pg_db.write(forecasts(series=("a", "b", "c")), record(cfg))
    pg_db.write(forecasts(as_of="2020-01-02"), record(cfg, as_of="2020-01-02"))
    pg_db.write(forecasts(series=("x",)), sales)
    t = pg_db.table
    first, second = f"{t}_sensors_20200101_000000", f"{t}_sensors_20200102_000000"
    other = f"{t}_sales_eu_1_{hashlib.sha1(b'Sales.EU-1').hexdigest()[:6]}_20200101_000000"

    def bound(pipeline: str, day: str) -> str:
        start, end = f"'{day} 00:00:00+00'", f"'{day} 00:00:00.000001+00'"
        return f"FOR VALUES FROM ('{pipeline}', {start}) TO ('{pipeline}', {end})"

    assert partitions(pg_db.url, t) == {
        first: (bound("sensors", "2020-01-01"), 9),
        second: (bound("sensors", "2020-01-02"), 6),
        other: (bound("Sales.EU-1", "2020-01-01"), 3),
    }
    keys = pg_db.query(
        sa.text(
            "select c.relname as t, conname from pg_constraint join pg_class c on c.oid = conrelid "
            "where contype = 'p' "
            "and conrelid in (select inhrelid from pg_inherits where inhparent = to_regclass(:t))"
        ).bindparams(t=t)
    )
    names = dict(zip(keys["t"], keys["conname"], strict=True))
    assert names == {n: f"{n}_pkey" for n in (first, second, other)}

    # re-runs: each partition is replaced under its name, the others stay; the session's time zone and
    # date style do not change which partition a re-run finds
    elsewhere = dataclasses.replace(
        pg_db, url=pg_db.url + "?options=-c%20TimeZone%3DAsia%2FKolkata%20-c%20DateStyle%3DSQL%2CDMY"
    )
    result = elsewhere.write(forecasts(series=("a", "c"), level=7.0), record(cfg, version="lstm-def"))
    assert (result.rows, result.replaced, result.written) == (6, 9, 6)
    counts = {name: rows for name, (_, rows) in partitions(pg_db.url, t).items()}
    assert counts == {first: 6, second: 6, other: 3}
    pg_db.write(forecasts(series=("x", "y")), dataclasses.replace(record(cfg), pipeline="Sales.EU-1"))
    counts = {name: rows for name, (_, rows) in partitions(pg_db.url, t).items()}
    assert counts == {first: 6, second: 6, other: 6}
    rows = pg_db.forecasts()
    assert len(rows) == 18 and set(rows.loc[rows["pipeline"] == "Sales.EU-1", "series_id"]) == {"x", "y"}

    # a partition renamed since is found by its bounds, and replaced under lstmcast's name
    engine = sa.create_engine(pg_db.url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'alter table "{second}" rename to "{t}_kept_by_hand"'))
    engine.dispose()
    result = pg_db.write(forecasts(series=("b",), as_of="2020-01-02"), record(cfg, as_of="2020-01-02"))
    assert (result.replaced, result.written) == (6, 3)
    counts = {name: rows for name, (_, rows) in partitions(pg_db.url, t).items()}
    assert counts == {first: 6, second: 3, other: 6}
    mine = rows[(rows["pipeline"] == "sensors") & (rows["as_of"] == rows["as_of"].min())]
    assert set(mine["series_id"]) == {"a", "c"} and set(mine["model_version"]) == {"lstm-def"}


@pytest.mark.postgres
def test_a_table_with_the_name_of_a_partition_is_reported_and_nothing_is_written(pg_db, sensor_cfg):
    cfg = sensor_cfg()
    pg_db.write(forecasts(), record(cfg))
    squatter = f"{pg_db.table}_sensors_20200102_000000"
    engine = sa.create_engine(pg_db.url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'create table "{squatter}" (note text)'))
    try:
        with pytest.raises(
            LookupError,
            match=rf"^table '{squatter}' exists but is not the partition of '{pg_db.table}' for pipeline "
            r"'sensors', as-of 2020-01-02T00:00:00\+00:00, whose name it has: rename or drop it$",
        ):
            pg_db.write(forecasts(as_of="2020-01-02"), record(cfg, as_of="2020-01-02"), quality())
        assert len(pg_db.forecasts()) == 6 and len(pg_db.runs_rows()) == 1
        assert not sa.inspect(engine).has_table(pg_db.quality)
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'drop table "{squatter}"'))
        engine.dispose()


@pytest.mark.postgres
def test_a_table_partitioned_another_way_is_written_like_a_plain_one(pg_db, sensor_cfg):
    engine = sa.create_engine(pg_db.url)
    with engine.begin() as conn:  # made by its owner, partitioned by year
        ddl = str(sa.schema.CreateTable(forecast_table(pg_db.table, sa.MetaData())).compile(engine))
        conn.execute(sa.text(ddl.rstrip() + " PARTITION BY RANGE (as_of)"))
        conn.execute(sa.text(
            f'create table "{pg_db.table}_2020" partition of "{pg_db.table}" '
            "for values from ('2020-01-01Z') to ('2021-01-01Z')"
        ))  # fmt: skip
    engine.dispose()
    cfg = sensor_cfg()
    pg_db.write(forecasts(series=("a", "b")), record(cfg))
    result = pg_db.write(forecasts(series=("b",), level=3.0), record(cfg))
    assert (result.rows, result.replaced, result.written) == (3, 6, 3)
    assert set(pg_db.forecasts()["series_id"]) == {"b"}
    assert set(partitions(pg_db.url, pg_db.table)) == {f"{pg_db.table}_2020"}


def test_partition_names_fit_postgres_identifiers():
    as_of = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert partition_name("forecasts", "sales", as_of) == "forecasts_sales_20240102_030405"
    assert partition_name("f", "p", as_of.replace(microsecond=7)) == "f_p_20240102_030405_000007"
    long_table, long_pipeline = "t" * 63, "pipeline-" + "x" * 40
    named = {partition_name(long_table, p, as_of) for p in (long_pipeline, long_pipeline + "y")}
    assert len(named) == 2
    for name in named:
        assert len(name.encode()) <= 58 and name.startswith("t" * 20) and name.endswith("_20240102_030405")


@dataclass
class Hold:
    held: list[int]  # the backend pid of the publish held
    came: list[int]  # the same pid once `until` came true


def hold_the_first(monkeypatch, until) -> Hold:
    """The first publish to have its forecasts in stays inside its transaction until `until(its backend
    pid)` is true (or 30 s)."""
    real = tasks.publish.transaction.write_forecast_rows
    hold = Hold([], [])

    def hold_first(conn, *args, **kwargs):
        written = real(conn, *args, **kwargs)
        if not hold.held:
            hold.held.append(conn.execute(sa.select(sa.func.pg_backend_pid())).scalar_one())
            deadline = time.monotonic() + 30
            while not hold.came and time.monotonic() < deadline:
                if until(hold.held[0]):
                    hold.came.append(hold.held[0])
                time.sleep(0.02)
        return written

    monkeypatch.setattr(tasks.publish.transaction, "write_forecast_rows", hold_first)
    return hold


def another_waits_for(db: Db):
    """`until` for hold_the_first: another session is seen waiting for the held one."""
    waiting = "select count(*) as n from pg_stat_activity where :pid = any(pg_blocking_pids(pid))"
    return lambda pid: bool(db.query(sa.text(waiting).bindparams(pid=pid))["n"][0])


def in_threads(target, args: list) -> list[BaseException]:
    """`target(arg)` for every arg at once, each in its thread; the exceptions they raised."""
    errors: list[BaseException] = []

    def run(arg) -> None:
        try:
            target(arg)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(arg,)) for arg in args]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


@pytest.mark.postgres
def test_publishes_of_other_as_ofs_go_on_side_by_side(pg_db, sensor_cfg, monkeypatch):
    """Two re-runs, each dropping the partition it replaces, the second also adding a repair count column
    to the quality table: the second runs to its commit while the first is held with its partition loaded
    (neither locks the forecast table before its swap, so neither waits for the other's locks there)."""
    cfg = sensor_cfg()
    days = ("2020-01-01", "2020-01-02")
    for day in days:
        pg_db.write(forecasts(as_of=day), record(cfg, as_of=day), quality())
    finished: list[str] = []
    hold = hold_the_first(monkeypatch, until=lambda pid: bool(finished))
    errors: list[BaseException] = []

    def rerun(day: str) -> None:
        extra = {"outliers_clipped": 1} if day == days[1] else {}
        try:
            pg_db.write(
                forecasts(as_of=day, level=9.0), record(cfg, as_of=day, version="lstm-def"), quality(**extra)
            )
            finished.append(day)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    first = threading.Thread(target=rerun, args=(days[0],))
    first.start()
    deadline = time.monotonic() + 30
    while not hold.held and time.monotonic() < deadline:
        time.sleep(0.02)
    second = threading.Thread(target=rerun, args=(days[1],))
    second.start()
    for thread in (first, second):
        thread.join()
    assert errors == [] and hold.came == hold.held and finished == [days[1], days[0]]
    rows = pg_db.forecasts()
    assert len(rows) == 12 and set(rows["model_version"]) == {"lstm-def"} and rows["yhat"].min() == 9.0
    assert pg_db.quality_rows()["outliers_clipped"].notna().sum() == 3


@pytest.mark.postgres
@pytest.mark.parametrize("partitioned", [True, False], ids=["partitioned", "plain"])
def test_first_publishes_of_two_as_ofs_at_once_both_land(pg_db, sensor_cfg, monkeypatch, partitioned):
    """Neither table exists yet; the first publish is held inside its transaction, having created them,
    until the other is seen waiting: the other then finds the tables instead of creating them again."""
    pg_db.partitioned = partitioned
    cfg = sensor_cfg()
    hold = hold_the_first(monkeypatch, until=another_waits_for(pg_db))

    def publish_day(day: str) -> None:
        pg_db.write(forecasts(as_of=day), record(cfg, as_of=day), quality())

    assert in_threads(publish_day, ["2020-01-01", "2020-01-02"]) == [] and hold.came == hold.held
    assert len(pg_db.forecasts()) == 12 and len(pg_db.runs_rows()) == 2 and len(pg_db.quality_rows()) == 6


@pytest.mark.postgres
def test_partitions_live_in_the_forecast_table_s_schema(pg_url, sensor_cfg):
    schema = f"lstmcast_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"create schema {schema}"))
    db = Db(pg_url, f"{schema}.forecasts", f"{schema}.runs", f"{schema}.quality")
    try:
        cfg = sensor_cfg()
        db.write(forecasts(series=("a", "b")), record(cfg), quality())
        result = db.write(forecasts(series=("b",), level=3.0), record(cfg, version="lstm-def"), quality())
        assert (result.rows, result.replaced, result.written) == (3, 6, 3)
        rows = db.query(sa.text(f"select series_id, yhat, model_version from {schema}.forecasts"))
        assert set(rows["series_id"]) == {"b"} and set(rows["model_version"]) == {"lstm-def"}
        assert partitions(pg_url, f"{schema}.forecasts").keys() == {"forecasts_sensors_20200101_000000"}
        with engine.connect() as conn:
            where = conn.execute(sa.text(
                "select n.nspname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
                "where c.relname = 'forecasts_sensors_20200101_000000'"
            )).scalars().all()  # fmt: skip
        assert where == [schema]
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"drop schema {schema} cascade"))
        engine.dispose()


@pytest.mark.postgres
def test_a_failure_after_the_swap_leaves_the_previous_partition(pg_db, sensor_cfg, monkeypatch):
    cfg = sensor_cfg()
    pg_db.write(forecasts(series=("a", "b")), record(cfg), quality())
    before, parts = pg_db.forecasts(), partitions(pg_db.url, pg_db.table)
    fail_after(monkeypatch, "swap_partition")
    with pytest.raises(RuntimeError, match="connection lost after swap_partition"):
        pg_db.write(forecasts(series=("c",), level=9.0), record(cfg, version="lstm-new"), quality())
    pd.testing.assert_frame_equal(pg_db.forecasts(), before)
    assert partitions(pg_db.url, pg_db.table) == parts
    left = pg_db.query(sa.text("select count(*) as n from pg_class where relname like 'lstmcast_new_%'"))
    assert left["n"][0] == 0


@pytest.mark.postgres
def test_partitions_are_loaded_by_insert_without_copy(pg_db, sensor_cfg, monkeypatch, caplog):
    """Without the postgres extra's COPY encoder (pgpq), the partition's rows go in by executemany, and
    the run's log says so once."""
    monkeypatch.setitem(sys.modules, "pgpq", None)  # its import now fails, as without the extra
    monkeypatch.setattr(tasks._log, "_warned", set())
    cfg = sensor_cfg()
    with caplog.at_level(logging.WARNING, logger="lstmcast"):
        pg_db.write(forecasts(series=("a", "b")), record(cfg))
        result = pg_db.write(forecasts(series=("b",), level=3.0), record(cfg, version="lstm-def"))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "no binary COPY (import of pgpq halted; None in sys.modules): forecasts are written with "
        "executemany, which is slower; pip install 'lstmcast[postgres]'"
    ]
    assert (result.rows, result.replaced, result.written) == (3, 6, 3)
    rows = pg_db.forecasts()
    assert set(rows["series_id"]) == {"b"} and rows["yhat"].tolist() == [3.0, 3.1, 3.2]
    assert set(partitions(pg_db.url, pg_db.table)) == {f"{pg_db.table}_sensors_20200101_000000"}


def test_a_pipeline_name_sql_cannot_take_is_refused(sensor_cfg, sqlite_url):
    run = dataclasses.replace(record(sensor_cfg()), pipeline="sales'; drop table x")
    with pytest.raises(
        ValueError,
        match=r"^pipeline name \"sales'; drop table x\" must use letters, digits, '_', '-' or '\.'$",
    ):
        write_forecasts(sqlite_url, "forecasts", "lstmcast_runs", forecasts(), run)
    assert not sa.inspect(sa.create_engine(sqlite_url)).has_table("forecasts")
