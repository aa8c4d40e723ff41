import tomli_w
from typer.testing import CliRunner

from lstmcast.cli import app
from tests.helpers import sensor_config_dict


def test_x(sensor_db, tmp_path):
    path = tmp_path / "p.toml"
    path.write_bytes(tomli_w.dumps(sensor_config_dict(sensor_db, tmp_path / "work")).encode())
    dates = ["--start", "2016-06-30", "--end", "2016-07-15", "--every", "15d"]
    out = CliRunner().invoke(app, ["backfill", "--config", str(path), *dates, "--concurrency", "1"])
    open("/tmp/cli_scratch/bf_out.txt", "w").write(out.output)
    import traceback

    open("/tmp/cli_scratch/bf_exc.txt", "w").write(
        "".join(traceback.format_exception(out.exception)) if out.exception else "none"
    )
