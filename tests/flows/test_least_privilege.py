"""The flow run with the README's least-privilege roles: a read-only source role, an output-schema owner."""

import uuid

import pandas as pd
import pytest
import sqlalchemy as sa
import tomli_w
from sqlalchemy.engine import make_url

from flows.nightly import nightly_forecast
from tests.helpers import sensor_config_dict, sensor_slice, write_table

pytestmark = pytest.mark.postgres


@pytest.fixture
def roles(pg_url):
    """The README's SQL, with unique role and schema names; everything is dropped afterwards."""
    tag = uuid.uuid4().hex[:8]
    reader, writer, schema, table = f"reader_{tag}", f"writer_{tag}", f"lstmcast_{tag}", f"readings_{tag}"
    readings = sensor_slice()
    write_table(pg_url, table, readings.assign(ts=pd.to_datetime(readings["ts"], utc=True)))
    database = make_url(pg_url).database
    engine = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for sql in (
            f"CREATE ROLE {reader} LOGIN PASSWORD 'r'",
            f"GRANT CONNECT ON DATABASE {database} TO {reader}",
            f"GRANT USAGE ON SCHEMA public TO {reader}",
            f"GRANT SELECT ON public.{table} TO {reader}",
            f"CREATE ROLE {writer} LOGIN PASSWORD 'w'",
            f"GRANT CONNECT, TEMPORARY ON DATABASE {database} TO {writer}",
            f"CREATE SCHEMA {schema} AUTHORIZATION {writer}",
        ):
            conn.execute(sa.text(sql))
    url = make_url(pg_url)
    yield {
        "reader": url.set(username=reader, password="r").render_as_string(hide_password=False),
        "writer": url.set(username=writer, password="w").render_as_string(hide_password=False),
        "schema": schema,
        "table": table,
    }
    with engine.connect() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        conn.execute(sa.text(f"DROP TABLE {table}"))
        for role in (reader, writer):
            conn.execute(sa.text(f"DROP OWNED BY {role}"))
            conn.execute(sa.text(f"DROP ROLE {role}"))
    engine.dispose()


def test_the_flow_runs_with_a_read_only_source_role_and_an_output_schema_owner(roles, tmp_path):
    schema = roles["schema"]
    cfg = sensor_config_dict(
        roles["reader"], tmp_path / "work", source={"table": roles["table"]},
        output={
            "url": roles["writer"], "table": f"{schema}.forecasts", "runs_table": f"{schema}.runs",
            "quality_table": f"{schema}.quality", "accuracy_table": f"{schema}.accuracy",
        },
        registry={"table": f"{schema}.models"},
    )  # fmt: skip
    path = tmp_path / "roles.toml"
    path.write_bytes(tomli_w.dumps(cfg).encode())
    result = nightly_forecast(str(path), "2016-07-15 00:00")
    assert result["rows_published"] == 3 * 12

    reader = sa.create_engine(roles["reader"])
    with reader.connect() as conn, pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
        conn.execute(sa.text(f"delete from {roles['table']}"))  # the source role cannot change the source
    reader.dispose()
    writer = sa.create_engine(roles["writer"])
    with writer.connect() as conn:
        assert conn.execute(sa.text(f"select count(*) from {schema}.forecasts")).scalar_one() == 3 * 12
    writer.dispose()
