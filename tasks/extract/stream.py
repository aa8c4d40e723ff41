"""Reading the source, part two: the rows with lower < timestamp <= upper as Arrow tables in the extract
schema, with the bounds written for each dialect. PostgreSQL is read through the ADBC driver (COPY binary
into Arrow batches) when the postgres extra is installed, every other database through SQLAlchemy in
chunks; memory follows the batch size, not the table."""

from __future__ import annotations

import importlib.util
import queue
import threading
from collections.abc import Iterator
from contextlib import closing

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from tasks._log import warn_once
from tasks.db import AdbcError, create_engine, is_postgres, libpq_uri
from tasks.extract.source import (
    ReadStats,
    check_arrow_types,
    extract_schema,
    is_text,
    numeric_columns,
    parse_timestamps,
    read_error,
    source_selectable,
)
from tasks.parsing import NON_NUMERIC_COLUMN, ZONE_COLUMN, to_float, zone_of_type
from tasks.sections import SourceConfig

# PostgreSQL's own placeholders ($1, ...), so that a '%' in a configured query reaches the server unescaped.
_PG_DIALECT = postgresql.dialect(paramstyle="numeric_dollar")


BATCH_HINT_OPTION = "adbc.postgresql.batch_size_hint_bytes"


def _select(source: sa.FromClause, src: SourceConfig) -> sa.Select:
    return sa.select(*(source.c[name] for _, name in src.column_roles()))


def _where_postgres(
    stmt: sa.Select, ts: sa.ColumnElement, lower: pd.Timestamp | None, upper: pd.Timestamp
) -> sa.Select:
    """Bounds as `CAST('<ISO timestamp>' AS TIMESTAMP WITH TIME ZONE)`: the text comes from a pandas
    Timestamp, never from the config, and is quoted by SQLAlchemy's literal renderer."""

    def literal(t: pd.Timestamp) -> sa.ColumnElement:
        return sa.cast(sa.literal(t.isoformat(), sa.String()), postgresql.TIMESTAMP(timezone=True))

    stmt = stmt.where(ts <= literal(upper))
    return stmt if lower is None else stmt.where(ts > literal(lower))


def _where_native(
    stmt: sa.Select, ts: sa.ColumnElement, lower: pd.Timestamp | None, upper: pd.Timestamp
) -> sa.Select:
    """Bounds for databases with a native timestamp type; the values are bound parameters."""
    stmt = stmt.where(ts <= upper.to_pydatetime())
    return stmt if lower is None else stmt.where(ts > lower.to_pydatetime())


def _where_sqlite(
    stmt: sa.Select, ts: sa.ColumnElement, lower: pd.Timestamp | None, upper: pd.Timestamp
) -> sa.Select:
    """SQLite keeps timestamps as text in any ISO form (with or without a UTC offset), so bounds compare
    julianday(), which SQLite computes to the millisecond; the exact bounds are applied again after parsing,
    and text SQLite cannot parse is read and reported rather than silently left out."""

    def text(t: pd.Timestamp) -> str:
        t = t.tz_convert("UTC")
        return f"{t.strftime('%Y-%m-%d %H:%M:%S')}.{t.microsecond // 1000:03d}"

    day = sa.func.julianday(ts)
    stmt = stmt.where(
        sa.or_(day <= sa.func.julianday(text(upper + pd.Timedelta(milliseconds=1))), day.is_(None))
    )
    if lower is not None:
        stmt = stmt.where(sa.or_(day > sa.func.julianday(text(lower)), day.is_(None)))
    return stmt


def _coerce_numeric(raw: pd.Series, col: str, stats: ReadStats) -> tuple[np.ndarray, np.ndarray]:
    """Text values as float64 and which rows held text that is no number (now missing)."""
    values, bad = to_float(raw)
    if bad.any():
        stats.non_numeric[col] = stats.non_numeric.get(col, 0) + int(bad.sum())
        stats.first_bad.setdefault(col, raw[bad].iloc[0])
    stats.numeric_seen[col] = stats.numeric_seen.get(col, 0) + int((~np.isnan(values)).sum())
    return values, bad


