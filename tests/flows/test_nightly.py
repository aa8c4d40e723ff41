"""The whole flow through Prefect on a real SQLite database."""

import json
import sqlite3
import time

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import tomli_w
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.sorting import TaskRunSort

import tasks.publish
from flows.nightly import FALLBACK, GATE_FAILED, nightly_forecast
from lstm_model.checkpoint import load_checkpoint
from tasks.errors import DataError
from tasks.validate import GateFailed
from tests.helpers import (
    LEAKY_PRODUCTS,
    PROMO_REFUSED,
    sales_slice,
    seasonal_frame,
    sensor_config_dict,
    write_table,
)

STAGES = {
    "resolve_as_of", "extract", "clean", "guard_covariates", "plan_folds", "backtest_fold",
    "summarize_backtest", "gate", "plan_training", "train", "register", "forecast_group", "merge_forecasts",
    "publish", "score", "report",
}  # fmt: skip


@pytest.fixture
def config_path(sensor_db, tmp_path):
    path = tmp_path / "sensors.toml"
    path.write_bytes(tomli_w.dumps(sensor_config_dict(sensor_db, tmp_path / "work")).encode())
    return str(path)


def task_runs(
    flow_run_id, expect: tuple[str, ...] = (), settle_s: float = 20.0, quiet_s: float = 1.0
) -> dict[str, object]:
    """The flow run's task runs by task name. The server records task runs from events that it processes
    after the flow has returned, so this reads until the `expect`ed names are there, every state is final
    and nothing has changed for `quiet_s` (at most `settle_s`; 0 for a flow whose process was killed)."""

    def read(client) -> dict[str, object]:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
            limit=50,
        )
        return {run.task_key.split("-")[0]: run for run in runs}

    def seen(runs: dict[str, object]) -> dict[str, tuple]:
        return {k: (r.state_type, r.run_count) for k, r in runs.items()}

    deadline = time.monotonic() + settle_s
    with get_client(sync_client=True) as client:
        runs, since = read(client), time.monotonic()
        while time.monotonic() < deadline:
            settled = set(expect) <= set(runs) and all(r.state and r.state.is_final() for r in runs.values())
            if settled and time.monotonic() - since >= quiet_s:
                break
            time.sleep(0.25)
            again = read(client)
            if seen(again) != seen(runs):
                since = time.monotonic()
            runs = again
    return runs


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
    assert set(result["backtest"]) == {"lstm", "seasonal_naive", "naive", "recent_median", "seasonal_mean"}
    assert result["reproducible"] == "reproducible"
    assert all(m["mase"] > 0 and 0 <= m["coverage"] <= 1 for m in result["backtest"].values())
    assert result["interval"] == pytest.approx(0.8) and result["model_version"].startswith("lstm-")

    runs = task_runs(state.state_details.flow_run_id)
    assert STAGES <= set(runs)
    assert all(run.state.is_completed() for run in runs.values())

    engine = sa.create_engine(sensor_db)
    published = pd.read_sql("select * from forecasts", engine)
    engine.dispose()
    assert len(published) == 36 and published["yhat"].notna().all()
    assert (published["yhat_lower"] <= published["yhat"]).all()
    assert (published["yhat"] <= published["yhat_upper"]).all()
    assert published["ts"].nunique() == 12 and set(published["run_id"]) == {result["run_id"]}

    engine = sa.create_engine(sensor_db)
    quality = pd.read_sql("select * from lstmcast_quality", engine)
    counts = json.loads(pd.read_sql("select counts from lstmcast_runs", engine)["counts"][0])
    engine.dispose()
    assert result["quality_rows"] == 3
    assert sorted(quality["series_id"]) == ["HUFL", "HULL", "OT"]
    assert set(quality["run_id"]) == {result["run_id"]}
    assert set(quality["status"]) == {"ok"} and (quality["raw_rows"] > 0).all()
    assert counts["quality"]["series"] == 3
    assert counts["quality"]["raw_rows"] == quality["raw_rows"].sum()

    again = nightly_forecast(config_path, "2016-07-15 00:00")
    assert again["rows_replaced"] == 36
    assert count_rows(sensor_db) == 36  # same as_of: replaced, never duplicated
    engine = sa.create_engine(sensor_db)
    quality = pd.read_sql("select * from lstmcast_quality", engine)
    engine.dispose()
    assert len(quality) == 3 and set(quality["run_id"]) == {again["run_id"]}  # the report is replaced too

    nightly_forecast(config_path, "2016-07-16 00:00")
    assert count_rows(sensor_db) == 72


