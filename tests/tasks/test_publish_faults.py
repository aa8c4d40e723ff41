"""Publish under real faults: the connection terminated inside the open transaction, two publishes at once."""

import threading
import time
import uuid
from dataclasses import dataclass, field

import pandas as pd
import pytest
import sqlalchemy as sa
from prefect.client.orchestration import get_client

import tasks.publish
import tasks.publish.transaction
from tasks.config import PipelineConfig, parse_config
from tasks.parsing import utc
from tasks.publish import publish, write_forecasts
from tasks.schemas import forecast_table
from tests.helpers import sensor_config_dict
from tests.tasks.test_publish import forecasts, quality, record

pytestmark = pytest.mark.filterwarnings(
    "ignore:Logger 'prefect.task_runs' attempted to send logs:UserWarning"
)

AS_OF = "2020-01-01T00:00:00+00:00"
HORIZON = 12


@dataclass
class Output:
    cfg: PipelineConfig
    kind: str

    @property
    def url(self) -> str:
        return self.cfg.output.url

    @property
    def table(self) -> str:
        return self.cfg.output.table

    def read(self, sql: str, **params) -> list[tuple]:
        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as conn:
                return list(conn.execute(sa.text(sql.format(t=self.cfg.output)), params).all())
        finally:
            engine.dispose()

    def as_of_rows(self) -> pd.DataFrame:
        table = forecast_table(self.table, sa.MetaData())
        engine = sa.create_engine(self.url)
        try:
            frame = pd.read_sql(sa.select(table).where(table.c.as_of == utc(AS_OF)), engine)
        finally:
            engine.dispose()
        return frame.sort_values(["series_id", "ts"]).reset_index(drop=True)

    def drop(self) -> None:
        engine = sa.create_engine(self.url)
        with engine.begin() as conn:
            for name in (self.table, self.cfg.output.runs_table, self.cfg.output.quality_table):
                conn.execute(sa.text(f'drop table if exists "{name}"'))
        engine.dispose()


