"""Data layer throughput on PostgreSQL: lstmcast's extract against `pandas.read_sql` and the server's COPY.

Builds (once; reused while it holds the right row count) a 5,000,000-row table in the test database:
1,000 series x 5,000 hourly steps of (series_id text, ts timestamptz, value float8), generated server-side.
Each reader then runs in its own subprocess, so the peak RSS reported (ru_maxrss of that process) is its
own, imports included:

- lstmcast extract: `run_extract` with `incremental = false`, i.e. a full read of the table through
  ADBC (COPY binary into Arrow batches) into the month-partitioned Parquet folder;
- the ADBC driver alone on the same statement, its Arrow batches discarded: the client's share any extract
  through the driver pays (and the CPU of the server's backend, read from /proc for a local server);
- `pandas.read_sql` through SQLAlchemy + psycopg, the whole table into one DataFrame;
- `psql -c "COPY (select ...) TO STDOUT (FORMAT binary)" > /dev/null`: the server's own rate, the ceiling; and
  the same COPY of the bounded SELECT the extract sends (`where ts <= <as-of>`), for reference.

The extract, the driver alone and both COPYs run seven times in turn (the shared machine's speed drifts by
a third from minute to minute), and the extract is compared with the COPY best with best, median with
median and round by round (the median of each round's COPY time over its extract time); every time is
printed. The extract's clock starts after the Python modules, the database drivers
included, are imported (read_sql's starts after create_engine, which imports psycopg) and stops when its
Parquet files are in place; its peak RSS includes the imports.

Then publish (benchmarks/publish_load.py): 480,000 forecast rows through lstmcast's publish (one transaction)
into a partitioned forecast table (lstmcast's default on PostgreSQL) and into a plain one: the first as-of
into a fresh table, the next as-of (the nightly case), that as-of again with the same values and with every
value new, against `DataFrame.to_sql` (default method).

Targets (issue 4): extract >= 10x read_sql, >= 80% of the COPY rate, peak RSS <= 1 GB; publish >= 10x to_sql.

Run: .venv/bin/python -m benchmarks.bench_data_layer [--url postgresql+psycopg://...] [--only extract|publish]
(default URL: $LSTMCAST_BENCH_PG_URL, else the local test database)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from importlib import metadata
from pathlib import Path

import sqlalchemy as sa

from benchmarks.common import libpq_url, peak_rss_mib, pg_url, run_module

TABLE = "bench_readings"
SERIES, STEPS = 1_000, 5_000
ROWS = SERIES * STEPS
START = "2020-01-01 00:00:00+00"
SELECT = f"select series_id, ts, value from {TABLE}"
# the last step: the extract's as-of, its upper bound
LAST = (datetime.fromisoformat(START) + timedelta(hours=STEPS - 1)).isoformat(sep=" ")
BOUNDED_SELECT = f"{SELECT} where ts <= timestamptz '{LAST}'"


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
# Each runs in a child process and returns (rows, seconds, CPU seconds of all its threads); the child adds
# its peak RSS.


def read_lstmcast(url: str) -> tuple[int, float, float]:
    # The drivers are imported before the clock starts, as read_sql's create_engine imports psycopg
    # before its clock: a worker process pays that once, not per extract.
    import adbc_driver_postgresql.dbapi  # noqa: F401
    import psycopg  # noqa: F401

    from tasks.config import parse_config
    from tasks.extract import run_extract
    from tasks.parsing import parse_as_of

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
        as_of = parse_as_of(LAST)
        started, cpu = time.perf_counter(), time.process_time()
        result = run_extract(cfg, as_of)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        assert result.rows == ROWS and result.series == SERIES, result
        return result.rows_read, seconds, cpu
    finally:
        shutil.rmtree(work, ignore_errors=True)


def read_pandas(url: str) -> tuple[int, float, float]:
    import pandas as pd

    engine = sa.create_engine(url)
    started, cpu = time.perf_counter(), time.process_time()
    frame = pd.read_sql(SELECT, engine)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    engine.dispose()
    return len(frame), seconds, cpu


def read_adbc_alone(url: str) -> tuple[int, float, float]:
    """The ADBC driver alone on the extract's statement, batches discarded: the client's share that any
    extract through it pays. Also prints the CPU the server's backend spent (read from /proc, so only for a
    server on this machine)."""
    import adbc_driver_postgresql.dbapi as adbc

    from tasks.db import libpq_uri

    def backend_cpu(pid: int) -> float | None:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    with adbc.connect(libpq_uri(url)) as conn, conn.cursor() as cur:
        cur.execute("select pg_backend_pid()")
        pid = cur.fetchone()[0]
        before = backend_cpu(pid)
        started, cpu = time.perf_counter(), time.process_time()
        cur.execute(BOUNDED_SELECT)
        rows = sum(batch.num_rows for batch in cur.fetch_record_batch())
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        after = backend_cpu(pid)
    if before is not None and after is not None:
        print(json.dumps({"server_cpu": after - before}))
    return rows, seconds, cpu


Reader = Callable[[str], tuple[int, float, float]]
READERS: dict[str, Reader] = {"lstmcast": read_lstmcast, "read_sql": read_pandas, "adbc": read_adbc_alone}


def run_child(name: str, url: str) -> dict:
    out = run_module(__spec__.name, "--url", url, "--child", name)
    if out.returncode != 0:
        raise RuntimeError(f"reader {name} failed:\n{out.stderr[-2000:]}")
    result = {}
    for line in out.stdout.strip().splitlines():
        result |= json.loads(line)
    return result


def copy_rate(url: str, select: str = SELECT) -> dict:
    """The server's COPY of `select` in binary to /dev/null through psql (psycopg's copy() without psql)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    psql = shutil.which("psql")
    sql = f"COPY ({select}) TO STDOUT (FORMAT binary)"
    started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    if psql:
        env = {**os.environ, **({"PGPASSWORD": parsed.password} if parsed.password else {})}
        args = [psql, "-X", "-h", parsed.host or "127.0.0.1", "-p", str(parsed.port or 5432)]
        args += ["-U", parsed.username or "postgres", "-d", parsed.database or "postgres", "-c", sql]
        with open(os.devnull, "wb") as devnull:
            subprocess.run(args, stdout=devnull, check=True, env=env)
        how = "psql COPY binary > /dev/null"
    else:
        import psycopg

        with psycopg.connect(libpq_url(url)) as conn:
            with conn.cursor().copy(sql) as copy:
                for _ in copy:
                    pass
        how = "psycopg cursor.copy() binary, discarded (psql not installed)"
    seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime  # psql's own CPU (0 without it)
    return {"rows": ROWS, "seconds": seconds, "cpu": cpu, "how": how}


