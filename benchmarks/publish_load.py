"""Publish throughput on PostgreSQL: lstmcast's publish (forecasts, quality and run record in one
transaction) against `DataFrame.to_sql` (default method) of the same rows into a fresh table.

lstmcast publishes four times into one table: the first as-of into a fresh table (COPY, then the key is
built); the next as-of into that table, which now holds the first (the nightly case: COPY into the keyed
table); that as-of again with the same rows (a re-run that reproduced its forecasts: staging COPY,
nothing rewritten); and that as-of again with every value new under another model version (staging COPY,
every row replaced). `DataFrame.to_sql` (default method) writes the first as-of into a fresh table, then
does the nightly and the every-value-new jobs the way a to_sql user would: the next as-of appended to a
table with the forecast key that holds the first, and that as-of's rows deleted and the new ones appended
in one transaction.

Run from the repository root, with PostgreSQL on 127.0.0.1:5432: .venv/bin/python benchmarks/publish_load.py
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa

from tasks.publish import RunRecord, forecast_table, write_forecasts

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
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


def publish_benchmark(pg_url: str, n_rows: int = 480_000, repeats: int = 3) -> list[str]:
    """Time both ways into fresh tables (dropped afterwards) and return printable lines with the ratios.
    The nightly publish and to_sql into a fresh table run `repeats` times (the machine's speed drifts),
    and are compared best with best and median with median."""
    frame = forecast_frame(n_rows)
    suffix = uuid.uuid4().hex[:8]
    table, runs, keyed = f"bench_fc_{suffix}", f"bench_runs_{suffix}", f"bench_to_sql_keyed_{suffix}"
    plains = [f"bench_to_sql_{suffix}_{i}" for i in range(repeats)]
    engine = sa.create_engine(pg_url)
    engine.connect().close()  # driver and dialect imported and initialised before either way is timed
    nights = [AS_OF + pd.Timedelta(days=1 + i) for i in range(repeats)]
    nightly_frames = [forecast_frame(n_rows, seed=1 + i, as_of=night) for i, night in enumerate(nights)]
    last, last_frame = nights[-1], nightly_frames[-1]
    changed = last_frame.assign(yhat=last_frame["yhat"] + 1.0)

    def timed(frame: pd.DataFrame, as_of: pd.Timestamp, model_version: str = "bench") -> tuple[float, int]:
        started = time.perf_counter()
        run = run_record(uuid.uuid4().hex, model_version, as_of)
        result = write_forecasts(pg_url, table, runs, frame, run)
        assert result.rows == n_rows
        return time.perf_counter() - started, result.written

    def to_sql(rows: pd.DataFrame, name: str, delete_as_of: pd.Timestamp | None = None) -> float:
        started = time.perf_counter()
        with engine.begin() as conn:
            if delete_as_of is not None:
                conn.execute(sa.text(f"delete from {name} where as_of = :a"), {"a": delete_as_of})
            rows.to_sql(name, conn, index=False, if_exists="append")
        return time.perf_counter() - started

    try:
        publish_s, first_written = timed(frame, AS_OF)
        nightly = [timed(f, night) for f, night in zip(nightly_frames, nights, strict=True)]
        republish_s, same_written = timed(last_frame, last)
        replace_s, new_written = timed(changed, last, "bench-2")
        written = (first_written, *(w for _, w in nightly), same_written, new_written)
        assert written == (n_rows, *[n_rows] * repeats, 0, n_rows), written
        with engine.connect() as conn:
            stored = conn.execute(sa.text(f"select count(*) from {table}")).scalar_one()
        assert stored == (1 + repeats) * n_rows, stored
        nightly_s = [t for t, _ in nightly]

        rows = to_sql_frame(frame, run_record(uuid.uuid4().hex))
        to_sql_s = [to_sql(rows, plain) for plain in plains]
        # to_sql doing the nightly and the every-value-new jobs: the next as-of appended to a table with
        # the forecast key that holds the first, then that as-of's rows deleted and new ones appended
        forecast_table(keyed, sa.MetaData()).create(engine)
        with engine.begin() as conn:
            conn.execute(sa.text(f"insert into {keyed} select * from {table} where as_of = :a"), {"a": AS_OF})
        nightly_rows = to_sql_frame(last_frame, run_record(uuid.uuid4().hex, as_of=last))
        to_sql_nightly_s = to_sql(nightly_rows, keyed)
        changed_rows = to_sql_frame(changed, run_record(uuid.uuid4().hex, "bench-2", last))
        to_sql_replace_s = to_sql(changed_rows, keyed, delete_as_of=last)
    finally:
        with engine.begin() as conn:
            for name in (table, runs, keyed, *plains):
                conn.execute(
                    sa.text(f"drop table if exists {engine.dialect.identifier_preparer.quote(name)}")
                )
        engine.dispose()
    typical, nightly_typical = statistics.median(to_sql_s), statistics.median(nightly_s)
    return [
        _line("lstmcast publish, first as-of, fresh table", n_rows, publish_s),
        _times("lstmcast publish, next as-of (nightly)", n_rows, nightly_s),
        _line("lstmcast publish, same as-of, same values", n_rows, republish_s),
        _line("lstmcast publish, same as-of, every value new", n_rows, replace_s),
        _times("DataFrame.to_sql (default method), fresh table", n_rows, to_sql_s),
        _line("to_sql, next as-of appended to the keyed table", n_rows, to_sql_nightly_s),
        _line("to_sql, as-of deleted, every value new appended", n_rows, to_sql_replace_s),
        f"to_sql into a fresh table (median) / publish (target >= 10x): {typical / publish_s:.1f}x fresh "
        f"table, {typical / republish_s:.1f}x same values, {typical / replace_s:.1f}x every value new",
        f"to_sql into a fresh table / nightly publish (target >= 10x): best with best "
        f"{min(to_sql_s) / min(nightly_s):.1f}x, median with median {typical / nightly_typical:.1f}x",
        f"to_sql doing the same job / publish: {to_sql_nightly_s / nightly_typical:.1f}x next "
        f"as-of (nightly median), {to_sql_replace_s / replace_s:.1f}x every value new",
    ]


if __name__ == "__main__":
    for line in publish_benchmark(PG_URL):
        print(line)
