"""Where one publish spends its time: every statement of lstmcast's publish, timed from the client.

Publishes 480,000 forecast rows (the rows of benchmarks/publish_load.py) into a fresh table of each layout:
the first as-of, the next as-of (the nightly case) and that as-of again with every value new (a re-run), and
prints for each publish its statements in order with the seconds each took (the binary COPY as one step),
then the commit. Statements under 5 ms are summed into one line.

Run from the repository root (PostgreSQL at $LSTMCAST_BENCH_PG_URL, else the local test database):
    .venv/bin/python -m benchmarks.publish_statements
"""

from __future__ import annotations

import argparse
import time
import uuid

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import event

import tasks.publish.copy
from benchmarks.common import pg_url
from benchmarks.publish_load import AS_OF, forecast_frame, run_record
from tasks.publish import write_forecasts

SHORT_S = 0.005


class Steps:
    """Statement start and end times of the publishes that run while it is installed."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, float]] = []
        self.started: dict[int, tuple[str, float]] = {}

    def begin(self, label: str, key: int) -> None:
        self.started[key] = (label, time.perf_counter())

    def end(self, key: int) -> None:
        label, started = self.started.pop(key)
        self.steps.append((label, time.perf_counter() - started))

    def install(self) -> None:
        @event.listens_for(sa.engine.Engine, "before_cursor_execute")
        def before(conn, cursor, statement, params, context, executemany):
            self.begin(" ".join(statement.split())[:90], id(cursor))

        @event.listens_for(sa.engine.Engine, "after_cursor_execute")
        def after(conn, cursor, statement, params, context, executemany):
            self.end(id(cursor))

        @event.listens_for(sa.engine.Engine, "commit")
        def commit(conn):
            self.begin("COMMIT", -1)

        real_copy = tasks.publish.copy.copy_arrow

        def copy(raw, table, data, freeze=False):
            options = ", FREEZE" if freeze else ""
            self.begin(f"COPY {table.name} ({len(data.column_names)} columns{options})", -2)
            real_copy(raw, table, data, freeze)
            self.end(-2)

        tasks.publish.copy.copy_arrow = copy

    def report(self, total: float) -> list[str]:
        if -1 in self.started:  # the commit ends when write_forecasts returns
            label, started = self.started.pop(-1)
            self.steps.append((label, total - sum(s for _, s in self.steps)))
        short = [s for _, s in self.steps if s < SHORT_S]
        lines = [f"    {s:6.3f} s  {label}" for label, s in self.steps if s >= SHORT_S]
        lines.append(f"    {sum(short):6.3f} s  {len(short)} statements under {SHORT_S * 1000:.0f} ms each")
        self.steps = []
        return lines


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # no options: --help only
    url = pg_url()
    steps = Steps()
    steps.install()
    n_rows = 480_000
    night = AS_OF + pd.Timedelta(days=1)
    nightly = forecast_frame(n_rows, seed=1, as_of=night)
    cases = [
        ("first as-of", forecast_frame(n_rows), AS_OF, "bench"),
        ("next as-of (nightly)", nightly, night, "bench"),
        ("same as-of, every value new", nightly.assign(yhat=nightly["yhat"] + 1.0), night, "bench-2"),
    ]
    engine = sa.create_engine(url)
    engine.connect().close()
    suffix = uuid.uuid4().hex[:8]
    try:
        for layout, partitioned in (("partitioned", True), ("plain", False)):
            table, runs = f"bench_steps_{layout}_{suffix}", f"bench_steps_runs_{layout}_{suffix}"
            for name, frame, as_of, version in cases:
                run = run_record(uuid.uuid4().hex, version, as_of)
                started = time.perf_counter()
                write_forecasts(url, table, runs, frame, run, partitioned=partitioned)
                total = time.perf_counter() - started
                print(f"{layout}, {name}: {total:.3f} s")
                print("\n".join(steps.report(total)))
    finally:
        with engine.begin() as conn:
            for layout in ("partitioned", "plain"):
                names = f"bench_steps_{layout}_{suffix}, bench_steps_runs_{layout}_{suffix}"
                conn.execute(sa.text(f"drop table if exists {names}"))
        engine.dispose()


if __name__ == "__main__":
    main()
