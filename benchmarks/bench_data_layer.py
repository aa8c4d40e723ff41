"""Data layer throughput on PostgreSQL: lstmcast's extract against `pandas.read_sql` and the server's COPY.

Builds (once; reused while it holds the right row count) a 5,000,000-row table in the test database:
1,000 series x 5,000 hourly steps of (series_id text, ts timestamptz, value float8), generated server-side.
Each reader then runs in its own subprocess, so the peak RSS reported (ru_maxrss of that process) is its
own, imports included:

- lstmcast extract: `extract_to_parquet` with `incremental = false`, i.e. a full read of the table through
  ADBC (COPY binary into Arrow batches) into the month-partitioned Parquet folder;
- `pandas.read_sql` through SQLAlchemy + psycopg, the whole table into one DataFrame;
- `psql -c "COPY (select ...) TO STDOUT (FORMAT binary)" > /dev/null`: the server's own rate, the ceiling.

lstmcast's extract and the COPY run five times in turn and the best of each is compared (the shared machine's
speed drifts by a third from minute to minute); every time is printed. The extract's clock starts after the
Python modules, the database drivers included, are imported (read_sql's starts after create_engine, which
imports psycopg) and stops when its Parquet files are in place; its peak RSS includes the imports.

Then publish (benchmarks/publish_load.py): 480,000 forecast rows through lstmcast's publish (one transaction):
the first as-of into a fresh table, the next as-of into that keyed table (the nightly case), that as-of again
with the same values and with every value new, against `DataFrame.to_sql` (default method).

Targets (issue 4): extract >= 10x read_sql, >= 80% of the COPY rate, peak RSS <= 1 GB; publish >= 10x to_sql.

Run: .venv/bin/python benchmarks/bench_data_layer.py [--url postgresql+psycopg://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_URL = os.environ.get("LSTMCAST_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TABLE = "bench_readings"
SERIES, STEPS = 1_000, 5_000
ROWS = SERIES * STEPS
START = "2020-01-01 00:00:00+00"
SELECT = f"select series_id, ts, value from {TABLE}"


def build_table(url: str) -> tuple[int, float]:
    """The benchmark table, created only when it is missing or holds a different number of rows."""
    engine = sa.create_engine(url)
    started = time.perf_counter()
    try:
        with engine.begin() as conn:
            if sa.inspect(conn).has_table(TABLE):
                count = conn.execute(sa.text(f"select count(*) from {TABLE}")).scalar_one()
                if count == ROWS:
                    return count, 0.0
                conn.execute(sa.text(f"drop table {TABLE}"))
            conn.execute(sa.text(f"create table {TABLE} (series_id text, ts timestamptz, value float8)"))
            conn.execute(
                sa.text(
                    f"insert into {TABLE} "
                    "select 's' || lpad(s::text, 4, '0'), "
                    f"timestamptz '{START}' + h * interval '1 hour', "
                    "s + 10 * sin(2 * pi() * h / 24.0) + random() "
                    f"from generate_series(1, {SERIES}) s, generate_series(0, {STEPS - 1}) h"
                )
            )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f"vacuum analyze {TABLE}"))
            count = conn.execute(sa.text(f"select count(*) from {TABLE}")).scalar_one()
    finally:
        engine.dispose()
    return count, time.perf_counter() - started


# ------------------------------------------------------------------------------------------------ readers
# Each runs in a child process and returns (rows, seconds); the child adds its peak RSS.


def read_lstmcast(url: str) -> tuple[int, float]:
    # The drivers are imported before the clock starts, as read_sql's create_engine imports psycopg
    # before its clock: a worker process pays that once, not per extract.
    import adbc_driver_postgresql.dbapi  # noqa: F401
    import pandas as pd
    import psycopg  # noqa: F401

    from tasks.config import parse_config
    from tasks.extract import extract_to_parquet, parse_as_of

    work = Path(tempfile.mkdtemp(prefix="bench_extract_"))
    try:
        cfg = parse_config(
            {
                "name": "bench",
                "source": {"url": url, "table": TABLE, "incremental": False},
                "data": {"freq": "h", "season_length": 24, "data_dir": str(work)},
                "forecast": {"horizon": 24, "lookback": 48},
                "output": {"url": url, "table": "bench_forecasts"},
            }
        )
        as_of = parse_as_of(pd.Timestamp(START) + pd.Timedelta(hours=STEPS - 1))
        started = time.perf_counter()
        result = extract_to_parquet(cfg, as_of)
        seconds = time.perf_counter() - started
        assert result.rows == ROWS and result.series == SERIES, result
        return result.rows_read, seconds
    finally:
        shutil.rmtree(work, ignore_errors=True)


def read_pandas(url: str) -> tuple[int, float]:
    import pandas as pd

    engine = sa.create_engine(url)
    started = time.perf_counter()
    frame = pd.read_sql(SELECT, engine)
    seconds = time.perf_counter() - started
    engine.dispose()
    return len(frame), seconds


READERS: dict[str, Callable[[str], tuple[int, float]]] = {"lstmcast": read_lstmcast, "read_sql": read_pandas}


def run_child(name: str, url: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--url", url, "--child", name], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"reader {name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def copy_rate(url: str) -> dict:
    """The server's COPY in binary to /dev/null through psql (psycopg's copy() when psql is absent)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    psql = shutil.which("psql")
    sql = f"COPY ({SELECT}) TO STDOUT (FORMAT binary)"
    started = time.perf_counter()
    if psql:
        env = {**os.environ, **({"PGPASSWORD": parsed.password} if parsed.password else {})}
        args = [psql, "-X", "-h", parsed.host or "127.0.0.1", "-p", str(parsed.port or 5432)]
        args += ["-U", parsed.username or "postgres", "-d", parsed.database or "postgres", "-c", sql]
        with open(os.devnull, "wb") as devnull:
            subprocess.run(args, stdout=devnull, check=True, env=env)
        how = "psql COPY binary > /dev/null"
    else:
        import psycopg

        with psycopg.connect(parsed.set(drivername="postgresql").render_as_string(False)) as conn:
            with conn.cursor().copy(sql) as copy:
                for _ in copy:
                    pass
        how = "psycopg cursor.copy() binary, discarded (psql not installed)"
    return {"rows": ROWS, "seconds": time.perf_counter() - started, "how": how}


