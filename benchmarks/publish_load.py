"""Publish throughput on PostgreSQL: lstmcast's publish (forecasts, quality and run record in one transaction)
against `DataFrame.to_sql` (default method) of the same rows.

lstmcast publishes ten times into one table, for each layout of the forecast table: the first as-of into a
fresh table; the next as-of three times over (the nightly case: the table holds the earlier ones); the last of
those again three times with the same values (a re-run that reproduced its forecasts); and three times with
every value new under another model version. Layouts: partitioned (lstmcast's default on PostgreSQL: each
publish COPYs into a table of its own, builds its key and attaches it as the partition of its (pipeline,
as_of), replacing the partition a re-run finds) and plain (`output.partitioned = false`: COPY into the keyed
table, or staging COPY then delete and insert of what changed). `DataFrame.to_sql` (default method) writes the
first as-of into a fresh table three times, then does the nightly and the every-value-new jobs the way a
to_sql user would: the next as-of appended to a table with the forecast key that holds the first, and that
as-of's rows deleted and the new ones appended in one transaction.

Run from the repository root: .venv/bin/python -m benchmarks.publish_load
(PostgreSQL at $LSTMCAST_BENCH_PG_URL, else the local test database on 127.0.0.1:5432)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa

from benchmarks.common import pg_url
from tasks.publish import write_forecasts
from tasks.schemas import forecast_table
from tasks.summary import RunRecord

HORIZON = 48
AS_OF = pd.Timestamp("2024-01-01", tz="UTC")


def forecast_frame(n_rows: int, seed: int = 0, as_of: pd.Timestamp = AS_OF) -> pd.DataFrame:
    """`n_rows` forecast rows: series of HORIZON hourly steps after `as_of`, with an interval."""
    n_series = -(-n_rows // HORIZON)
    steps = pd.date_range(as_of + pd.Timedelta(hours=1), periods=HORIZON, freq="h")
    series = np.repeat([f"sensor_{i:06d}" for i in range(n_series)], HORIZON)[:n_rows]
    ts = steps[np.tile(np.arange(HORIZON), n_series)[:n_rows]]
    yhat = np.random.default_rng(seed).normal(50.0, 10.0, n_rows)
    return pd.DataFrame(
        {
            "series_id": series,
            "ts": ts,
            "yhat": yhat,
            "yhat_lower": yhat - 5.0,
            "yhat_upper": yhat + 5.0,
        }
    )


def run_record(run_id: str, model_version: str = "bench", as_of: pd.Timestamp = AS_OF) -> RunRecord:
    return RunRecord(
        run_id=run_id, pipeline="bench", as_of=as_of.isoformat(), started_at=datetime.now(UTC).isoformat(),
        model_version=model_version, config_json="{}", metrics_json="{}", timings_json="{}",
        counts_json=json.dumps({}),
    )  # fmt: skip


def to_sql_frame(frame: pd.DataFrame, run: RunRecord) -> pd.DataFrame:
    """The same rows with every column the forecast table has, as a plain to_sql user would write them."""
    return frame.assign(
        pipeline=run.pipeline, as_of=pd.Timestamp(run.as_of), model_version=run.model_version,
        run_id=run.run_id, created_at=pd.Timestamp.now(tz="UTC"),
    )  # fmt: skip


def _line(name: str, n_rows: int, seconds: float) -> str:
    return f"{name:<44} {n_rows:>9,} rows {seconds:8.2f} s {n_rows / seconds / 1e6:7.3f} M rows/s"


def _times(name: str, n_rows: int, seconds: list[float]) -> str:
    every = ", ".join(f"{t:.2f}" for t in seconds)
    return f"{_line(name, n_rows, min(seconds))}   median {statistics.median(seconds):.2f} s   all: {every}"


@dataclass
class Publishes:
    """Seconds of each lstmcast publish into one table of one layout."""

    first: float
    nightly: list[float]
    same: list[float]
    every_new: list[float]


def lstmcast_publishes(
    url: str, table: str, runs: str, frames: list[pd.DataFrame], nights: list[pd.Timestamp],
    partitioned: bool,
) -> Publishes:  # fmt: skip
    """The first as-of (frames[0] at AS_OF), each night's as-of, then the last night again with the same
    values and with every value new; the table must not exist yet."""
    n_rows = len(frames[0])

    def timed(frame: pd.DataFrame, as_of: pd.Timestamp, model_version: str = "bench") -> tuple[float, int]:
        started = time.perf_counter()
        run = run_record(uuid.uuid4().hex, model_version, as_of)
        result = write_forecasts(url, table, runs, frame, run, partitioned=partitioned)
        assert result.rows == n_rows
        return time.perf_counter() - started, result.written

    first_s, first_written = timed(frames[0], AS_OF)
    nightly = [timed(f, night) for f, night in zip(frames[1:], nights, strict=True)]
    last, last_frame = nights[-1], frames[-1]
    repeats = len(nights)
    same = [timed(last_frame, last) for _ in range(repeats)]
    changed = [last_frame.assign(yhat=last_frame["yhat"] + 1.0 + i) for i in range(repeats)]
    every_new = [timed(frame, last, f"bench-{2 + i}") for i, frame in enumerate(changed)]
    # a partition is written whole; a plain table keeps the rows a re-run left unchanged
    same_written = n_rows if partitioned else 0
    written = [first_written, *(w for _, w in [*nightly, *same, *every_new])]
    assert written == [n_rows, *[n_rows] * repeats, *[same_written] * repeats, *[n_rows] * repeats], written
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        stored = conn.execute(sa.text(f"select count(*) from {table}")).scalar_one()
    engine.dispose()
    assert stored == (1 + len(nights)) * n_rows, stored
    return Publishes(first_s, *([t for t, _ in runs] for runs in (nightly, same, every_new)))


@dataclass
class ToSqlTimes:
    """Seconds of `DataFrame.to_sql` (default method) doing the jobs a publish does."""

    fresh: list[float]  # the first as-of into a fresh table, each time
    nightly: float  # the next as-of appended to a keyed table holding the first
    every_new: float  # that as-of's rows deleted and new ones appended, in one transaction


def to_sql_publishes(
    engine: sa.Engine, frames: list[pd.DataFrame], nights: list[pd.Timestamp], source: str, keyed: str,
    plains: list[str],
) -> ToSqlTimes:  # fmt: skip
    """to_sql of the first as-of into each fresh table of `plains`; then, as a to_sql user would do the
    nightly and the every-value-new jobs, the last night appended to `keyed` (created with the forecast key,
    holding the first as-of copied from `source`), and that as-of's rows deleted and new ones appended."""
    last, last_frame = nights[-1], frames[-1]
    changed = last_frame.assign(yhat=last_frame["yhat"] + 1.0)

    def to_sql(rows: pd.DataFrame, name: str, delete_as_of: pd.Timestamp | None = None) -> float:
        started = time.perf_counter()
        with engine.begin() as conn:
            if delete_as_of is not None:
                conn.execute(sa.text(f"delete from {name} where as_of = :a"), {"a": delete_as_of})
            rows.to_sql(name, conn, index=False, if_exists="append")
        return time.perf_counter() - started

    rows = to_sql_frame(frames[0], run_record(uuid.uuid4().hex))
    fresh = [to_sql(rows, plain) for plain in plains]
    forecast_table(keyed, sa.MetaData()).create(engine)
    with engine.begin() as conn:
        first = sa.text(f"insert into {keyed} select * from {source} where as_of = :a")
        conn.execute(first, {"a": AS_OF})
    nightly_rows = to_sql_frame(last_frame, run_record(uuid.uuid4().hex, as_of=last))
    nightly = to_sql(nightly_rows, keyed)
    changed_rows = to_sql_frame(changed, run_record(uuid.uuid4().hex, "bench-2", last))
    return ToSqlTimes(fresh, nightly, to_sql(changed_rows, keyed, delete_as_of=last))