def test_default_as_of_is_the_last_source_timestamp_and_names_the_run(config_path):
    state = nightly_forecast(config_path, return_state=True)
    assert state.result()["as_of"] == "2016-07-17T15:00:00+00:00"
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(state.state_details.flow_run_id).name == "nightly-2016-07-17"
    given = nightly_forecast(config_path, "2016-07-15 00:00", return_state=True)
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(given.state_details.flow_run_id).name == "nightly-2016-07-15"


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


@pytest.fixture
def seasonal_config(sqlite_url, tmp_path):
    """A config on series where the tiny LSTM cannot beat seasonal naive."""
    write_table(sqlite_url, "readings", seasonal_frame())

    def make(gate: str) -> str:
        path = tmp_path / f"seasonal-{gate}.toml"
        cfg = sensor_config_dict(sqlite_url, tmp_path / "work", forecast={"gate": gate})
        path.write_bytes(tomli_w.dumps(cfg).encode())
        return str(path)

    return make


def test_gate_publishes_seasonal_naive_when_the_lstm_loses(seasonal_config, sqlite_url):
    state = nightly_forecast(seasonal_config("fallback"), return_state=True)
    assert state.is_completed() and state.name == FALLBACK
    result = state.result()
    lstm, baseline = result["backtest"]["lstm"]["mase"], result["backtest"]["seasonal_naive"]["mase"]
    assert lstm > baseline
    assert result["model_version"] == "seasonal_naive"
    assert result["gate"] == (
        f"LSTM backtest MASE {lstm:.4f} does not beat the best baseline, seasonal_naive ({baseline:.4f}); "
        "publishing the seasonal_naive forecast"
    )
    runs = task_runs(state.state_details.flow_run_id)
    assert "train" not in runs and runs["gate"].state.is_completed()
    engine = sa.create_engine(sqlite_url)
    published = pd.read_sql("select * from forecasts", engine)
    metrics = pd.read_sql("select metrics from lstmcast_runs", engine)["metrics"].iloc[0]
    engine.dispose()
    assert len(published) == 3 * 12 and set(published["model_version"]) == {"seasonal_naive"}
    assert (published["yhat_lower"] <= published["yhat"]).all()
    assert "publishing the seasonal_naive forecast" in metrics


def test_gate_publishes_a_flat_recent_median_when_it_beats_the_lstm(sqlite_url, tmp_path):
    """Noise around a level with rare spikes: the median of the lookback is the best forecast there, the
    seasonal and naive ones repeat noise, and the tiny LSTM (a few steps from the naive start) is
    close to naive. The run must publish the median, not an LSTM that merely beats seasonal naive."""
    rng = np.random.default_rng(3)
    ts = pd.date_range("2020-01-01", periods=400, freq="h", tz="UTC")
    frame = pd.concat(
        [pd.DataFrame({"series_id": f"s{i}", "ts": ts, "value": 20.0 + rng.exponential(4.0, 400)})
         for i in range(3)], ignore_index=True,
    )  # fmt: skip
    write_table(sqlite_url, "readings", frame)
    path = tmp_path / "noise.toml"
    path.write_bytes(tomli_w.dumps(sensor_config_dict(sqlite_url, tmp_path / "work",
                                                      forecast={"gate": "fallback"})).encode())  # fmt: skip
    state = nightly_forecast(str(path), return_state=True)
    result = state.result()
    backtest = {m: v["mase"] for m, v in result["backtest"].items()}
    assert min(backtest, key=backtest.get) == "recent_median" and backtest["lstm"] > backtest["recent_median"]
    assert state.name == FALLBACK and result["model_version"] == "recent_median"
    assert result["gate"].endswith("publishing the recent_median forecast")
    engine = sa.create_engine(sqlite_url)
    published = pd.read_sql("select * from forecasts", engine)
    engine.dispose()
    assert set(published["model_version"]) == {"recent_median"}
    for sid, part in published.groupby("series_id"):
        last_day = frame[frame["series_id"] == sid]["value"].to_numpy()[-24:]
        assert part["yhat"].to_numpy() == pytest.approx(np.full(12, np.median(last_day)))


def test_a_run_whose_fits_the_time_cap_stopped_says_it_is_not_reproducible(sensor_db, tmp_path):
    raw = sensor_config_dict(sensor_db, tmp_path / "work", training={"time_budget_s": 1e-6, "max_epochs": 50})
    path = tmp_path / "capped.toml"
    path.write_bytes(tomli_w.dumps(raw).encode())
    result = nightly_forecast(str(path), "2016-07-15 00:00")
    assert result["reproducible"] == (
        "stopped by time, not reproducible "
        "(backtest fold 1, backtest fold 2, training: training.time_budget_s)"
    )
    engine = sa.create_engine(sensor_db)
    metrics = json.loads(pd.read_sql("select metrics from lstmcast_runs", engine)["metrics"].iloc[0])
    stopped = pd.read_sql("select stopped_reason from lstmcast_models", engine)["stopped_reason"]
    engine.dispose()
    assert metrics["reproducible"] == result["reproducible"]
    assert stopped.tolist() == ["time_budget"]