# ------------------------------------------------------------------------------------------------ sections
# main() prints each section in turn; a section takes the URL and returns its lines.


def summary(runs: list[dict]) -> dict:
    """Best (the least disturbed run) and median seconds of several runs, every time, the largest peak RSS."""
    times = sorted(r["seconds"] for r in runs)
    out = dict(runs[0], seconds=times[0], median=statistics.median(times), all=[r["seconds"] for r in runs])
    out["cpu"] = statistics.median(r["cpu"] for r in runs)
    if all("server_cpu" in r for r in runs):
        out["server_cpu"] = statistics.median(r["server_cpu"] for r in runs)
    if "peak_rss_mib" in out:
        out["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
    return out


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def extract_section(url: str, rounds: int = 7) -> list[str]:
    """lstmcast's extract, the ADBC driver alone and the server's COPY (of the issue's plain SELECT, and of
    the bounded SELECT the extract sends) run `rounds` times in turn, so all meet the same moments of a
    shared machine whose speed drifts by a third from minute to minute; best with best, median with median
    and each round's pair are compared. read_sql runs once."""
    runs: dict[str, list[dict]] = {"lstmcast": [], "adbc": [], "copy": [], "copy_bounded": []}
    for _ in range(rounds):
        runs["lstmcast"].append(run_child("lstmcast", url))
        runs["adbc"].append(run_child("adbc", url))
        runs["copy"].append(copy_rate(url))
        runs["copy_bounded"].append(copy_rate(url, BOUNDED_SELECT))
    results = {name: summary(r) for name, r in runs.items()}
    results["read_sql"] = run_child("read_sql", url)
    labels = {
        "lstmcast": "lstmcast extract (full, ADBC -> Parquet)",
        "adbc": "ADBC driver alone, the extract's bounded SELECT, batches discarded",
        "read_sql": "pandas.read_sql (SQLAlchemy + psycopg)",
        "copy": f"{results['copy']['how']} (the issue's baseline)",
        "copy_bounded": f"{results['copy']['how']}, with the extract's `ts <=` bound",
    }
    lines = ["## extract: read the whole table", ""]
    lines += ["| reader | rows | best s | median s | rows/s (best) | all runs, s | client CPU s | peak RSS |"]
    lines.append("|---|---|---|---|---|---|---|---|")
    for name in ("lstmcast", "adbc", "read_sql", "copy", "copy_bounded"):
        r = results[name]
        rss = f"{r['peak_rss_mib'] / 1024:.2f} GB" if "peak_rss_mib" in r else "-"
        median = f"{r['median']:.2f}" if "median" in r else "-"
        every = ", ".join(f"{t:.2f}" for t in r["all"]) if "all" in r else "-"
        rate = r["rows"] / r["seconds"] / 1e6
        row = [labels[name], f"{r['rows']:,}", f"{r['seconds']:.2f}", median, f"{rate:.2f} M", every]
        row += [f"{r['cpu']:.2f}", rss]
        lines.append("| " + " | ".join(row) + " |")
    ours = results["lstmcast"]
    vs_pandas = results["read_sql"]["seconds"] / ours["median"]
    best = results["copy"]["seconds"] / ours["seconds"]
    typical = results["copy"]["median"] / ours["median"]
    bounded = results["copy_bounded"]["seconds"] / ours["seconds"]
    bounded_typical = results["copy_bounded"]["median"] / ours["median"]
    # each round's extract against the COPY right after it: drift between rounds cancels out
    paired = [c["seconds"] / e["seconds"] for e, c in zip(runs["lstmcast"], runs["copy"], strict=True)]
    rss_gb = ours["peak_rss_mib"] / 1024
    lines += [
        "",
        f"extract (median) vs read_sql: {vs_pandas:.1f}x (target >= 10x: {verdict(vs_pandas >= 10)})",
        f"extract vs COPY, best with best: {best:.1%} (target >= 80%: {verdict(best >= 0.8)})",
        f"extract vs COPY, median with median: {typical:.1%} (target >= 80%: {verdict(typical >= 0.8)})",
        f"extract vs COPY, round by round: median {statistics.median(paired):.1%} "
        f"(target >= 80%: {verdict(statistics.median(paired) >= 0.8)}); rounds "
        + ", ".join(f"{r:.0%}" for r in paired),
        f"extract vs COPY of the same bounded SELECT: best with best {bounded:.1%}, "
        f"median with median {bounded_typical:.1%}",
        f"extract peak RSS: {rss_gb:.2f} GB (target <= 1 GB: {verdict(rss_gb <= 1)})",
    ]
    if "server_cpu" in results["adbc"]:
        lines.append(
            f"server backend CPU under the ADBC reader (median): {results['adbc']['server_cpu']:.2f} s"
        )
    return lines


def publish_section(url: str) -> list[str]:
    from benchmarks.publish_load import publish_benchmark

    return ["## publish: 480,000 forecast rows", "", *publish_benchmark(url)]


SECTIONS: dict[str, Callable[[str], list[str]]] = {"extract": extract_section, "publish": publish_section}


def versions(url: str) -> str:
    """The server's and the client libraries' versions: the driver's build decides much of the extract."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            server = conn.execute(sa.text("show server_version")).scalar_one()
    finally:
        engine.dispose()
    names = ["adbc-driver-postgresql", "pyarrow", "pgpq", "psycopg", "pandas", "sqlalchemy"]
    return f"PostgreSQL {server}; " + ", ".join(f"{n} {metadata.version(n)}" for n in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=pg_url(), help="SQLAlchemy URL of the PostgreSQL database")
    parser.add_argument("--child", choices=sorted(READERS), help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=["extract", "publish"], help="run one section")
    args = parser.parse_args()
    if args.child:
        rows, seconds, cpu = READERS[args.child](args.url)
        print(json.dumps({"rows": rows, "seconds": seconds, "cpu": cpu, "peak_rss_mib": peak_rss_mib()}))
        return
    rows, built = build_table(args.url)
    print(f"table {TABLE}: {rows:,} rows" + (f" (built in {built:.1f} s)" if built else " (reused)"))
    print(f"{os.cpu_count()} CPU cores; PostgreSQL at {sa.engine.make_url(args.url).render_as_string()}")
    print(versions(args.url) + "\n")
    for name, section in SECTIONS.items():
        if args.only in (None, name):
            print("\n".join(section(args.url)) + "\n", flush=True)


if __name__ == "__main__":
    main()