# ------------------------------------------------------------------------------------------------ sections
# main() prints each section in turn; a section takes the URL and returns its lines.


def best_of(runs: list[dict]) -> dict:
    """The fastest of several runs (the least disturbed), keeping every time and the largest peak RSS."""
    best = dict(min(runs, key=lambda r: r["seconds"]))
    best["all"] = [r["seconds"] for r in runs]
    if "peak_rss_mb" in best:
        best["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    return best


def extract_section(url: str, repeat: int = 5) -> list[str]:
    """lstmcast's extract and the server's COPY run `repeat` times in turn (both meet the same moments of
    a shared machine) and the best of each is compared; read_sql, 10x slower, runs once."""
    extract_runs, copy_runs = [], []
    for _ in range(repeat):
        extract_runs.append(run_child("lstmcast", url))
        copy_runs.append(copy_rate(url))
    results = {"lstmcast": best_of(extract_runs), "read_sql": run_child("read_sql", url)}
    results["copy"] = best_of(copy_runs)
    rate = {name: r["rows"] / r["seconds"] for name, r in results.items()}
    lines = ["## extract: read the whole table", "", "| reader | rows | seconds | rows/s | peak RSS |"]
    lines.append("|---|---|---|---|---|")
    labels = {
        "lstmcast": "lstmcast extract (full, ADBC -> Parquet)",
        "read_sql": "pandas.read_sql (SQLAlchemy + psycopg)",
        "copy": results["copy"]["how"],
    }
    for name, r in results.items():
        rss = f"{r['peak_rss_mb'] / 1024:.2f} GB" if "peak_rss_mb" in r else "-"
        seconds = f"{r['seconds']:.2f}"
        if "all" in r:
            seconds += f" (best of {', '.join(f'{t:.2f}' for t in r['all'])})"
        lines.append(f"| {labels[name]} | {r['rows']:,} | {seconds} | {rate[name] / 1e6:.2f} M | {rss} |")
    vs_pandas = rate["lstmcast"] / rate["read_sql"]
    vs_copy = rate["lstmcast"] / rate["copy"]
    rss_gb = results["lstmcast"]["peak_rss_mb"] / 1024
    lines += [
        "",
        f"extract vs read_sql: {vs_pandas:.1f}x (target >= 10x: {'met' if vs_pandas >= 10 else 'NOT met'})",
        f"extract vs COPY: {vs_copy:.1%} (target >= 80%: {'met' if vs_copy >= 0.8 else 'NOT met'})",
        f"extract peak RSS: {rss_gb:.2f} GB (target <= 1 GB: {'met' if rss_gb <= 1 else 'NOT met'})",
    ]
    return lines


def publish_section(url: str) -> list[str]:
    from benchmarks.publish_load import publish_benchmark

    return ["## publish: 480,000 forecast rows", "", *publish_benchmark(url)]


SECTIONS: list[Callable[[str], list[str]]] = [extract_section, publish_section]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=DEFAULT_URL, help="SQLAlchemy URL of the PostgreSQL database")
    parser.add_argument("--child", choices=sorted(READERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        rows, seconds = READERS[args.child](args.url)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
        print(json.dumps({"rows": rows, "seconds": seconds, "peak_rss_mb": peak_mb}))
        return
    rows, built = build_table(args.url)
    print(f"table {TABLE}: {rows:,} rows" + (f" (built in {built:.1f} s)" if built else " (reused)"))
    print(f"{os.cpu_count()} CPU cores; PostgreSQL at {sa.engine.make_url(args.url).render_as_string()}\n")
    for section in SECTIONS:
        print("\n".join(section(args.url)) + "\n", flush=True)


if __name__ == "__main__":
    main()
