import os
import re
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
import tomli_w
from prefect import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterStartTime,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.settings import PREFECT_API_URL
from typer.testing import CliRunner

from lstmcast.cli import DEBUG_ENV, app
from lstmcast.demo import DEMO_RUNS, build_demo_db, demo_file
from tasks.config import load_config
from tasks.errors import AsOfError
from tests.helpers import sensor_config_dict, sensor_slice, write_table

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
HINT = f"(run with --debug or {DEBUG_ENV}=1 for the traceback)"
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} \| ")  # how Prefect's console handler starts a record


@pytest.fixture(autouse=True)
def _no_debug_env(monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)


def write_config(tmp_path: Path, url: str, **overrides) -> Path:
    path = tmp_path / "p.toml"
    path.write_bytes(tomli_w.dumps(sensor_config_dict(url, tmp_path / "work", **overrides)).encode())
    return path


def lstmcast(*args: str, env: dict[str, str] | None = None, code: str | None = None) -> tuple[int, str]:
    """The exit code and the terminal output (stdout and stderr as they interleave) of `lstmcast ARGS` run
    as a user runs it, in its own process, reporting to this session's Prefect server. `code` runs first
    in that process, before the command (a bug put in place)."""
    script = (
        f"{code or ''}\nimport sys\nfrom lstmcast.cli import app\napp(sys.argv[1:], prog_name='lstmcast')"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    return out.returncode, out.stdout


def after_logs(output: str) -> list[str]:
    """The lines after Prefect's last log record: what the command says when it stops (a traceback logged
    with that record would be among them)."""
    lines = output.splitlines()
    last = max((i for i, line in enumerate(lines) if LOG_LINE.match(line)), default=-1)
    return lines[last + 1 :]


def assert_user_error(code: int, output: str, error: str) -> None:
    assert code == 2, output
    assert "Traceback" not in output, output
    assert after_logs(output) == [f"error: {error}", HINT], output


def run_logs_since(started: datetime) -> str:
    """Every log line the Prefect API holds for the flow runs started since `started`, once one says
    'Traceback' (logs are sent in batches, so they may arrive a moment after the process ended)."""
    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=started))
            )
            ids = LogFilterFlowRunId(any_=[r.id for r in runs])
            text = "\n".join(log.message for log in client.read_logs(log_filter=LogFilter(flow_run_id=ids)))
            if "Traceback" in text or time.monotonic() > deadline:
                return text
            time.sleep(0.5)


def test_help_documents_every_command():
    out = runner.invoke(app, ["--help"])
    assert out.exit_code == 0
    for command in ("run", "ingest", "backfill", "serve", "demo"):
        assert command in out.output
    run_help = runner.invoke(app, ["run", "--help"]).output
    assert "--config" in run_help and "--as-of" in run_help and "--debug" in run_help


def test_run_command_prints_backtest_summary(sensor_db, tmp_path):
    path = tmp_path / "p.toml"
    path.write_bytes(tomli_w.dumps(sensor_config_dict(sensor_db, tmp_path / "work")).encode())
    out = runner.invoke(app, ["run", "--config", str(path), "--as-of", "2016-07-15"])
    assert out.exit_code == 0, out.output
    for model in ("lstm", "seasonal_naive", "naive", "recent_median", "seasonal_mean"):
        assert model in out.output
    assert "reproducible: reproducible" in out.output
    assert "published 36 rows (3 series, 0 skipped)" in out.output


def test_run_command_rejects_missing_config(tmp_path):
    path = tmp_path / "none.toml"
    out = runner.invoke(app, ["run", "--config", str(path)], env={"COLUMNS": "500"})
    assert out.exit_code == 2
    assert f"Invalid value for '--config' / '-c': file '{path}' does not exist." in out.output


def test_run_with_an_unknown_config_key_says_which_and_nothing_more(sensor_db, tmp_path):
    path = write_config(tmp_path, sensor_db, data={"nope": 1})
    code, output = lstmcast("run", "-c", str(path))
    assert_user_error(code, output, f"stage 'config' failed: {path}: unknown key 'data.nope'")
    assert output.splitlines() == after_logs(output)  # stopped before any flow run


