import json
import uuid

import pandas as pd
import pytest
import sqlalchemy as sa

from tasks.publish import build_run_record, forecast_table, publish, write_forecasts


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


def record(cfg, as_of="2020-01-01T00:00:00+00:00", run_id=None, version="lstm-abc"):
    return build_run_record(
        cfg, run_id=run_id or uuid.uuid4().hex, as_of=as_of, started_at="2020-01-02T00:00:00+00:00",
        model_version=version, metrics={"lstm": {"mase": 0.9}}, timings={"train": 1.0}, counts={"series": 2},
    )  # fmt: skip


def read(url: str, table: str = "forecasts") -> pd.DataFrame:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        frame = pd.read_sql(sa.select(forecast_table(table, sa.MetaData())), conn)
    engine.dispose()
    return frame.sort_values(["as_of", "series_id", "ts"]).reset_index(drop=True)


def republish_replaces(url: str, cfg, table: str, runs: str) -> None:
    first = write_forecasts(url, table, runs, forecasts(), record(cfg))
    assert (first.rows, first.replaced) == (6, 0)
    again = write_forecasts(url, table, runs, forecasts(level=5.0), record(cfg, version="lstm-def"))
    assert (again.rows, again.replaced) == (6, 6)
    rows = read(url, table)
    assert len(rows) == 6
    assert rows["yhat"].min() == 5.0 and set(rows["model_version"]) == {"lstm-def"}
    assert (rows["yhat_lower"] == rows["yhat"] - 1.0).all()
    assert (rows["yhat_upper"] == rows["yhat"] + 1.0).all()
    other = write_forecasts(url, table, runs, forecasts(as_of="2020-01-02"), record(cfg, as_of="2020-01-02"))
    assert other.replaced == 0
    rows = read(url, table)
    assert len(rows) == 12 and rows["as_of"].nunique() == 2


def test_publish_creates_tables_and_replaces_the_same_as_of_on_sqlite(sensor_cfg, sqlite_url):
    cfg = sensor_cfg()
    republish_replaces(sqlite_url, cfg, "forecasts", "lstmcast_runs")
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        runs = conn.execute(sa.text("select pipeline, config, metrics from lstmcast_runs")).all()
    engine.dispose()
    assert len(runs) == 3 and runs[0][0] == "sensors"
    assert json.loads(runs[0][1])["forecast"]["horizon"] == 12
    assert json.loads(runs[0][2]) == {"lstm": {"mase": 0.9}}


@pytest.mark.postgres
def test_publish_on_postgres(pg_url, sensor_cfg):
    table, runs = f"fc_{uuid.uuid4().hex[:8]}", f"runs_{uuid.uuid4().hex[:8]}"
    try:
        republish_replaces(pg_url, sensor_cfg(), table, runs)
        engine = sa.create_engine(pg_url)
        with engine.connect() as conn:
            types = dict(conn.execute(sa.text(
                "select column_name, data_type from information_schema.columns where table_name = :t"
            ), {"t": table}).all())  # fmt: skip
        engine.dispose()
        assert types["as_of"] == "timestamp with time zone" and types["yhat"] == "double precision"
        assert types["series_id"] == "text"
    finally:
        engine = sa.create_engine(pg_url)
        with engine.begin() as conn:
            conn.execute(sa.text(f'drop table if exists "{table}", "{runs}"'))
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


def test_failed_publish_leaves_earlier_rows_untouched(sensor_cfg, sqlite_url):
    cfg = sensor_cfg()
    write_forecasts(sqlite_url, "forecasts", "lstmcast_runs", forecasts(), record(cfg))
    bad = forecasts(level=9.0)
    bad = pd.concat([bad, bad.iloc[[0]]])  # duplicate key: the insert fails after the delete ran
    with pytest.raises(sa.exc.IntegrityError):
        write_forecasts(sqlite_url, "forecasts", "lstmcast_runs", bad, record(cfg))
    rows = read(sqlite_url)
    assert len(rows) == 6 and rows["yhat"].max() < 9.0


def test_publish_task_refuses_nan(sensor_cfg, tmp_path):
    path = tmp_path / "fc.parquet"
    frame = forecasts()
    frame.iloc[2, 2] = float("nan")
    frame.to_parquet(path)
    with pytest.raises(ValueError, match=r"fc.parquet holds NaN forecasts; nothing was published"):
        publish.fn(sensor_cfg(), str(path), record(sensor_cfg()))
