"""Publish throughput on PostgreSQL: lstmcast's publish (forecasts, quality and run record in one
transaction) against `DataFrame.to_sql` (default method) of the same rows into a fresh table.

lstmcast publishes four times into one table: the first as-of into a fresh table (COPY, then the key is
built); the next as-of into that table, which now holds the first (the nightly case: COPY into the keyed
table); that as-of again with the same rows (a re-run that reproduced its forecasts: staging COPY,
nothing rewritten); and that as-of again with every value new under another model version (staging COPY,
every row replaced).

Run from the repository root, with PostgreSQL on 127.0.0.1:5432: .venv/bin/python benchmarks/publish_load.py
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa

from tasks.publish import RunRecord, write_forecasts

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
        pipeline=run.pipeline, as_of=AS_OF, model_version=run.model_version, run_id=run.run_id,
        created_at=pd.Timestamp.now(tz="UTC"),
    )  # fmt: skip


def _line(name: str, n_rows: int, seconds: float) -> str:
    return f"{name:<44} {n_rows:>9,} rows {seconds:8.2f} s {n_rows / seconds / 1e6:7.3f} M rows/s"


def publish_benchmark(pg_url: str, n_rows: int = 480_000) -> list[str]:
    """Time both ways into fresh tables (dropped afterwards) and return printable lines with the ratio."""
    frame = forecast_frame(n_rows)
    suffix = uuid.uuid4().hex[:8]
    table, runs, plain = f"bench_fc_{suffix}", f"bench_runs_{suffix}", f"bench_to_sql_{suffix}"
    engine = sa.create_engine(pg_url)
    engine.connect().close()  # driver and dialect imported and initialised before either way is timed
    following = AS_OF + pd.Timedelta(days=1)
    nightly_frame = forecast_frame(n_rows, seed=1, as_of=following)
    changed = nightly_frame.assign(yhat=nightly_frame["yhat"] + 1.0)

    def timed(frame: pd.DataFrame, as_of: pd.Timestamp, model_version: str = "bench") -> tuple[float, int]:
        started = time.perf_counter()
        run = run_record(uuid.uuid4().hex, model_version, as_of)
        result = write_forecasts(pg_url, table, runs, frame, run)
        assert result.rows == n_rows
        return time.perf_counter() - started, result.written

    try:
        publish_s, first_written = timed(frame, AS_OF)
        nightly_s, nightly_written = timed(nightly_frame, following)
        republish_s, same_written = timed(nightly_frame, following)
        replace_s, new_written = timed(changed, following, "bench-2")
        assert (first_written, nightly_written, same_written, new_written) == (n_rows, n_rows, 0, n_rows)
        with engine.connect() as conn:
            stored = conn.execute(sa.text(f"select count(*) from {table}")).scalar_one()
        assert stored == 2 * n_rows, stored

        rows = to_sql_frame(frame, run_record(uuid.uuid4().hex))
        started = time.perf_counter()
        with engine.begin() as conn:
            rows.to_sql(plain, conn, index=False)
        to_sql_s = time.perf_counter() - started
    finally:
        with engine.begin() as conn:
            for name in (table, runs, plain):
                conn.execute(
                    sa.text(f"drop table if exists {engine.dialect.identifier_preparer.quote(name)}")
                )
        engine.dispose()
    return [
        _line("lstmcast publish, first as-of, fresh table", n_rows, publish_s),
        _line("lstmcast publish, next as-of (nightly)", n_rows, nightly_s),
        _line("lstmcast publish, same as-of, same values", n_rows, republish_s),
        _line("lstmcast publish, same as-of, every value new", n_rows, replace_s),
        _line("DataFrame.to_sql (default method)", n_rows, to_sql_s),
        f"to_sql / publish (target >= 10x): {to_sql_s / publish_s:.1f}x fresh table, "
        f"{to_sql_s / nightly_s:.1f}x next as-of, {to_sql_s / republish_s:.1f}x same values, "
        f"{to_sql_s / replace_s:.1f}x every value new",
    ]


if __name__ == "__main__":
    for line in publish_benchmark(PG_URL):
        print(line)
