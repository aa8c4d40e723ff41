"""The whole flow through Prefect on a real SQLite database."""

import sqlite3

import pandas as pd
import pytest
import sqlalchemy as sa
import tomli_w
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.sorting import TaskRunSort

import tasks.publish
from flows.nightly import nightly_forecast
from tests.conftest import sensor_config_dict

STAGES = {"resolve_as_of", "extract", "clean", "validate", "train", "forecast", "publish"}


@pytest.fixture
def config_path(sensor_db, tmp_path):
    path = tmp_path / "sensors.toml"
    path.write_bytes(tomli_w.dumps(sensor_config_dict(sensor_db, tmp_path / "work")).encode())
    return str(path)


def task_runs(flow_run_id) -> dict[str, object]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
            limit=50,
        )
    return {run.task_key.split("-")[0]: run for run in runs}


def count_rows(url: str, as_of: str | None = None) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        n = conn.execute(sa.text("select count(*) from forecasts")).scalar_one()
    engine.dispose()
    return n


def test_nightly_flow_end_to_end_and_rerun_is_idempotent(config_path, sensor_db):
    state = nightly_forecast(config_path, "2016-07-15 00:00", return_state=True)
    assert state.is_completed()
    result = state.result()
    assert result["series_forecast"] == 3 and result["rows_published"] == 3 * 12
    assert set(result["backtest"]) == {"lstm", "seasonal_naive", "naive"}
    assert all(m["mase"] > 0 for m in result["backtest"].values())

    runs = task_runs(state.state_details.flow_run_id)
    assert STAGES <= set(runs)
    assert all(run.state.is_completed() for run in runs.values())

    engine = sa.create_engine(sensor_db)
    published = pd.read_sql("select * from forecasts", engine)
    engine.dispose()
    assert len(published) == 36 and published["yhat"].notna().all()
    assert published["ts"].nunique() == 12 and set(published["run_id"]) == {result["run_id"]}

    again = nightly_forecast(config_path, "2016-07-15 00:00")
    assert again["rows_replaced"] == 36
    assert count_rows(sensor_db) == 36  # same as_of: replaced, never duplicated

    nightly_forecast(config_path, "2016-07-16 00:00")
    assert count_rows(sensor_db) == 72


def test_default_as_of_is_the_last_source_timestamp(config_path):
    result = nightly_forecast(config_path)
    assert result["as_of"] == "2016-07-17T15:00:00+00:00"


def test_transient_publish_failure_is_retried_and_the_flow_completes(config_path, sensor_db, monkeypatch):
    real = tasks.publish.write_forecasts
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise sa.exc.OperationalError(
                "INSERT INTO forecasts", {}, sqlite3.OperationalError("database is locked")
            )
        return real(*args, **kwargs)

    monkeypatch.setattr(tasks.publish, "write_forecasts", flaky)
    state = nightly_forecast(config_path, "2016-07-15 00:00", return_state=True)
    assert state.is_completed()
    assert len(calls) == 2
    assert task_runs(state.state_details.flow_run_id)["publish"].run_count == 2
    assert count_rows(sensor_db) == 36


def test_permanent_failure_is_not_retried_and_nothing_is_published(config_path, sensor_db, monkeypatch):
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise sa.exc.OperationalError(
            "INSERT INTO forecasts", {}, sqlite3.OperationalError("no such column: yhat")
        )

    monkeypatch.setattr(tasks.publish, "write_forecasts", broken)
    state = nightly_forecast(config_path, "2016-07-15 00:00", return_state=True)
    assert state.is_failed()
    assert len(calls) == 1
    assert "no such column: yhat" in state.message or "no such column" in str(
        state.result(raise_on_failure=False)
    )
    assert not sa.inspect(sa.create_engine(sensor_db)).has_table("forecasts")