def output_cfg(url: str, tmp_path, suffix: str, partitioned: bool = True) -> PipelineConfig:
    names = {"table": f"fc_{suffix}", "runs_table": f"runs_{suffix}", "quality_table": f"quality_{suffix}"}
    output = {"url": url, "partitioned": partitioned, **names}
    return parse_config(sensor_config_dict(url, tmp_path / "work", output=output))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def out(request, tmp_path):
    """Fresh output tables (never published to) in SQLite or the PostgreSQL test server, dropped after."""
    url = (
        f"sqlite:///{tmp_path / 'out.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    )
    output = Output(output_cfg(url, tmp_path, uuid.uuid4().hex[:8]), request.param)
    yield output
    output.drop()


def run_count(state) -> int:
    with get_client(sync_client=True) as client:
        return client.read_task_run(state.state_details.task_run_id).run_count


def files(tmp_path, name: str, frame: pd.DataFrame, series: tuple[str, ...]) -> tuple[str, str]:
    """A forecast and a quality Parquet file, as the forecast and clean stages leave them."""
    fc_path, q_path = tmp_path / f"{name}-forecasts.parquet", tmp_path / f"{name}-quality.parquet"
    frame.to_parquet(fc_path)
    quality(series=series).to_parquet(q_path)
    return str(fc_path), str(q_path)


class Observer:
    """Polls the as-of's rows from its own connection until stopped; every snapshot is kept."""

    def __init__(self, url: str, table: str) -> None:
        self.engine = sa.create_engine(url)
        fc = forecast_table(table, sa.MetaData())
        self.query = sa.select(
            sa.func.count(), sa.func.count(sa.distinct(fc.c.run_id)), sa.func.min(fc.c.run_id)
        ).where(fc.c.as_of == utc(AS_OF))
        self.seen: list[tuple[int, int, str | None]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)

    def look(self) -> tuple[int, int, str | None]:
        with self.engine.connect() as conn:
            snapshot = tuple(conn.execute(self.query).one())
        self.seen.append(snapshot)
        return snapshot

    def poll(self) -> None:
        while not self.stop.is_set():
            self.look()
            time.sleep(0.005)

    def __enter__(self) -> "Observer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.look()
        self.engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("partitioned", [True, False], ids=["partitioned", "plain"])
def test_connection_killed_inside_the_publish_transaction_is_retried_and_never_shows_a_partial_set(
    pg_url, tmp_path, monkeypatch, caplog, partitioned
):
    out = Output(output_cfg(pg_url, tmp_path, uuid.uuid4().hex[:8], partitioned), "postgres")
    cfg = out.cfg
    try:
        old_run = record(cfg, AS_OF, version="lstm-old")
        write_forecasts(
            pg_url, out.table, cfg.output.runs_table, forecasts(("a", "b", "c"), HORIZON, AS_OF), old_run,
            quality=quality(series=("a", "b", "c")), quality_name=cfg.output.quality_table,
            partitioned=partitioned,
        )  # fmt: skip
        new_series = ("a", "b", "c", "d")  # one more series and new values: every row changes
        new_run = record(cfg, AS_OF, version="lstm-new")
        fc_path, q_path = files(tmp_path, "new", forecasts(new_series, HORIZON, AS_OF, level=5.0), new_series)

        real = tasks.publish.transaction.write_forecast_rows
        during: dict[str, object] = {}

        def upsert_then_kill(conn, *args, **kwargs):
            """After the forecasts are in (a new partition loaded and keyed, or the delete and insert),
            with the transaction still open: look from another connection, then terminate this
            transaction's backend from it."""
            written = real(conn, *args, **kwargs)
            if "killed" not in during:
                pid = conn.execute(sa.select(sa.func.pg_backend_pid())).scalar_one()
                during["seen"] = observer.look()
                (during["killed"],) = out.read(
                    "select pg_terminate_backend(pid) from pg_stat_activity "
                    "where pid = :pid and state = 'idle in transaction'",
                    pid=pid,
                )
            return written

        monkeypatch.setattr(tasks.publish.transaction, "write_forecast_rows", upsert_then_kill)
        with Observer(pg_url, out.table) as observer:
            state = publish(cfg, fc_path, new_run, q_path, return_state=True)

        assert during["killed"] == (True,), "the publishing backend was not found inside its transaction"
        assert during["seen"] == (3 * HORIZON, 1, old_run.run_id)  # uncommitted rows are not visible
        assert state.is_completed(), state.message
        assert run_count(state) == 2
        retried = [r.getMessage() for r in caplog.records if "Retry 1/3" in r.getMessage()]
        assert len(retried) == 1 and "terminating connection due to administrator command" in retried[0]

        old, new = (3 * HORIZON, 1, old_run.run_id), (4 * HORIZON, 1, new_run.run_id)
        assert set(observer.seen) <= {old, new}, "a reader saw a partial forecast set"
        assert observer.seen[0] == old and observer.seen[-1] == new
        rows = out.as_of_rows()
        assert len(rows) == 4 * HORIZON and not rows.duplicated(["series_id", "ts"]).any()
        expected = forecasts(new_series, HORIZON, AS_OF, level=5.0).sort_values(["series_id", "ts"])
        assert rows["yhat"].tolist() == expected["yhat"].tolist()
        assert out.read('select run_id, count(*) from "{t.quality_table}" group by run_id') == [
            (new_run.run_id, 4)
        ]
        runs = out.read('select run_id from "{t.runs_table}" order by started_at, run_id')
        assert sorted(runs) == sorted([(old_run.run_id,), (new_run.run_id,)])  # each run recorded once
    finally:
        out.drop()


@dataclass
class Attempts:
    """Every write_forecasts call of each run: how it ended."""

    outcomes: dict[str, list[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, run_id: str, outcome: str) -> None:
        with self.lock:
            self.outcomes.setdefault(run_id, []).append(outcome)


def test_two_publishes_of_the_same_as_of_at_once_leave_one_run_s_rows(out, tmp_path, monkeypatch):
    """Both start together on tables that do not exist yet; the first to write is held inside its
    transaction until the other is seen waiting (PostgreSQL) or has failed on the lock (SQLite)."""
    cfg, series = out.cfg, ("a", "b", "c")
    runs = {name: record(cfg, AS_OF, version=f"lstm-{name}") for name in ("one", "two")}
    frames = {
        name: forecasts(series, HORIZON, AS_OF, level=level) for name, level in (("one", 1.0), ("two", 7.0))
    }
    attempts = Attempts()
    real_write, real_upsert = tasks.publish.write_forecasts, tasks.publish.transaction.write_forecast_rows

    def write(url, table, runs_name, frame, run, **kwargs):
        try:
            result = real_write(url, table, runs_name, frame, run, **kwargs)
        except Exception as exc:
            attempts.add(run.run_id, f"{type(exc).__name__}: {exc}")
            raise
        attempts.add(run.run_id, "ok")
        return result

    held: list[str] = []
    waited: list[str] = []

    def other_is_waiting(me: str, my_pid: int | None) -> bool:
        other = next(r.run_id for r in runs.values() if r.run_id != me)
        if attempts.outcomes.get(other):
            waited.append("failed")  # on the lock (SQLite's busy timeout): it waits for its retry
            return True
        blocked = "select 1 from pg_stat_activity where :pid = any(pg_blocking_pids(pid))"
        if my_pid is not None and out.read(blocked, pid=my_pid):
            waited.append("blocked")
            return True
        return False

    def upsert_and_hold(conn, table, frame, ctx, *args, **kwargs):
        written = real_upsert(conn, table, frame, ctx, *args, **kwargs)
        if not held:
            held.append(ctx.run_id)
            pid = (
                conn.execute(sa.select(sa.func.pg_backend_pid())).scalar() if out.kind == "postgres" else None
            )
            deadline = time.monotonic() + 30
            while not other_is_waiting(ctx.run_id, pid) and time.monotonic() < deadline:
                time.sleep(0.02)
        return written

    monkeypatch.setattr(tasks.publish, "write_forecasts", write)
    monkeypatch.setattr(tasks.publish.transaction, "write_forecast_rows", upsert_and_hold)
    paths = {name: files(tmp_path, name, frames[name], series) for name in runs}
    start = threading.Barrier(2)
    states: dict[str, object] = {}

    def run(name: str) -> None:
        start.wait()
        states[name] = publish(cfg, *paths[name][:1], runs[name], paths[name][1], return_state=True)

    threads = [threading.Thread(target=run, args=(name,)) for name in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert all(state.is_completed() for state in states.values()), {
        name: state.message for name, state in states.items()
    }
    (first,) = held
    (other,) = (r.run_id for r in runs.values() if r.run_id != first)
    assert attempts.outcomes[first] == ["ok"]
    if out.kind == "postgres":  # it waited on the advisory lock, then went on
        assert waited == ["blocked"] and attempts.outcomes[other] == ["ok"]
    else:  # it gave up on the write lock after the busy timeout, and its retry went through
        assert waited == ["failed"] and len(attempts.outcomes[other]) == 2
        assert "database is locked" in attempts.outcomes[other][0] and attempts.outcomes[other][1] == "ok"
    rows = out.as_of_rows()
    assert len(rows) == len(series) * HORIZON and not rows.duplicated(["series_id", "ts"]).any()
    (winner,) = set(rows["run_id"])
    name = next(n for n, r in runs.items() if r.run_id == winner)
    assert winner == other  # the run that waited wrote last, over the held one's committed rows
    expected = frames[name].sort_values(["series_id", "ts"])
    assert rows["yhat"].tolist() == expected["yhat"].tolist()
    assert set(rows["model_version"]) == {runs[name].model_version}
    assert out.read('select distinct run_id from "{t.quality_table}"') == [(winner,)]
