"""What the PostgreSQL server alone needs to take 480,000 forecast rows, the floor under lstmcast's publish.

The rows of benchmarks/publish_load.py are encoded once (pgpq, PostgreSQL's binary COPY format); each case
then sends the same bytes in one transaction and is timed from the first byte to the commit, so no client work
is counted. Plain tables: COPY into a table without a key; COPY into the table with the forecast table's
primary key, empty and holding the previous as-of (a nightly publish into a plain table); COPY, then the key
built (a plain table's first publish); replacing a whole as-of already there, by DELETE + INSERT ... SELECT
and by UPDATE ... FROM a staging table. lstmcast's default layout on PostgreSQL, a forecast table partitioned
by (pipeline, as_of): the as-of's rows go into a table of its own (the columns every row shares as its
defaults, so only the five varying columns are sent; COPY FREEZE; a check of (pipeline, as_of)), its key is
built and it is attached as a partition, next to the previous as-of's (nightly) or in place of the
partition of its as-of (a re-run, which drops that partition). Each case runs `--repeat` times. Last, two
pipelines publish in turn into one plain table for four as-ofs each (INSERT ... SELECT of the same rows),
under the forecast key and under the key order used before 2026-12-02, which puts the pipeline first:
seconds per publish and the key's index size.

Run from the repository root (PostgreSQL at $LSTMCAST_BENCH_PG_URL, else the local test database):
    .venv/bin/python -m benchmarks.publish_server_floor [--repeat 2]
"""

from __future__ import annotations

import argparse
import time
import uuid

import psycopg
import pyarrow as pa
import sqlalchemy as sa
from pgpq import ArrowToPostgresBinaryEncoder
from sqlalchemy.dialects import postgresql

from benchmarks.common import libpq_url
from benchmarks.publish_load import AS_OF, forecast_frame
from tasks.schemas import forecast_table

KEY = "as_of, pipeline, series_id, ts"
ADD_KEY = f"alter table bench_floor_t add primary key ({KEY})"
OLD_KEY = "pipeline, as_of, series_id, ts"  # the forecast table's key before 2026-12-02, for comparison


def encoded_rows(n_rows: int, names: list[str] | None = None) -> bytes:
    """The forecast rows with every column of the forecast table (or those `names`), as one binary COPY
    payload."""
    frame = forecast_frame(n_rows).assign(
        pipeline="bench", as_of=AS_OF, model_version="bench", run_id=uuid.uuid4().hex, created_at=AS_OF
    )
    names = names or [c.name for c in forecast_table("t", sa.MetaData()).columns]
    table = pa.Table.from_pandas(frame[names], preserve_index=False)
    for name in ("ts", "as_of", "created_at"):
        if name in names:
            stamps = table.column(name).cast(pa.timestamp("us", tz="UTC"))
            table = table.set_column(names.index(name), name, stamps)
    encoder = ArrowToPostgresBinaryEncoder(table.schema)
    parts = [encoder.write_header(), *(encoder.write_batch(b) for b in table.to_batches()), encoder.finish()]
    return b"".join(parts)


def columns_ddl() -> str:
    table = forecast_table("t", sa.MetaData(), keyed=False)
    dialect = postgresql.dialect()
    return ", ".join(f'"{c.name}" {c.type.compile(dialect=dialect)}' for c in table.columns)


Step = str | None | tuple[str, bytes]  # a statement; None: the COPY of the payload; (COPY statement, bytes)


def run_case(conn: psycopg.Connection, payload: bytes, setup: list[str], timed: list[Step]) -> float:
    """`setup` statements committed first; then the `timed` steps and the commit."""
    with conn.cursor() as cur:
        for statement in setup:
            cur.execute(statement)
    conn.commit()
    started = time.perf_counter()
    with conn.cursor() as cur:
        for step in timed:
            if step is None:
                step = ("COPY bench_floor_t FROM STDIN (FORMAT BINARY)", payload)
            if isinstance(step, tuple):
                with cur.copy(step[0]) as copy:
                    copy.write(step[1])
            else:
                cur.execute(step)
    conn.commit()
    return time.perf_counter() - started