def test_run_on_an_empty_table_names_the_table_and_column_and_the_run_keeps_the_traceback(
    sensor_db, tmp_path
):
    write_table(sensor_db, "empty", sensor_slice().head(0))
    path = write_config(tmp_path, sensor_db, source={"table": "empty"})
    started = datetime.now(UTC)
    code, output = lstmcast("run", "-c", str(path))
    assert_user_error(
        code, output, "stage 'resolve_as_of' failed: table 'empty' has no rows with a value in column 'value'"
    )
    logs = run_logs_since(started)
    assert "Traceback (most recent call last)" in logs
    assert "tasks.errors.DataError: table 'empty' has no rows with a value in column 'value'" in logs


def test_run_where_every_series_is_shorter_than_lookback_plus_horizon_lists_them(sensor_db, tmp_path):
    write_table(sensor_db, "short", sensor_slice(hours=30))
    path = write_config(tmp_path, sensor_db, source={"table": "short"})
    code, output = lstmcast("run", "-c", str(path))
    reasons = "; ".join(f"{s}: 30 usable steps < lookback + horizon = 36" for s in ("HUFL", "HULL", "OT"))
    error = (
        f"stage 'clean' failed: no series is usable for forecasting after cleaning table 'short' ({reasons})"
    )
    assert_user_error(code, output, error)


def test_run_as_of_before_the_data_says_so(sensor_db, tmp_path):
    path = write_config(tmp_path, sensor_db)
    code, output = lstmcast("run", "-c", str(path), "--as-of", "2016-06-30")
    error = "stage 'extract' failed: table 'readings' has no rows with 'ts' <= 2016-06-30T00:00:00+00:00"
    assert_user_error(code, output, error)


def test_run_with_an_as_of_that_is_no_timestamp_says_what_one_looks_like(sensor_db, tmp_path):
    path = write_config(tmp_path, sensor_db)
    code, output = lstmcast("run", "-c", str(path), "--as-of", "yesterday")
    error = (
        "stage 'resolve_as_of' failed: as_of 'yesterday' is not a timestamp "
        "(expected e.g. 2018-06-26 or 2018-06-26T19:00)"
    )
    assert_user_error(code, output, error)
    assert output.splitlines() == after_logs(output)


def test_debug_shows_the_traceback_of_a_users_error(sensor_db, tmp_path):
    path = write_config(tmp_path, sensor_db)
    code, output = lstmcast("run", "-c", str(path), "--as-of", "2016-06-30", "--debug")
    assert code == 1, output
    assert "Traceback (most recent call last):" in output  # Prefect's log of the flow run
    assert "─ Traceback (most recent call last) ─" in output  # the command's own
    assert "error: stage" not in output

    bad = write_config(tmp_path, sensor_db, data={"nope": 1})
    code, output = lstmcast("run", "-c", str(bad), env={DEBUG_ENV: "1"})
    assert code == 1, output
    assert "Traceback (most recent call last)" in output
    assert "ConfigError:" in output and "'data.nope'" in output  # rich wraps the line at 80 columns


def test_a_bug_keeps_its_traceback(sensor_db, tmp_path):
    path = write_config(tmp_path, sensor_db)
    bug = textwrap.dedent("""
        import flows.nightly
        from prefect import task

        @task(name="extract")
        def extract(cfg, as_of):
            raise RuntimeError("a bug in the extract stage")

        flows.nightly.extract = extract
    """)
    code, output = lstmcast("run", "-c", str(path), "--as-of", "2016-07-15", code=bug)
    assert code == 1, output
    assert "Task run 'extract-" in output and "RuntimeError('a bug in the extract stage')" in output
    assert "Traceback (most recent call last):" in output  # Prefect's log of the flow run
    assert "─ Traceback (most recent call last) ─" in output
    assert "error: stage" not in output


def test_ingest_of_an_empty_table_says_so(sensor_db, tmp_path):
    write_table(sensor_db, "empty", sensor_slice().head(0))
    path = write_config(tmp_path, sensor_db, source={"table": "empty"})
    out = runner.invoke(app, ["ingest", "-c", str(path)])
    assert out.exit_code == 2, out.output
    error = "error: stage 'extract' failed: table 'empty' has no rows with a value in column 'value'"
    assert out.output.splitlines() == [error, HINT]


