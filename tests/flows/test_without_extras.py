"""The SQLite pipeline in a process where the postgres extra's packages cannot be imported."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import sqlalchemy as sa
import tomli_w
from prefect.settings import PREFECT_API_URL

from tests.helpers import sensor_config_dict

# The packages the `postgres` extra installs; None in sys.modules makes their import raise ImportError.
POSTGRES_EXTRA = ("psycopg", "pgpq", "adbc_driver_manager", "adbc_driver_postgresql")


def test_the_nightly_flow_runs_on_sqlite_without_the_postgres_extra(sensor_db, tmp_path):
    config = tmp_path / "sensors.toml"
    config.write_bytes(tomli_w.dumps(sensor_config_dict(sensor_db, tmp_path / "work")).encode())
    script = textwrap.dedent(f"""
        import json, sys
        for name in {POSTGRES_EXTRA!r}:
            sys.modules[name] = None
        from flows.nightly import nightly_forecast
        state = nightly_forecast({str(config)!r}, return_state=True)
        print(json.dumps({{"state": state.name}}))
    """)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"state": "Completed"}
    with sa.create_engine(sensor_db).connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*), count(DISTINCT series_id) FROM forecasts")).one()
    assert tuple(rows) == (3 * 12, 3)  # series x horizon, every series
