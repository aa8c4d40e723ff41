"""Extract under a real fault: the server terminates the PostgreSQL connection while the COPY streams."""

import time
import uuid
from pathlib import Path

import adbc_driver_postgresql.dbapi as adbc
import pandas as pd
import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client

import tasks.extract.stream
from tasks.config import parse_config
from tasks.db import is_transient, libpq_uri, safe_url
from tasks.extract import extract, read_watermark
from tasks.parsing import MARK_COLUMNS
from tests.helpers import sensor_config_dict

pytestmark = pytest.mark.filterwarnings(
    "ignore:Logger 'prefect.task_runs' attempted to send logs:UserWarning"
)

SERIES = 50
HOURS = 12_000  # 600k rows of about 80 bytes: far more than the socket buffers hold, so the server
START = pd.Timestamp("2021-01-01", tz="UTC")  # is still sending when the consumer stops reading


def hour(i: int) -> pd.Timestamp:
    return START + pd.Timedelta(hours=i)


@pytest.fixture
def big_table(pg_url):
    """A uniquely named readings table of SERIES x HOURS rows, made by the server, dropped afterwards."""
    table = f"readings_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f'create table "{table}" as select '
                "'sensor-' || lpad((g % :series)::text, 3, '0') || repeat('x', 40) as series_id, "
                "timestamptz '2021-01-01 00:00+00' + (g / :series) * interval '1 hour' as ts, "
                "((g % :series) * 1e6 + (g / :series) + 0.25)::float8 as value "
                "from generate_series(0, :rows - 1) g"
            ),
            {"series": SERIES, "rows": SERIES * HOURS},
        )
    yield table
    with engine.begin() as conn:
        conn.execute(sa.text(f'drop table if exists "{table}"'))
    engine.dispose()


def source_rows(url: str, table: str, as_of: pd.Timestamp) -> pd.DataFrame:
    """The source table up to `as_of`, read in one piece on a fresh connection."""
    with adbc.connect(libpq_uri(url)) as conn, conn.cursor() as cur:
        cur.execute(f"select series_id, ts, value from \"{table}\" where ts <= '{as_of.isoformat()}'")
        frame = cur.fetch_arrow_table().to_pandas()
    frame["ts"] = frame["ts"].dt.tz_convert("UTC").astype("datetime64[us, UTC]")
    return frame.sort_values(["series_id", "ts"]).reset_index(drop=True)


class KillOnFirstBatch:
    """Wraps the batch conversion: on the first batch of the first read, the consumer stops until the
    extract's COPY backend is blocked writing to the client (so the server is mid-send), then terminates
    that backend from a second connection and lets the consumer go on."""

    def __init__(self, url: str, table: str) -> None:
        self.url, self.table = url, table
        self.real = tasks.extract.stream.batch_to_table
        self.calls = 0
        self.killed: list[int] = []

    def __call__(self, batch, src, stats):
        self.calls += 1
        if self.calls == 1:
            self.kill()
        return self.real(batch, src, stats)

    def kill(self, wait_s: float = 30.0) -> None:
        engine = sa.create_engine(self.url)
        blocked = sa.text(
            "select pid from pg_stat_activity where pid <> pg_backend_pid() and state = 'active' "
            "and wait_event = 'ClientWrite' and query like :pattern"
        ).bindparams(pattern=f"COPY %{self.table}%")
        deadline = time.monotonic() + wait_s
        try:
            with engine.connect() as conn:
                while time.monotonic() < deadline:
                    for pid in conn.execute(blocked).scalars():
                        if conn.execute(sa.text("select pg_terminate_backend(:pid)"), {"pid": pid}).scalar():
                            self.killed.append(pid)
                        return
                    time.sleep(0.05)
        finally:
            engine.dispose()


def run_count(state) -> int:
    with get_client(sync_client=True) as client:
        return client.read_task_run(state.state_details.task_run_id).run_count


@pytest.mark.postgres
@pytest.mark.parametrize("incremental", [True, False], ids=["store", "full"])
def test_connection_killed_mid_extract_is_retried_and_the_data_is_complete(
    pg_url, big_table, tmp_path, monkeypatch, caplog, incremental
):
    cfg = parse_config(
        sensor_config_dict(
            pg_url, tmp_path / "work",
            source={"table": big_table, "batch_rows": 1000, "incremental": incremental},
            data={"freq": "h"},
        )
    )  # fmt: skip
    first_as_of, as_of = hour(99), hour(HOURS - 1)
    if incremental:  # a store and watermark from an earlier night: the killed read is an update
        extract.fn(cfg, first_as_of.isoformat())
        assert read_watermark(cfg).watermark == first_as_of

    killer = KillOnFirstBatch(pg_url, big_table)
    monkeypatch.setattr(tasks.extract.stream, "batch_to_table", killer)
    state = extract(cfg, as_of.isoformat(), return_state=True)

    assert killer.killed, "the extract's COPY was never seen blocked on the client; nothing was killed"
    assert state.is_completed(), state.message
    assert run_count(state) == 2  # the killed attempt and one retry
    retried = [r.getMessage() for r in caplog.records if "Retry 1/3" in r.getMessage()]
    assert len(retried) == 1 and "SourceUnavailable" in retried[0]
    assert f"reading table '{big_table}' from {safe_url(pg_url)} failed" in retried[0]
    assert "server closed the connection unexpectedly" in retried[0]
    result = state.result()
    assert result.mode == ("incremental" if incremental else "full")
    got = pd.read_parquet(result.path).drop(columns=list(MARK_COLUMNS))
    got = got.sort_values(["series_id", "ts"]).reset_index(drop=True)
    expected = source_rows(pg_url, big_table, as_of)
    assert len(got) == result.rows == len(expected) == SERIES * HOURS
    assert not got.duplicated(["series_id", "ts"]).any()
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)

    leftovers = [p for p in Path(cfg.data.data_dir).rglob("*") if p.name.startswith(".")]
    assert [p.name for p in leftovers if p.name != ".cache-token"] == []  # no temp files or folders
    if incremental:
        assert read_watermark(cfg).watermark == as_of


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (OSError("[libpq] PQgetCopyData() failed: server closed the connection unexpectedly"), True),
        (OSError(28, "No space left on device"), False),
    ],
)
def test_a_connection_lost_mid_stream_is_transient_and_a_full_disk_is_not(exc, expected):
    """How the ADBC reader reports the fault above (a plain OSError), next to an OSError no retry fixes."""
    assert is_transient(exc) is expected