def publish_benchmark(url: str, n_rows: int = 480_000, repeats: int = 3) -> list[str]:
    """Time both ways into fresh tables (dropped afterwards) and return printable lines with the ratios.
    The nightly publish and to_sql into a fresh table run `repeats` times (the machine's speed drifts),
    and are compared best with best and median with median."""
    frame = forecast_frame(n_rows)
    suffix = uuid.uuid4().hex[:8]
    layouts = {"partitioned": True, "plain": False}
    tables = {name: (f"bench_fc_{name}_{suffix}", f"bench_runs_{name}_{suffix}") for name in layouts}
    keyed = f"bench_to_sql_keyed_{suffix}"
    plains = [f"bench_to_sql_{suffix}_{i}" for i in range(repeats)]
    engine = sa.create_engine(url)
    engine.connect().close()  # driver and dialect imported and initialised before either way is timed
    nights = [AS_OF + pd.Timedelta(days=1 + i) for i in range(repeats)]
    frames = [frame, *(forecast_frame(n_rows, seed=1 + i, as_of=night) for i, night in enumerate(nights))]
    try:
        ours = {
            name: lstmcast_publishes(url, *tables[name], frames, nights, partitioned)
            for name, partitioned in layouts.items()
        }
        to_sql_s = to_sql_publishes(engine, frames, nights, tables["plain"][0], keyed, plains)
    finally:
        with engine.begin() as conn:
            for name in (*(t for pair in tables.values() for t in pair), keyed, *plains):
                conn.execute(
                    sa.text(f"drop table if exists {engine.dialect.identifier_preparer.quote(name)}")
                )
        engine.dispose()
    return report_lines(n_rows, ours, layouts, to_sql_s)


