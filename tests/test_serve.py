"""`lstmcast serve` in a child process against the session's Prefect server: deploy, trigger, inspect."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import tomli_w
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, FlowRunFilter, FlowRunFilterId, TaskRunFilter
from prefect.client.schemas.objects import Artifact, Deployment
from prefect.client.schemas.sorting import ArtifactSort
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from tests.helpers import sensor_config_dict

# Artifact keys every nightly run of pipeline "sensors" leaves; extend as the flow publishes more.
EXPECTED_ARTIFACTS = {
    f"sensors-{kind}"
    for kind in ("backtest", "backtest-folds", "quality", "accuracy-over-time", "summary", "forecast-plot")
}

STARTUP_LIMIT_S = 180  # generous: the child imports torch and the flows on a shared machine
RUN_LIMIT_S = 600


def api_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a child process that reports to this session's test server, not to a profile."""
    from prefect.settings import PREFECT_API_URL

    return {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **extra,
    }


def log_tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no output)"


@contextmanager
def serving(config: Path, log: Path, *args: str) -> Iterator[subprocess.Popen]:
    """`lstmcast serve --config CONFIG ARGS` with the repository's interpreter, stopped with Ctrl-C after."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lstmcast.cli", "serve", "--config", str(config), *args],
            cwd=config.parent,
            env=api_env(config.parent / "prefect-home", PREFECT_RUNNER_POLL_FREQUENCY="1"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError(f"lstmcast serve ignored Ctrl-C:\n{log_tail(log)}") from None


def wait_for_deployment(name: str, proc: subprocess.Popen, log: Path) -> Deployment:
    deadline = time.monotonic() + STARTUP_LIMIT_S
    with get_client(sync_client=True) as client:
        while True:
            try:
                return client.read_deployment_by_name(name)
            except ObjectNotFound:
                pass
            assert proc.poll() is None, f"lstmcast serve exited with {proc.returncode}:\n{log_tail(log)}"
            assert time.monotonic() < deadline, f"no {name!r} from lstmcast serve:\n{log_tail(log)}"
            time.sleep(0.5)


def flow_run_artifacts(flow_run_id) -> list[Artifact]:
    with get_client(sync_client=True) as client:
        # Every field given: FastAPI >= 0.151 rejects the nulls the client sends for omitted ones.
        return client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            artifact_filter=ArtifactFilter(),
            task_run_filter=TaskRunFilter(),
            sort=ArtifactSort.KEY_ASC,
            limit=200,
            offset=0,
        )


def test_served_nightly_deployment_runs_on_demand_and_leaves_its_artifacts(sensor_db, tmp_path):
    config = tmp_path / "sensors.toml"
    config.write_bytes(tomli_w.dumps(sensor_config_dict(sensor_db, tmp_path / "work")).encode())
    log = tmp_path / "serve.log"

    with serving(config, log, "--timezone", "Europe/Rome", "--cron", "15 1 * * *") as proc:
        nightly = wait_for_deployment("nightly-forecast/nightly-sensors", proc, log)
        backfill = wait_for_deployment("backfill/backfill-sensors", proc, log)
        (schedule,) = nightly.schedules
        assert (schedule.schedule.cron, schedule.schedule.timezone) == ("15 1 * * *", "Europe/Rome")
        assert nightly.parameters == {"config_path": str(config.resolve()), "as_of": None}
        assert backfill.schedules == []
        assert backfill.parameters["config_path"] == str(config.resolve())

        run = run_deployment(
            name="nightly-forecast/nightly-sensors",
            parameters={"as_of": "2016-07-15 00:00"},
            timeout=RUN_LIMIT_S,
            poll_interval=1,
        )
        assert run.state is not None and run.state.is_completed(), f"{run.state}:\n{log_tail(log)}"
        assert run.parameters["as_of"] == "2016-07-15 00:00"

        keys = {artifact.key for artifact in flow_run_artifacts(run.id)}
        assert EXPECTED_ARTIFACTS <= keys, f"artifacts of flow run {run.id}: {sorted(map(str, keys))}"

    assert proc.returncode == 0, log_tail(log)


def test_serve_refuses_an_unknown_time_zone_before_serving(tmp_path):
    from typer.testing import CliRunner

    from lstmcast.cli import app

    config = tmp_path / "sensors.toml"
    config.write_bytes(tomli_w.dumps(sensor_config_dict("sqlite://", tmp_path / "work")).encode())
    out = CliRunner().invoke(app, ["serve", "--config", str(config), "--timezone", "Mars/Olympus"])
    assert out.exit_code != 0
    assert "Mars/Olympus" in str(out.exception)