def _frame_to_table(df: pd.DataFrame, src: SourceConfig, stats: ReadStats) -> pa.Table:
    """One chunk of Python rows (any column types) as an Arrow table in the extract schema."""
    keyless = df[src.series_id].isna() | df[src.timestamp].isna()
    stats.dropped += int(keyless.sum())
    df = df[~keyless].reset_index(drop=True)
    ts, zone = parse_timestamps(df[src.timestamp], src)
    out = pd.DataFrame({"series_id": df[src.series_id].astype(str), "ts": ts})
    non_numeric = np.zeros(len(df), dtype=np.int16)
    for col in numeric_columns(src):
        out[col], bad = _coerce_numeric(df[col], col, stats)
        non_numeric += bad
    out[ZONE_COLUMN], out[NON_NUMERIC_COLUMN] = zone, non_numeric
    return pa.Table.from_pandas(out, schema=extract_schema(src), preserve_index=False)


def _sqlalchemy_tables(
    engine: sa.Engine, stmt: sa.Select, src: SourceConfig, batch_rows: int, stats: ReadStats
) -> Iterator[pa.Table]:
    names = [name for _, name in src.column_roles()]
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":  # timestamptz values arrive in UTC, not the session's zone
            conn.execute(sa.text("SET TIME ZONE 'UTC'"))
        result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(stmt)
        for chunk in result.partitions(batch_rows):
            stats.rows_read += len(chunk)
            yield _frame_to_table(pd.DataFrame(chunk, columns=names), src, stats)


