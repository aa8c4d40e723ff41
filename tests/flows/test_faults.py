"""The nightly flow under real faults: the source server unreachable, the process killed mid-run."""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import prefect.settings
import pytest
import sqlalchemy as sa
import tomli_w

import flows.nightly
from flows.nightly import nightly_forecast
from tests.flows.test_nightly import task_runs
from tests.helpers import sensor_config_dict, sensor_slice, write_table

AS_OF = "2016-07-15 00:00"
ROOT = Path(__file__).resolve().parents[2]
ROWS = 3 * 12  # series x horizon


def write_config(path: Path, source_url: str, data_dir: Path, **overrides) -> str:
    path.write_bytes(tomli_w.dumps(sensor_config_dict(source_url, data_dir, **overrides)).encode())
    return str(path)


def read_forecasts(url: str, table: str = "forecasts") -> pd.DataFrame:
    engine = sa.create_engine(url)
    try:
        frame = pd.read_sql(
            f'select series_id, ts, yhat, yhat_lower, yhat_upper, model_version, run_id from "{table}"',
            engine,
        )
    finally:
        engine.dispose()
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame.sort_values(["series_id", "ts"]).reset_index(drop=True)


def free_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("as_of", [AS_OF, None], ids=["extract", "resolve_as_of"])
def test_unreachable_source_fails_after_every_retry_naming_the_database(tmp_path, monkeypatch, as_of):
    port = free_port()
    source = f"postgresql+psycopg://lstmcast:s3cret@127.0.0.1:{port}/sales"
    output = f"sqlite:///{tmp_path / 'out.db'}"
    config = write_config(tmp_path / "c.toml", source, tmp_path / "work", output={"url": output})
    for name in ("resolve_as_of", "extract"):  # the real retry policy, without its seconds of backoff
        monkeypatch.setattr(
            flows.nightly, name, getattr(flows.nightly, name).with_options(retry_delay_seconds=0)
        )

    state = nightly_forecast(config, as_of, return_state=True)

    assert state.is_failed()
    where = f"postgresql+psycopg://lstmcast:***@127.0.0.1:{port}/sales"
    assert f"SourceUnavailable: reading table 'readings' from {where} failed: " in state.message
    assert f"port {port} failed: Connection refused" in state.message
    assert "s3cret" not in state.message
    runs = task_runs(state.state_details.flow_run_id)
    failing = "extract" if as_of else "resolve_as_of"
    assert runs[failing].state.is_failed()
    assert runs[failing].run_count == 1 + flows.nightly.extract.retries == 4
    assert "publish" not in runs and "clean" not in runs
    assert not sa.inspect(sa.create_engine(output)).has_table("forecasts")


# ------------------------------------------------------------------------------ the process killed

# Runs the nightly flow in a process of its own. At the chosen point it writes its flow run id to the
# marker file and sleeps, to be killed there: after the first training epoch (before any checkpoint), or
# inside publish's transaction right after the forecasts were inserted (before the commit).
CHILD = """
import os, sys, time
from pathlib import Path

config, as_of, stage, marker = sys.argv[1:5]


def stop_here():
    from prefect.runtime import flow_run

    tmp = Path(marker + ".tmp")
    tmp.write_text(str(flow_run.id))
    os.replace(tmp, marker)
    time.sleep(600)


if stage == "train":
    import tasks.train

    real_fit = tasks.train.fit

    def fit(*args, on_epoch, **kwargs):
        def epoch(row):
            on_epoch(row)
            stop_here()

        return real_fit(*args, on_epoch=epoch, **kwargs)

    tasks.train.fit = fit
else:
    import tasks.publish.transaction

    real_upsert = tasks.publish.transaction.write_forecast_rows

    def upsert(*args, **kwargs):
        written = real_upsert(*args, **kwargs)
        stop_here()
        return written

    tasks.publish.transaction.write_forecast_rows = upsert

from flows.nightly import nightly_forecast

nightly_forecast(config, as_of)
"""


def child_env() -> dict[str, str]:
    """The session's Prefect server and result storage, so a re-run here finds what the child cached."""
    return {
        **os.environ,
        "PREFECT_API_URL": prefect.settings.PREFECT_API_URL.value(),
        "PREFECT_LOCAL_STORAGE_PATH": str(prefect.settings.PREFECT_LOCAL_STORAGE_PATH.value()),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PYTHONPATH": str(ROOT),
    }


