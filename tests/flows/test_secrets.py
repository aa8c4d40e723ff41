"""A known database password never shows up in logs, artifacts, output tables, files or error messages."""

import os
import uuid
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import tomli_w
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.logging.handlers import APILogHandler
from sqlalchemy.engine import make_url

from flows.nightly import nightly_forecast
from tasks.config import ConfigError, load_config
from tests.helpers import sensor_config_dict, sensor_slice, write_table

PASSWORD = (
    "Known-Pa55-" + uuid.uuid4().hex[:8]
)  # PostgreSQL here trusts local connections: any password works
AS_OF = "2016-07-15 00:00"

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_with_password(pg_url):
    return make_url(pg_url).set(password=PASSWORD).render_as_string(hide_password=False)


@pytest.fixture
def tables(pg_url):
    suffix = uuid.uuid4().hex[:8]
    names = {k: f"{k}_{suffix}" for k in ("readings", "forecasts", "runs", "quality", "accuracy", "models")}
    readings = sensor_slice()
    write_table(pg_url, names["readings"], readings.assign(ts=pd.to_datetime(readings["ts"], utc=True)))
    yield names
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        for name in names.values():
            conn.execute(sa.text(f'drop table if exists "{name}"'))
    engine.dispose()


def write_config(tmp_path: Path, tables: dict[str, str], secret: str) -> str:
    cfg = sensor_config_dict(
        "postgresql+psycopg://placeholder@127.0.0.1:5432/test", tmp_path / "work",
        source={"table": tables["readings"]},
        output={
            "url": "sqlite:///unused.db", "url_secret": secret, "table": tables["forecasts"],
            "runs_table": tables["runs"], "quality_table": tables["quality"],
            "accuracy_table": tables["accuracy"],
        },
        registry={"table": tables["models"]},
    )  # fmt: skip
    path = tmp_path / "secret.toml"
    path.write_bytes(tomli_w.dumps(cfg).encode())
    return str(path)


def everything_written(flow_run_id, pg_url: str, tables: dict[str, str], folders: list[Path]) -> str:
    """Logs, artifacts and parameters of the run, every output table, every file the run left."""
    APILogHandler().flush()  # logs reach the API in batches: send what is queued
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        )
    text = [run.model_dump_json(), *(log.message for log in logs)]
    text += [f"{a.key} {a.description} {a.data}" for a in artifacts]
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        for name in tables.values():
            if name != tables["readings"] and inspector.has_table(name):
                text.append(pd.read_sql(sa.text(f'select * from "{name}"'), conn).to_csv())
    engine.dispose()
    assert len(logs) > 10 and len(artifacts) >= 5  # there was something to look in
    blobs = [p.read_bytes() for folder in folders for p in folder.rglob("*") if p.is_file()]
    return "\n".join(text) + "\n".join(b.decode("latin-1") for b in blobs)


def test_password_from_the_environment_and_a_secret_block_is_never_written(
    pg_url, pg_with_password, tables, tmp_path, monkeypatch, capfd
):
    block = f"lstmcast-out-{uuid.uuid4().hex[:8]}"
    Secret(value=pg_with_password).save(block)
    monkeypatch.setenv("LSTMCAST_SOURCE_URL", pg_with_password)
    config = write_config(tmp_path, tables, block)
    cfg = load_config(config)
    assert cfg.source.url == cfg.output.url == pg_with_password  # both really carry the password
    assert PASSWORD not in repr(cfg)

    state = nightly_forecast(config, AS_OF, return_state=True)
    assert state.is_completed(), state.message
    storage = Path(os.environ["PREFECT_LOCAL_STORAGE_PATH"])
    written = everything_written(
        state.state_details.flow_run_id, pg_url, tables, [tmp_path / "work", storage]
    )
    assert "placeholder" not in written and tables["forecasts"] in written  # the real run, read back
    assert PASSWORD not in written
    printed = capfd.readouterr()
    assert PASSWORD not in printed.out + printed.err


def test_password_is_not_in_error_messages(pg_with_password, tables, tmp_path, monkeypatch):
    wrong = make_url(pg_with_password).set(database="no_such_database").render_as_string(hide_password=False)
    monkeypatch.setenv("LSTMCAST_SOURCE_URL", wrong)
    monkeypatch.setenv("LSTMCAST_OUTPUT_URL", wrong)
    state = nightly_forecast(write_config(tmp_path, tables, "unused-block"), AS_OF, return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception) as failure:
        state.result()
    assert "no_such_database" in str(failure.value) and PASSWORD not in str(failure.value)
    assert PASSWORD not in state.message

    monkeypatch.setenv("LSTMCAST_SOURCE_URL", f"postgresql+psycopg://u:{PASSWORD}@host:notaport/db")
    with pytest.raises(ConfigError) as bad:
        load_config(write_config(tmp_path, tables, "unused-block"))
    assert "source.url" in str(bad.value) and PASSWORD not in str(bad.value)


def test_a_missing_secret_block_is_named(tables, tmp_path):
    with pytest.raises(ConfigError, match="output.url_secret: no Prefect Secret block named 'no-such-block'"):
        load_config(write_config(tmp_path, tables, "no-such-block"))