def shared_table(conn: psycopg.Connection, key: str, days: int = 4) -> tuple[list[float], float]:
    """Pipelines 'alpha' and 'beta' publish in turn, one as-of a day, into one table keyed on `key`:
    seconds per publish and the index's size in MB. With the pipeline first, every publish of 'alpha' lands
    inside the index (pages split in half); with the as-of first, every publish appends at its right edge."""
    seconds = []
    with conn.cursor() as cur:
        cur.execute("drop table if exists bench_floor_t")
        cur.execute(f"create table bench_floor_t ({columns_ddl()}, primary key ({key}))")
        conn.commit()
        for day in range(days):
            for pipeline in ("alpha", "beta"):
                started = time.perf_counter()
                cur.execute(
                    f"insert into bench_floor_t select '{pipeline}', series_id, "
                    f"as_of + interval '{day} day', ts + interval '{day} day', yhat, yhat_lower, yhat_upper, "
                    "model_version, run_id, created_at from bench_floor_prev"
                )
                conn.commit()
                seconds.append(time.perf_counter() - started)
        cur.execute(
            "select pg_relation_size(indexrelid) from pg_index where indrelid = 'bench_floor_t'::regclass"
        )
        size = cur.fetchone()[0] / 1e6
    return seconds, size


Case = tuple[list[str], list[Step]]  # setup statements, committed first; then the timed steps


def fresh_table() -> list[str]:
    """Statements that leave bench_floor_t empty and without a key."""
    return ["drop table if exists bench_floor_t", f"create table bench_floor_t ({columns_ddl()})"]


def plain_cases(keyed: list[str]) -> dict[str, Case]:
    """COPY into a plain table: no key; keyed, empty and holding the previous as-of; the key built after."""
    fresh = fresh_table()
    # the nightly case as it meets a forecast table: the previous as-of is there already
    previous_as_of = (
        "insert into bench_floor_t select pipeline, series_id, as_of - interval '1 day', "
        "ts - interval '1 day', yhat, yhat_lower, yhat_upper, model_version, run_id, created_at "
        "from bench_floor_prev"
    )
    with_previous = [*keyed, previous_as_of, "analyze bench_floor_t"]
    return {
        "COPY, table without a key": (fresh, [None]),
        "COPY, table with the primary key, empty": (keyed, [None]),
        "COPY, keyed table holding the previous as-of (nightly)": (with_previous, [None]),
        "COPY, then the key built (first publish)": (fresh, [None, ADD_KEY]),
    }


def replace_cases() -> tuple[list[str], dict[str, list[Step]]]:
    """Replacing a whole as-of that a keyed plain table holds -> (the setup staging new values for every
    row, the timed steps of each way)."""
    # the as-of is there already (COPY committed), and a staging table holds new values for every row
    staged = [
        "drop table if exists bench_floor_stage",
        "create unlogged table bench_floor_stage as "
        "select series_id, ts, yhat + 1 as yhat, yhat_lower, yhat_upper from bench_floor_t",
        "analyze bench_floor_stage",
    ]
    same_as_of = "pipeline = 'bench' and as_of = (select min(as_of) from bench_floor_t)"
    return staged, {
        "replace the as-of: DELETE + INSERT ... SELECT": [
            f"delete from bench_floor_t where {same_as_of}",
            "insert into bench_floor_t select 'bench', series_id, timestamptz '2024-01-01 00:00+00', ts, "
            "yhat, yhat_lower, yhat_upper, 'v2', 'r', now() from bench_floor_stage",
        ],
        "replace the as-of: UPDATE ... FROM staging": [
            "update bench_floor_t set yhat = s.yhat, yhat_lower = s.yhat_lower, yhat_upper = s.yhat_upper, "
            "model_version = 'v2', run_id = 'r', created_at = now() from bench_floor_stage s "
            f"where bench_floor_t.{same_as_of.replace(' and as_of', ' and bench_floor_t.as_of')} "
            "and bench_floor_t.series_id = s.series_id and bench_floor_t.ts = s.ts",
        ],
    }


def bound(day: str) -> str:
    """The partition bound of pipeline 'bench' at the as-of midnight of `day`."""
    return f"for values from ('bench', '{day} 00:00+00') to ('bench', '{day} 00:00:00.000001+00')"


