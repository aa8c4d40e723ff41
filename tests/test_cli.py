import sqlalchemy as sa
import tomli_w
from typer.testing import CliRunner

from lstmcast.cli import app
from lstmcast.demo import DEMO_RUNS, build_demo_db, demo_file
from tasks.config import load_config
from tests.helpers import sensor_config_dict

runner = CliRunner()


def test_help_documents_every_command():
    out = runner.invoke(app, ["--help"])
    assert out.exit_code == 0
    for command in ("run", "ingest", "backfill", "serve", "demo"):
        assert command in out.output
    run_help = runner.invoke(app, ["run", "--help"]).output
    assert "--config" in run_help and "--as-of" in run_help


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
    out = runner.invoke(app, ["run", "--config", str(tmp_path / "none.toml")])
    assert out.exit_code != 0


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
    assert "2016-06-30T00:00:00+00:00: ValueError: table 'readings' has no rows with 'ts' <=" in out.output
    assert "1 of 2 dates completed (1 failed), 36 rows published to 'forecasts'" in out.output


def test_backfill_command_rejects_a_reversed_range_before_running(sensor_db, tmp_path):
    path = tmp_path / "p.toml"
    path.write_bytes(tomli_w.dumps(sensor_config_dict(sensor_db, tmp_path / "work")).encode())
    args = ["backfill", "-c", str(path), "--start", "2016-07-16", "--end", "2016-07-14"]
    out = runner.invoke(app, args)
    assert out.exit_code == 2
    assert "start 2016-07-16T00:00:00+00:00 is after end 2016-07-14T00:00:00+00:00" in out.output
    assert not (tmp_path / "work").exists()