def task_state(flow_run_id: str, stage: str) -> str | None:
    runs = task_runs(uuid.UUID(flow_run_id), settle_s=0)
    state = runs[stage].state if stage in runs else None
    return state.name if state is not None else None  # a task run the API has no state for yet


def kill_at(config: str, stage: str, tmp_path: Path, check=lambda flow_run_id: None) -> str:
    """Run the flow in a child process, SIGKILL it where CHILD stops for `stage`; the child's flow run id."""
    marker, log = tmp_path / f"at-{stage}", tmp_path / f"child-{stage}.log"
    with log.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, config, AS_OF, stage, str(marker)],
            cwd=ROOT, env=child_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert child.poll() is None, (
                f"the child ended before reaching {stage}:\n{log.read_text()[-3000:]}"
            )
            assert time.monotonic() < deadline, f"the child never reached {stage}"
            time.sleep(0.1)
        flow_run_id = marker.read_text()
        check(flow_run_id)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    return flow_run_id


def wait_for(condition, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> str:
    """The sensor readings in a SQLite file that every test here reads and none writes."""
    url = f"sqlite:///{tmp_path_factory.mktemp('source') / 'source.db'}"
    write_table(url, "readings", sensor_slice())
    return url


@pytest.fixture(scope="module")
def undisturbed(source, tmp_path_factory) -> pd.DataFrame:
    """The forecasts of a run nothing interrupted, in its own folder and database."""
    folder = tmp_path_factory.mktemp("undisturbed")
    output = f"sqlite:///{folder / 'out.db'}"
    config = write_config(folder / "c.toml", source, folder / "work", output={"url": output})
    assert nightly_forecast(config, AS_OF, return_state=True).is_completed()
    return read_forecasts(output)


def same_forecasts(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Same rows and values, bit for bit: training on CPU with a fixed seed and one thread is deterministic.
    The model version is a digest of the checkpoint file, which also records each epoch's seconds."""
    columns = ["series_id", "ts", "yhat", "yhat_lower", "yhat_upper"]
    pd.testing.assert_frame_equal(got[columns], expected[columns], check_exact=True)
    assert got["model_version"].nunique() == 1 and got["model_version"][0].startswith("lstm-")


def test_killed_during_training_then_rerun_gives_the_undisturbed_forecasts(source, undisturbed, tmp_path):
    output = f"sqlite:///{tmp_path / 'out.db'}"
    config = write_config(tmp_path / "c.toml", source, tmp_path / "work", output={"url": output})

    def training_is_running(flow_run_id: str) -> None:
        wait_for(lambda: task_state(flow_run_id, "train") == "Running", "the train task run to be Running")

    killed = kill_at(config, "train", tmp_path, training_is_running)

    assert task_state(killed, "train") == "Running"  # it never reported an end: the process died in it
    assert "publish" not in task_runs(uuid.UUID(killed), settle_s=0)
    assert not sa.inspect(sa.create_engine(output)).has_table("forecasts")
    models = tmp_path / "work" / "sensors" / "models"
    assert not models.exists() or not list(models.iterdir())  # no checkpoint, not even a partial one

    state = nightly_forecast(config, AS_OF, return_state=True)
    assert state.is_completed()
    runs = task_runs(state.state_details.flow_run_id)
    assert runs["clean"].state.name == "Cached" and runs["train"].state.name == "Completed"
    got = read_forecasts(output)
    assert len(got) == ROWS and set(got["run_id"]) == {str(state.state_details.flow_run_id)}
    same_forecasts(got, undisturbed)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def output(request, tmp_path):
    """The output section of a run with fresh tables: a new SQLite file, or uniquely named tables in the
    PostgreSQL test server (dropped afterwards)."""
    if request.param == "sqlite":
        yield {"url": f"sqlite:///{tmp_path / 'out.db'}", "table": "forecasts", "runs_table": "lstmcast_runs"}
        return
    url, suffix = request.getfixturevalue("pg_url"), uuid.uuid4().hex[:8]
    names = {
        "table": f"fc_{suffix}", "runs_table": f"runs_{suffix}", "quality_table": f"quality_{suffix}",
        "accuracy_table": f"accuracy_{suffix}", "registry": f"models_{suffix}",
    }  # fmt: skip
    yield {"url": url, **names}
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for name in names.values():
            conn.execute(sa.text(f'drop table if exists "{name}"'))
    engine.dispose()


def test_killed_inside_the_publish_transaction_then_rerun_gives_the_undisturbed_forecasts(
    source, undisturbed, output, tmp_path
):
    url, table = output["url"], output["table"]
    sections = {"output": {k: v for k, v in output.items() if k != "registry"}}
    if "registry" in output:
        sections["registry"] = {"table": output["registry"]}
    config = write_config(tmp_path / "c.toml", source, tmp_path / "work", **sections)
    engine = sa.create_engine(url)
    postgres = engine.dialect.name == "postgresql"
    publisher = sa.text(  # its last statement wrote the forecast table or a partition being loaded
        "select pid from pg_stat_activity where state = 'idle in transaction' "
        "and (query like :table or query like 'ALTER TABLE lstmcast_new_%')"
    ).bindparams(table=f"%{table}%")
    journal = tmp_path / "out.db-journal"

    def publishing() -> bool:
        """The child's transaction is open, its insert done: a PostgreSQL session idle in it, or
        SQLite's rollback journal."""
        if not postgres:
            return journal.exists()
        with engine.connect() as conn:
            return bool(conn.execute(publisher).all())

    def transaction_is_open(flow_run_id: str) -> None:
        assert publishing()
        assert not sa.inspect(engine).has_table(table)  # others do not even see the new table

    try:
        kill_at(config, "publish", tmp_path, transaction_is_open)
        if postgres:
            wait_for(lambda: not publishing(), "the server to end the killed client's session")
        assert not sa.inspect(engine).has_table(table)  # nothing of it is visible, the table included

        state = nightly_forecast(config, AS_OF, return_state=True)
        assert state.is_completed()
        run_id = str(state.state_details.flow_run_id)
        runs = task_runs(state.state_details.flow_run_id)
        for stage in ("clean", "backtest_fold", "train", "forecast_group"):  # what the killed run finished
            assert runs[stage].state.name == "Cached", stage
        got = read_forecasts(url, table)
        assert len(got) == ROWS and set(got["run_id"]) == {run_id}
        same_forecasts(got, undisturbed)
        with engine.connect() as conn:
            recorded = conn.execute(sa.text(f'select run_id from "{output["runs_table"]}"')).scalars().all()
        assert recorded == [run_id]
        assert not journal.exists()  # SQLite: the killed writer's journal went with the next commit
    finally:
        engine.dispose()


RUN = """
import sys
from flows.nightly import nightly_forecast

state = nightly_forecast(sys.argv[1], sys.argv[2], return_state=True)
print("FINAL", state.type.value, state.message)
sys.exit(0 if state.is_completed() else 1)
"""


def test_two_runs_of_the_same_as_of_started_at_once_leave_one_consistent_set(source, output, tmp_path):
    """Two processes run the whole flow for the same as-of at the same moment, sharing the data folder
    and the output tables: both complete, and the as-of holds exactly one run's rows."""
    url, table = output["url"], output["table"]
    sections = {"output": {k: v for k, v in output.items() if k != "registry"}}
    if "registry" in output:
        sections["registry"] = {"table": output["registry"]}
    config = write_config(tmp_path / "c.toml", source, tmp_path / "work", **sections)
    logs = [tmp_path / f"run-{i}.log" for i in range(2)]
    children = []
    for log in logs:
        with log.open("wb") as out:
            children.append(
                subprocess.Popen(
                    [sys.executable, "-c", RUN, config, AS_OF],
                    cwd=ROOT,
                    env=child_env(),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )  # fmt: skip
            )
    codes = [child.wait(timeout=600) for child in children]
    assert codes == [0, 0], "\n".join(log.read_text()[-3000:] for log in logs)
    got = read_forecasts(url, table)
    assert len(got) == ROWS and got["run_id"].nunique() == 1
    assert not got.duplicated(["series_id", "ts"]).any()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        recorded = conn.execute(sa.text(f'select run_id from "{output["runs_table"]}"')).scalars().all()
        registry = output.get("registry", "lstmcast_models")
        champions = conn.execute(
            sa.text(f"select count(*) from \"{registry}\" where status = 'champion'")
        ).scalar_one()
    engine.dispose()
    assert len(recorded) == 2 and got["run_id"].iloc[0] in recorded  # the later publish's rows
    assert champions == 1