def test_ingest_debug_raises_the_error_itself(sensor_db, tmp_path):
    path = write_config(tmp_path, sensor_db)
    out = runner.invoke(app, ["ingest", "-c", str(path), "--as-of", "yesterday", "--debug"])
    assert out.exit_code == 1
    assert isinstance(out.exception, AsOfError)
    assert "error:" not in out.output


def test_demo_configs_are_valid_and_the_demo_database_holds_the_real_data(tmp_path):
    for name, _ in DEMO_RUNS:
        assert load_config(demo_file(name)).name in {"sensors", "sales"}
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    counts = build_demo_db(url)
    assert counts == {"sensor_readings": 7 * 17420, "pasta_sales": 118 * 1798}
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        series = conn.execute(sa.text("select count(distinct product) from pasta_sales")).scalar_one()
    engine.dispose()
    assert series == 118


def test_ingest_command_runs_only_the_extract_and_reports_throughput(sensor_db, tmp_path):
    path = tmp_path / "p.toml"
    path.write_bytes(tomli_w.dumps(sensor_config_dict(sensor_db, tmp_path / "work")).encode())
    first = runner.invoke(app, ["ingest", "--config", str(path), "--as-of", "2016-07-10"])
    assert first.exit_code == 0, first.output
    assert "ingested sensors as of 2016-07-10T00:00:00+00:00 (full): 651 rows (+0 future), 3 series; " in (
        first.output
    )
    assert (
        "read 651 rows in" in first.output and "rows/s); watermark 2016-07-10T00:00:00+00:00" in first.output
    )
    # as-of: the source's last timestamp; new rows plus the 2-day re-read window: (549 + 144) rows
    second = runner.invoke(app, ["ingest", "--config", str(path)])
    assert second.exit_code == 0, second.output
    assert "(incremental): 1,200 rows (+0 future), 3 series; read 693 rows in" in second.output
    assert "watermark 2016-07-17T15:00:00+00:00" in second.output
    assert not list((tmp_path / "work").rglob("history.parquet"))  # no clean, train or publish ran


def test_backfill_command_shows_every_date_and_fails_when_one_did(sensor_db, tmp_path):
    path = tmp_path / "p.toml"
    path.write_bytes(tomli_w.dumps(sensor_config_dict(sensor_db, tmp_path / "work")).encode())
    # 2016-06-30 is before the first reading, so that date fails; 2016-07-15 is forecast all the same.
    dates = ["--start", "2016-06-30", "--end", "2016-07-15", "--every", "15d"]
    out = runner.invoke(app, ["backfill", "--config", str(path), *dates, "--concurrency", "1"])
    assert out.exit_code == 1, out.output
    assert "2/2" in out.output  # the progress bar reached the end
    lines = out.output.splitlines()
    assert any("2016-06-30 00:00" in ln and "Failed" in ln and " 0 " in ln for ln in lines)
    assert any("2016-07-15 00:00" in ln and "Completed" in ln and " 36 " in ln for ln in lines)
    assert "2016-06-30T00:00:00+00:00: DataError: table 'readings' has no rows with 'ts' <=" in out.output
    assert "1 of 2 dates completed (1 failed), 36 rows published to 'forecasts'" in out.output


def test_backfill_command_rejects_a_reversed_range_before_running(sensor_db, tmp_path):
    path = tmp_path / "p.toml"
    path.write_bytes(tomli_w.dumps(sensor_config_dict(sensor_db, tmp_path / "work")).encode())
    args = ["backfill", "-c", str(path), "--start", "2016-07-16", "--end", "2016-07-14"]
    out = runner.invoke(app, args)
    assert out.exit_code == 2
    assert "start 2016-07-16T00:00:00+00:00 is after end 2016-07-14T00:00:00+00:00" in out.output
    assert not (tmp_path / "work").exists()


def test_backfill_with_a_config_error_stops_before_any_date(sensor_db, tmp_path):
    path = write_config(tmp_path, sensor_db, forecast={"horizon": 0})
    args = ["backfill", "-c", str(path), "--start", "2016-07-14", "--end", "2016-07-15"]
    out = runner.invoke(app, args)
    assert out.exit_code == 2, out.output
    assert out.output.splitlines()[0].startswith(f"error: stage 'config' failed: {path}: ")
    assert out.output.splitlines()[-1] == HINT
    assert not (tmp_path / "work").exists()
