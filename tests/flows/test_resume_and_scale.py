"""Resuming a failed run from Prefect's cache, and the same flow on a Dask task runner."""

import pandas as pd
import pytest
import sqlalchemy as sa
import tomli_w

import tasks.publish
import tasks.train
from flows.nightly import nightly_flow, nightly_forecast
from tasks.config import load_config
from tests.flows.test_nightly import task_runs
from tests.helpers import sensor_config_dict

AS_OF = "2016-07-15 00:00"


def write_config(path, url, data_dir, **overrides) -> str:
    path.write_bytes(tomli_w.dumps(sensor_config_dict(url, data_dir, **overrides)).encode())
    return str(path)


def read_forecasts(url: str) -> pd.DataFrame:
    engine = sa.create_engine(url)
    frame = pd.read_sql("select series_id, ts, yhat, yhat_lower, yhat_upper from forecasts", engine)
    engine.dispose()
    return frame.sort_values(["series_id", "ts"]).reset_index(drop=True)


def test_rerun_after_a_failed_publish_skips_finished_stages_and_does_not_retrain(
    sensor_db, tmp_path, monkeypatch
):
    config = write_config(tmp_path / "sensors.toml", sensor_db, tmp_path / "work")
    fits = []
    real_fit = tasks.train.fit
    monkeypatch.setattr(tasks.train, "fit", lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    failed = []
    real_write = tasks.publish.write_forecasts

    def fail_once(*args, **kwargs):
        if not failed:
            failed.append(1)
            raise OSError(28, "No space left on device")  # not transient: no retry, the run fails
        return real_write(*args, **kwargs)

    monkeypatch.setattr(tasks.publish, "write_forecasts", fail_once)
    first = nightly_forecast(config, AS_OF, return_state=True)
    assert first.is_failed() and fits == [1]
    assert not sa.inspect(sa.create_engine(sensor_db)).has_table("forecasts")

    second = nightly_forecast(config, AS_OF, return_state=True)
    assert second.is_completed()
    assert fits == [1]  # the model trained by the failed run was taken from the cache
    runs = task_runs(second.state_details.flow_run_id)
    for stage in ("clean", "backtest_fold", "train", "forecast_group"):
        assert runs[stage].state.name == "Cached", stage
    assert runs["publish"].state.name == "Completed"
    result = second.result()
    assert result["rows_published"] == 3 * 12
    engine = sa.create_engine(sensor_db)
    versions = pd.read_sql("select version, status from lstmcast_models", engine)
    engine.dispose()
    assert versions.to_dict("records") == [{"version": result["model_version"], "status": "champion"}]


def test_a_new_config_or_new_data_is_not_taken_from_the_cache(sensor_db, tmp_path, monkeypatch):
    fits = []
    real_fit = tasks.train.fit
    monkeypatch.setattr(tasks.train, "fit", lambda *a, **k: fits.append(1) or real_fit(*a, **k))
    config = write_config(tmp_path / "a.toml", sensor_db, tmp_path / "work")
    nightly_forecast(config, AS_OF)
    changed = write_config(
        tmp_path / "a.toml", sensor_db, tmp_path / "work", training={"seed": 1}
    )  # same file and pipeline, another seed
    nightly_forecast(changed, AS_OF)
    assert len(fits) == 2
    nightly_forecast(changed, "2016-07-15 06:00")  # six more hours of data
    assert len(fits) == 3


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_dask_runner_gives_the_same_forecasts_as_the_default(sensor_db, tmp_path):
    default = write_config(
        tmp_path / "default.toml", sensor_db, tmp_path / "default", scale={"forecast_groups": 2}
    )
    dask_db = f"sqlite:///{tmp_path / 'dask.db'}"
    dask = write_config(
        tmp_path / "dask.toml", sensor_db, tmp_path / "dask",
        output={"url": dask_db}, scale={"runner": "dask", "dask_workers": 2, "forecast_groups": 2},
    )  # fmt: skip
    expected = nightly_flow(load_config(default))(default, AS_OF)
    assert type(nightly_flow(load_config(dask)).task_runner).__name__ == "DaskTaskRunner"
    # called as a deployment calls it, with the flow's default runner: the pipeline reruns on Dask
    state = nightly_forecast(dask, AS_OF, return_state=True)
    assert state.is_completed()
    got = state.result()
    assert got["backtest"] == expected["backtest"]
    pd.testing.assert_frame_equal(read_forecasts(dask_db), read_forecasts(sensor_db))
    assert got["run_id"] != str(state.state_details.flow_run_id)  # the pipeline ran in the subflow
    runs = task_runs(got["run_id"])
    assert runs["backtest_fold"].state.is_completed() and runs["forecast_group"].state.is_completed()