def batch_to_table(batch: pa.RecordBatch, src: SourceConfig, stats: ReadStats) -> pa.Table:
    """One typed Arrow batch in the extract schema: native casts, text parsed as the SQLite path does."""
    keyless = pc.or_(pc.is_null(batch.column(src.series_id)), pc.is_null(batch.column(src.timestamp)))
    n_keyless = pc.sum(keyless).as_py() or 0
    if n_keyless:
        stats.dropped += n_keyless
        batch = batch.filter(pc.invert(keyless))
    ts = batch.column(src.timestamp)
    if is_text(ts.type):
        parsed, zone = parse_timestamps(ts.to_pandas(), src)
        ts = pa.array(parsed, pa.timestamp("us", tz="UTC"))
    elif pa.types.is_timestamp(ts.type) and ts.type.tz is not None:
        zone = zone_of_type(ts.type.tz, len(ts))
        ts = ts.cast(pa.timestamp("us", tz=ts.type.tz)).cast(pa.timestamp("us", tz="UTC"))
    else:  # naive timestamps and dates are taken as UTC, as everywhere else in lstmcast
        zone = zone_of_type(None, len(ts))
        ts = ts.cast(pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC"))
    columns = [batch.column(src.series_id).cast(pa.string()), ts]
    non_numeric = np.zeros(len(ts), dtype=np.int16)
    for col in numeric_columns(src):
        values = batch.column(col)
        if is_text(values.type):
            floats, bad = _coerce_numeric(values.to_pandas(), col, stats)
            columns.append(pa.array(floats, pa.float64(), from_pandas=True))  # text that is no number: null
            non_numeric += bad
            continue
        values = values.cast(pa.float64())
        stats.numeric_seen[col] = stats.numeric_seen.get(col, 0) + len(values) - values.null_count
        columns.append(values)
    columns += [pa.array(zone, pa.int8()), pa.array(non_numeric, pa.int16())]
    return pa.Table.from_arrays(columns, schema=extract_schema(src))


def _prefetch(items: Iterator[pa.RecordBatch], depth: int = 2) -> Iterator[pa.RecordBatch]:
    """Fetch the next batches in a thread while the caller encodes the current one: the driver's reads
    and Parquet encoding both release the GIL, so the two overlap. At most `depth` batches wait."""
    waiting: queue.Queue = queue.Queue(maxsize=depth)
    stop, end = threading.Event(), object()

    def put(item: object) -> None:
        while not stop.is_set():
            try:
                waiting.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def produce() -> None:
        try:
            for item in items:
                put(item)
                if stop.is_set():
                    return
            put(end)
        except BaseException as exc:  # handed to the consumer, which raises it
            put(exc)

    thread = threading.Thread(target=produce, name="lstmcast-fetch", daemon=True)
    thread.start()
    try:
        while (item := waiting.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def use_adbc(url: str) -> bool:
    """PostgreSQL is read through ADBC when its driver is installed (the postgres extra), else SQLAlchemy."""
    return is_postgres(url) and importlib.util.find_spec("adbc_driver_postgresql") is not None


def _adbc_tables(
    url: str, stmt: sa.Select, src: SourceConfig, batch_rows: int, stats: ReadStats
) -> Iterator[pa.Table]:
    """PostgreSQL through ADBC: the driver reads COPY binary output into Arrow batches of bounded size."""
    import adbc_driver_postgresql.dbapi as adbc

    # No bound parameters: ADBC runs a statement with parameters as a prepared query without COPY, which
    # holds the whole result in memory. The only literals are the bounds, typed casts of ISO strings.
    sql = str(stmt.compile(dialect=_PG_DIALECT, compile_kwargs={"literal_binds": True}))
    with adbc.connect(libpq_uri(url)) as conn, conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")  # timestamps without time zone are compared as UTC
        # batches of about batch_rows narrow rows: memory follows the batch size, not the table
        cur.adbc_statement.set_options(**{BATCH_HINT_OPTION: str(max(1 << 14, batch_rows * 40))})
        cur.execute(sql)
        reader = cur.fetch_record_batch()
        batches = _prefetch(reader)
        try:  # the fetching thread is stopped before the connection closes, however this ends
            first = True
            for batch in batches:
                if first:
                    check_arrow_types(reader.schema, batch, src)
                    first = False
                stats.rows_read += batch.num_rows
                yield batch_to_table(batch, src, stats)
            if first:
                check_arrow_types(reader.schema, None, src)
        finally:
            batches.close()


def _within(table: pa.Table, lower: pd.Timestamp | None, upper: pd.Timestamp) -> pa.Table:
    """The rows with lower < ts <= upper. The database applied the bounds already (SQLite only to the
    millisecond), so a batch is copied only when its extremes show rows outside them."""
    if table.num_rows == 0:
        return table
    ts_type = pa.timestamp("us", tz="UTC")
    extremes = pc.min_max(table.column("ts"))
    low, high = extremes["min"], extremes["max"]
    if high.as_py() <= upper and (lower is None or low.as_py() > lower):
        return table
    keep = pc.less_equal(table.column("ts"), pa.scalar(upper, ts_type))
    if lower is not None:
        keep = pc.and_(keep, pc.greater(table.column("ts"), pa.scalar(lower, ts_type)))
    return table.filter(keep)


def read_source(
    url: str,
    src: SourceConfig,
    lower: pd.Timestamp | None,
    upper: pd.Timestamp,
    batch_rows: int,
    stats: ReadStats,
) -> Iterator[pa.Table]:
    """The source rows with lower < timestamp <= upper, as Arrow tables in the extract schema."""
    engine = create_engine(url)
    try:
        source = source_selectable(engine, src)
        stmt, ts = _select(source, src), source.c[src.timestamp]
        if engine.dialect.name == "sqlite":
            tables = _sqlalchemy_tables(engine, _where_sqlite(stmt, ts, lower, upper), src, batch_rows, stats)
        elif use_adbc(url):
            tables = _adbc_tables(url, _where_postgres(stmt, ts, lower, upper), src, batch_rows, stats)
        else:
            if is_postgres(url):
                warn_once(
                    "adbc", "no ADBC PostgreSQL driver: reading %s through SQLAlchemy, which is slower; "
                    "pip install 'lstmcast[postgres]'", src.label,
                )  # fmt: skip
            tables = _sqlalchemy_tables(engine, _where_native(stmt, ts, lower, upper), src, batch_rows, stats)
        with closing(tables):  # the database connection closes as soon as reading stops, however it stops
            for table in tables:
                yield _within(table, lower, upper)
    except (sa.exc.DBAPIError, AdbcError, OSError) as exc:  # OSError: the ADBC stream lost its connection
        error = read_error(exc, src, url)
        if error is exc:
            raise
        raise error from exc
    finally:
        engine.dispose()