def report_lines(
    n_rows: int, ours: dict[str, Publishes], layouts: dict[str, bool], to_sql: ToSqlTimes
) -> list[str]:
    """Every timing, then per layout the speed-ups over to_sql."""
    typical = statistics.median(to_sql.fresh)
    lines = []
    for name, got in ours.items():
        lines += [
            _line(f"lstmcast publish ({name}), first as-of", n_rows, got.first),
            _times(f"lstmcast publish ({name}), next as-of (nightly)", n_rows, got.nightly),
            _times(f"lstmcast publish ({name}), same as-of, same values", n_rows, got.same),
            _times(f"lstmcast publish ({name}), same as-of, every value new", n_rows, got.every_new),
        ]
    lines += [
        _times("DataFrame.to_sql (default method), fresh table", n_rows, to_sql.fresh),
        _line("to_sql, next as-of appended to the keyed table", n_rows, to_sql.nightly),
        _line("to_sql, as-of deleted, every value new appended", n_rows, to_sql.every_new),
    ]
    for name, got in ours.items():
        default = " (the default layout)" if layouts[name] else ""
        cases = {"nightly": got.nightly, "same values": got.same, "every value new": got.every_new}
        ratios = ", ".join(
            f"{case} {min(to_sql.fresh) / min(times):.1f}x / {typical / statistics.median(times):.1f}x"
            for case, times in cases.items()
        )
        lines += [
            f"{name}{default}: to_sql into a fresh table / publish, best with best / median with median "
            f"(target >= 10x): first as-of {typical / got.first:.1f}x (median), {ratios}",
            f"{name}: to_sql doing the same job / publish (median): "
            f"{to_sql.nightly / statistics.median(got.nightly):.1f}x next as-of (nightly), "
            f"{to_sql.every_new / statistics.median(got.every_new):.1f}x every value new",
        ]
    return lines


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # no options: --help only
    for line in publish_benchmark(pg_url()):
        print(line)


if __name__ == "__main__":
    main()