def partition_cases(n_rows: int) -> dict[str, Case]:
    """lstmcast's default layout: a forecast table partitioned by (pipeline, as_of), holding the previous
    as-of; the as-of's rows go into a table of their own, keyed and attached (publish.load_partition)."""
    previous = (
        "pipeline, series_id, as_of - interval '1 day', ts, yhat, yhat_lower, yhat_upper, model_version, "
        "run_id, created_at"
    )
    partitioned = [
        "drop table if exists bench_floor_p, bench_floor_t",
        f"create table bench_floor_p ({columns_ddl()}, primary key ({KEY})) "
        "partition by range (pipeline, as_of)",
        f"create table bench_floor_p_prev partition of bench_floor_p {bound('2023-12-31')}",
        f"insert into bench_floor_p select {previous} from bench_floor_prev",
        "analyze bench_floor_p_prev",
    ]
    # ... and the partition of the as-of itself, which a re-run replaces
    rerun = [
        *partitioned,
        f"create table bench_floor_p_cur partition of bench_floor_p {bound('2024-01-01')}",
        "insert into bench_floor_p select * from bench_floor_prev",
        "analyze bench_floor_p_cur",
    ]
    varying = ["series_id", "ts", "yhat", "yhat_lower", "yhat_upper"]
    varying_payload = encoded_rows(n_rows, varying)
    defaults = {
        "pipeline": "'bench'", "as_of": "'2024-01-01 00:00+00'", "model_version": "'bench'",
        "run_id": f"'{uuid.uuid4().hex}'", "created_at": "'2024-01-01 00:00+00'",
    }  # fmt: skip
    load = [
        f"create table bench_floor_t ({columns_ddl()}, check (pipeline = 'bench' and as_of = '2024-01-01Z'))",
        "alter table bench_floor_t " + ", ".join(f"alter {c} set default {v}" for c, v in defaults.items()),
        (f"COPY bench_floor_t ({', '.join(varying)}) FROM STDIN (FORMAT BINARY, FREEZE)", varying_payload),
        "alter table bench_floor_t " + ", ".join(f"alter {c} drop default" for c in defaults),
        ADD_KEY,
    ]
    attach = f"alter table bench_floor_p attach partition bench_floor_t {bound('2024-01-01')}"
    return {
        "partitioned: next as-of attached (nightly)": (partitioned, [*load, attach]),
        "partitioned: the as-of's partition replaced (re-run)": (
            rerun,
            [*load, "drop table bench_floor_p_cur", attach],
        ),
    }


def measure(conn: psycopg.Connection, payload: bytes, repeat: int, n_rows: int) -> dict[str, list[float]]:
    """Every case `repeat` times, in turn -> seconds of each run per case, in the order printed."""
    keyed = [*fresh_table(), ADD_KEY]
    cases = plain_cases(keyed)
    staged, replaces = replace_cases()
    partitioned = partition_cases(n_rows)
    results: dict[str, list[float]] = {}
    for _ in range(repeat):
        for name, (setup, timed) in cases.items():
            results.setdefault(name, []).append(run_case(conn, payload, setup, timed))
        for name, timed in replaces.items():
            run_case(conn, payload, keyed, [None])  # the as-of as the nightly publish left it
            results.setdefault(name, []).append(run_case(conn, payload, staged, timed))
        for name, (setup, timed) in partitioned.items():
            results.setdefault(name, []).append(run_case(conn, payload, setup, timed))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--rows", type=int, default=480_000)
    args = parser.parse_args()
    payload = encoded_rows(args.rows)
    with psycopg.connect(libpq_url()) as conn:
        try:
            run_case(conn, payload, fresh_table(), [None])  # the rows the previous as-of is made of
            with conn.cursor() as cur:
                cur.execute("drop table if exists bench_floor_prev")
                cur.execute("alter table bench_floor_t rename to bench_floor_prev")
            conn.commit()
            results = measure(conn, payload, args.repeat, args.rows)
            shared = {key: shared_table(conn, key) for key in (KEY, OLD_KEY)}
        finally:
            with conn.cursor() as cur:
                cur.execute(
                    "drop table if exists bench_floor_p, bench_floor_t, bench_floor_stage, bench_floor_prev"
                )
            conn.commit()
    print(f"{args.rows:,} rows, {len(payload) / 1e6:.1f} MB of binary COPY, server time to commit:")
    for name, seconds in results.items():
        print(f"  {name:<56} " + "  ".join(f"{s:5.2f} s" for s in seconds))
    print(
        "two pipelines publishing in turn into one table, four as-ofs each (seconds per publish, index size):"
    )
    for key, (seconds, size) in shared.items():
        print(f"  key ({key}): " + " ".join(f"{s:.2f}" for s in seconds) + f" s; index {size:,.0f} MB")


if __name__ == "__main__":
    main()