def test_gate_set_to_fail_fails_the_run_and_publishes_nothing(seasonal_config, sqlite_url):
    state = nightly_forecast(seasonal_config("fail"), return_state=True)
    assert state.is_failed() and state.name == GATE_FAILED  # what an automation matches on
    assert state.message.endswith("forecast.gate = 'fail', so nothing is published")
    with pytest.raises(GateFailed, match="forecast.gate = 'fail', so nothing is published"):
        state.result()
    runs = task_runs(state.state_details.flow_run_id)
    assert runs["gate"].state.is_completed() and "train" not in runs and "publish" not in runs
    assert not sa.inspect(sa.create_engine(sqlite_url)).has_table("forecasts")


def test_a_leaking_future_covariate_fails_the_run_before_anything_is_fitted(sqlite_url, tmp_path):
    write_table(sqlite_url, "sales", sales_slice(products=LEAKY_PRODUCTS))
    raw = sensor_config_dict(
        sqlite_url, tmp_path / "work", name="sales",
        source={"table": "sales", "series_id": "product", "timestamp": "day", "target": "qty",
                "future_covariates": ["promo"]},
        data={"freq": "D", "season_length": 7, "max_gap": 7, "non_negative": True, "duplicates": "sum"},
        forecast={"horizon": 14, "lookback": 28},
    )  # fmt: skip
    path = tmp_path / "sales.toml"
    path.write_bytes(tomli_w.dumps(raw).encode())
    state = nightly_forecast(str(path), return_state=True)
    assert state.is_failed()
    with pytest.raises(DataError) as exc:
        state.result()
    assert str(exc.value) == PROMO_REFUSED
    runs = task_runs(state.state_details.flow_run_id, expect=("guard_covariates",))
    assert runs["guard_covariates"].state.is_failed()
    assert "plan_folds" not in runs and "train" not in runs and "publish" not in runs
    assert not sa.inspect(sa.create_engine(sqlite_url)).has_table("forecasts")


def test_holidays_and_events_reach_the_model_and_the_forecasts(sqlite_url, tmp_path):
    write_table(sqlite_url, "sales", sales_slice())
    events = {"date": ["2014-03-14", "2014-07-05", "2015-08-15"], "name": ["fair", "fair", "stocktaking"]}
    write_table(sqlite_url, "store_events", pd.DataFrame(events))
    raw = sensor_config_dict(
        sqlite_url, tmp_path / "work", name="sales",
        source={"table": "sales", "series_id": "product", "timestamp": "day", "target": "qty",
                "events_table": "store_events"},
        data={"freq": "D", "season_length": 7, "max_gap": 7, "non_negative": True, "holidays": "IT"},
        forecast={"horizon": 14, "lookback": 28},
    )  # fmt: skip
    path = tmp_path / "sales.toml"
    path.write_bytes(tomli_w.dumps(raw).encode())
    result = nightly_forecast(str(path), "2014-07-01")
    assert result["rows_published"] == 4 * 14

    (run_dir,) = {p.parent for p in (tmp_path / "work").rglob("events.parquet")}
    future = pd.read_parquet(run_dir / "future.parquet")
    assert len(future) == 4 * 14  # the horizon's rows, with the events known in advance
    fair_days = future.loc[future["event:fair"] == 1, "ts"].dt.strftime("%Y-%m-%d")
    assert set(fair_days) == {"2014-07-05"} and len(fair_days) == 4
    assert (future["event:stocktaking"] == 0).all()
    history = pd.read_parquet(run_dir / "history.parquet")
    assert set(history.loc[history["event:fair"] == 1, "ts"].dt.strftime("%Y-%m-%d")) == {"2014-03-14"}

    (checkpoint,) = (tmp_path / "work").rglob("lstm-*.pt")
    model = load_checkpoint(checkpoint)
    assert model.future_names == (
        "event:fair", "event:stocktaking", "day_of_week_sin", "day_of_week_cos", "day_of_year_sin",
        "day_of_year_cos", "holiday", "holiday_before", "holiday_after",
    )  # fmt: skip
    assert result["model_version"] == checkpoint.stem

    engine = sa.create_engine(sqlite_url)
    published = pd.read_sql("select * from forecasts", engine)
    engine.dispose()
    assert len(published) == 4 * 14 and published["yhat"].notna().all()
    assert published["ts"].min().startswith("2014-07-02")
