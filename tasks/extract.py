"""Extract: stream the source table or query into Parquet, only rows known at `as_of`.

Rows travel as Arrow batches from the database to Parquet (PostgreSQL through the ADBC driver, which reads
with COPY in binary; other databases through SQLAlchemy in chunks), so memory is bounded by the batch size,
not by the table. Target and past-covariate values after `as_of` never leave this stage: the only rows kept
beyond `as_of` are the known-in-advance covariates for the forecast horizon, with everything else nulled.

Incremental runs keep a per-pipeline store under `data_dir/<pipeline>/store/` (one Parquet file per month
of the timestamp) and a watermark next to it: the latest source timestamp <= as-of already extracted. A
nightly run reads only rows after `watermark - source.reread_window`, replaces that time range in the store
(so late or corrected rows land, and nothing is duplicated) and then moves the watermark. Every file is
written to a hidden temp name and renamed into place, so readers never see a partial file.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.util
import json
import os
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa
from prefect import task
from prefect.tasks import exponential_backoff
from sqlalchemy.dialects import postgresql

from tasks.config import PipelineConfig, SourceConfig
from tasks.db import (
    AdbcError,
    create_engine,
    db_message,
    is_postgres,
    is_transient,
    libpq_uri,
    reflect_table,
    retry_if_transient,
    safe_url,
)
from tasks.parsing import NON_NUMERIC_COLUMN, ZONE_COLUMN, to_float, to_utc, zone_of_type

CHUNK_ROWS = 100_000
WATERMARK_FILE = "watermark.json"
STORE_DIR = "store"
# The store's file layout; a store written in another layout is filled afresh from the source.
# 2: the per-row marks of what parsing repaired (tasks.parsing.MARK_COLUMNS).
STORE_LAYOUT = 2
# PostgreSQL's own placeholders ($1, ...), so that a '%' in a configured query reaches the server unescaped.
_PG_DIALECT = postgresql.dialect(paramstyle="numeric_dollar")
BATCH_HINT_OPTION = "adbc.postgresql.batch_size_hint_bytes"


class SourceQueryError(RuntimeError):
    """The database refused the read (bad SQL, missing database, no permission): retrying will not help."""


class SourceUnavailable(ConnectionError):
    """The source database could not be reached or dropped the connection: a retry may succeed."""


@dataclass(frozen=True)
class ExtractResult:
    path: str
    as_of: str
    rows: int
    future_rows: int
    series: int
    dropped_without_key: int
    non_numeric: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    rows_read: int = 0  # rows that came from the database in this run (all of them, or only the new ones)
    mode: str = "full"  # full | incremental | backfill
    watermark: str | None = None


@dataclass
class _ReadStats:
    rows_read: int = 0
    dropped: int = 0
    non_numeric: dict[str, int] = field(default_factory=dict)
    numeric_seen: dict[str, int] = field(default_factory=dict)
    first_bad: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Watermark:
    source: str  # fingerprint of the source the store was filled from
    watermark: pd.Timestamp


def run_dir(cfg: PipelineConfig, as_of: pd.Timestamp) -> Path:
    """Where one as-of's intermediate files live: one folder per pipeline and as-of date."""
    return Path(cfg.data.data_dir) / cfg.name / f"as_of={as_of.strftime('%Y%m%dT%H%M%S')}"


def pipeline_dir(cfg: PipelineConfig) -> Path:
    return Path(cfg.data.data_dir) / cfg.name


def parse_as_of(value: str | pd.Timestamp) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except ValueError:
        raise ValueError(
            f"as_of {value!r} is not a timestamp (expected e.g. 2018-06-26 or 2018-06-26T19:00)"
        ) from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _source_selectable(engine: sa.Engine, src: SourceConfig) -> sa.FromClause:
    """The source as a FROM clause whose configured columns are checked to exist."""
    wanted = [name for _, name in src.column_roles()]
    if src.table is not None:
        table = reflect_table(engine, src.table)
        for role, name in src.column_roles():
            if name not in table.c:
                raise LookupError(
                    f"table {src.table!r} has no column {name!r} (configured as source.{role}); "
                    f"its columns are {sorted(table.c.keys())}"
                )
        _check_declared_types(engine, table, src)
        return table
    with engine.connect() as conn:
        probe = conn.execute(
            sa.select(sa.text("*")).select_from(sa.text(f"({src.query}) AS lstmcast_probe")).limit(0)
        )
        present = list(probe.keys())
    for role, name in src.column_roles():
        if name not in present:
            raise LookupError(
                f"the source query returns no column {name!r} (configured as source.{role}); "
                f"it returns {present}"
            )
    return sa.text(src.query).columns(*(sa.column(n) for n in wanted)).subquery("lstmcast_source")


def _show(value: object) -> str:
    """A value for an error message: timestamps in ISO form, anything else as Python writes it."""
    return value.isoformat() if isinstance(value, datetime.date) else repr(value)


_TIMESTAMP_TYPES = (sa.DateTime, sa.Date, sa.types.NullType)
_NUMERIC_TYPES = (sa.Numeric, sa.Float, sa.Integer, sa.Boolean, sa.String, sa.types.NullType)


def _check_declared_types(engine: sa.Engine, table: sa.Table, src: SourceConfig) -> None:
    """Columns whose declared type can never hold a timestamp or a number, named with an example value.

    Text in a numeric column is let through: it is parsed row by row and bad values are counted (or reported
    when none parse). Text timestamps are SQLite's norm; elsewhere the bounds are compared in the database,
    which needs a timestamp type."""
    text_ok = (sa.String,) if engine.dialect.name == "sqlite" else ()
    wanted = [(src.timestamp, _TIMESTAMP_TYPES + text_ok, "a timestamp")]
    wanted += [(c, _NUMERIC_TYPES, "a number") for c in _numeric_columns(src)]
    for name, allowed, what in wanted:
        column = table.c[name]
        if isinstance(column.type, allowed):
            continue
        try:
            declared = column.type.compile(dialect=engine.dialect)
        except sa.exc.CompileError:
            declared = type(column.type).__name__
        with engine.connect() as conn:
            value = conn.execute(sa.select(column).where(column.is_not(None)).limit(1)).scalar()
        example = f" (first value: {_show(value)})" if value is not None else ""
        raise TypeError(f"{src.label}: column {name!r} has database type {declared}, not {what}{example}")


def _parse_timestamps(values: pd.Series, src: SourceConfig) -> tuple[pd.Series, np.ndarray]:
    """UTC timestamps and each row's zone mark (text, or datetimes from the driver, row by row); a value
    that is no timestamp stops the read."""
    parsed, zone = to_utc(values)
    bad = parsed.isna() & values.notna()
    if bad.any():
        raise ValueError(
            f"{src.label}: column {src.timestamp!r} has a value that is not a timestamp: "
            f"{values[bad].iloc[0]!r}"
        )
    return parsed, zone


def _read_error(exc: Exception, src: SourceConfig, url: str) -> Exception:
    """A failed read restated with the source and its database (password hidden): SourceUnavailable when
    a retry may help, SourceQueryError when it cannot; anything else that is not the database's is kept."""
    message = f"reading {src.label} from {safe_url(url)} failed: {db_message(exc)}"
    if is_transient(exc):
        return SourceUnavailable(message)
    return SourceQueryError(message) if isinstance(exc, (sa.exc.DBAPIError, AdbcError)) else exc


def last_timestamp(url: str, src: SourceConfig) -> pd.Timestamp:
    """The latest timestamp that has a target value: the default as-of of a nightly run."""
    engine = create_engine(url)
    try:
        source = _source_selectable(engine, src)
        stmt = sa.select(sa.func.max(source.c[src.timestamp])).where(source.c[src.target].is_not(None))
        with engine.connect() as conn:
            value = conn.execute(stmt).scalar()
    except sa.exc.DBAPIError as exc:
        raise _read_error(exc, src, url) from exc
    finally:
        engine.dispose()
    if value is None:
        raise ValueError(f"{src.label} has no rows with a value in column {src.target!r}")
    return _parse_timestamps(pd.Series([value]), src)[0].iloc[0]


def _numeric_columns(src: SourceConfig) -> list[str]:
    return [src.target, *src.covariates, *src.future_covariates]


def _schema(src: SourceConfig) -> pa.Schema:
    return pa.schema(
        [pa.field("series_id", pa.string()), pa.field("ts", pa.timestamp("us", tz="UTC"))]
        + [pa.field(c, pa.float64()) for c in _numeric_columns(src)]
        + [pa.field(ZONE_COLUMN, pa.int8()), pa.field(NON_NUMERIC_COLUMN, pa.int16())]
    )


# ---------------------------------------------------------------------------------------------- reading


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


def _coerce_numeric(raw: pd.Series, col: str, stats: _ReadStats) -> tuple[np.ndarray, np.ndarray]:
    """Text values as float64 and which rows held text that is no number (now missing)."""
    values, bad = to_float(raw)
    if bad.any():
        stats.non_numeric[col] = stats.non_numeric.get(col, 0) + int(bad.sum())
        stats.first_bad.setdefault(col, raw[bad].iloc[0])
    stats.numeric_seen[col] = stats.numeric_seen.get(col, 0) + int((~np.isnan(values)).sum())
    return values, bad


def _frame_to_table(df: pd.DataFrame, src: SourceConfig, stats: _ReadStats) -> pa.Table:
    """One chunk of Python rows (any column types) as an Arrow table in the extract schema."""
    keyless = df[src.series_id].isna() | df[src.timestamp].isna()
    stats.dropped += int(keyless.sum())
    df = df[~keyless].reset_index(drop=True)
    ts, zone = _parse_timestamps(df[src.timestamp], src)
    out = pd.DataFrame({"series_id": df[src.series_id].astype(str), "ts": ts})
    non_numeric = np.zeros(len(df), dtype=np.int16)
    for col in _numeric_columns(src):
        out[col], bad = _coerce_numeric(df[col], col, stats)
        non_numeric += bad
    out[ZONE_COLUMN], out[NON_NUMERIC_COLUMN] = zone, non_numeric
    return pa.Table.from_pandas(out, schema=_schema(src), preserve_index=False)


def _sqlalchemy_tables(
    engine: sa.Engine, stmt: sa.Select, src: SourceConfig, batch_rows: int, stats: _ReadStats
) -> Iterator[pa.Table]:
    names = [name for _, name in src.column_roles()]
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":  # timestamptz values arrive in UTC, not the session's zone
            conn.execute(sa.text("SET TIME ZONE 'UTC'"))
        result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(stmt)
        for chunk in result.partitions(batch_rows):
            stats.rows_read += len(chunk)
            yield _frame_to_table(pd.DataFrame(chunk, columns=names), src, stats)


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _check_arrow_types(schema: pa.Schema, first: pa.RecordBatch | None, src: SourceConfig) -> None:
    """Column types the extract cannot turn into timestamps or numbers, named before anything is written."""

    def example(col: str) -> str:
        if first is None:
            return ""
        values = [v for v in first.column(col).to_pylist() if v is not None]
        return f" (first value: {_show(values[0])})" if values else ""

    t = schema.field(src.timestamp).type
    if not (pa.types.is_timestamp(t) or pa.types.is_date(t) or _is_text(t) or pa.types.is_null(t)):
        raise TypeError(
            f"{src.label}: column {src.timestamp!r} has database type {t}, not a timestamp"
            f"{example(src.timestamp)}"
        )
    for col in _numeric_columns(src):
        t = schema.field(col).type
        if not (
            pa.types.is_integer(t)
            or pa.types.is_floating(t)
            or pa.types.is_decimal(t)
            or pa.types.is_boolean(t)
            or _is_text(t)
            or pa.types.is_null(t)
        ):
            raise TypeError(f"{src.label}: column {col!r} has database type {t}, not a number{example(col)}")


def _batch_to_table(batch: pa.RecordBatch, src: SourceConfig, stats: _ReadStats) -> pa.Table:
    """One typed Arrow batch in the extract schema: native casts, text parsed as the SQLite path does."""
    keyless = pc.or_(pc.is_null(batch.column(src.series_id)), pc.is_null(batch.column(src.timestamp)))
    n_keyless = pc.sum(keyless).as_py() or 0
    if n_keyless:
        stats.dropped += n_keyless
        batch = batch.filter(pc.invert(keyless))
    ts = batch.column(src.timestamp)
    if _is_text(ts.type):
        parsed, zone = _parse_timestamps(ts.to_pandas(), src)
        ts = pa.array(parsed, pa.timestamp("us", tz="UTC"))
    elif pa.types.is_timestamp(ts.type) and ts.type.tz is not None:
        zone = zone_of_type(ts.type.tz, len(ts))
        ts = ts.cast(pa.timestamp("us", tz=ts.type.tz)).cast(pa.timestamp("us", tz="UTC"))
    else:  # naive timestamps and dates are taken as UTC, as everywhere else in lstmcast
        zone = zone_of_type(None, len(ts))
        ts = ts.cast(pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC"))
    columns = [batch.column(src.series_id).cast(pa.string()), ts]
    non_numeric = np.zeros(len(ts), dtype=np.int16)
    for col in _numeric_columns(src):
        values = batch.column(col)
        if _is_text(values.type):
            floats, bad = _coerce_numeric(values.to_pandas(), col, stats)
            columns.append(pa.array(floats, pa.float64(), from_pandas=True))  # text that is no number: null
            non_numeric += bad
            continue
        values = values.cast(pa.float64())
        stats.numeric_seen[col] = stats.numeric_seen.get(col, 0) + len(values) - values.null_count
        columns.append(values)
    columns += [pa.array(zone, pa.int8()), pa.array(non_numeric, pa.int16())]
    return pa.Table.from_arrays(columns, schema=_schema(src))


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
    url: str, stmt: sa.Select, src: SourceConfig, batch_rows: int, stats: _ReadStats
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
                    _check_arrow_types(reader.schema, batch, src)
                    first = False
                stats.rows_read += batch.num_rows
                yield _batch_to_table(batch, src, stats)
            if first:
                _check_arrow_types(reader.schema, None, src)
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


def _read_source(
    url: str,
    src: SourceConfig,
    lower: pd.Timestamp | None,
    upper: pd.Timestamp,
    batch_rows: int,
    stats: _ReadStats,
) -> Iterator[pa.Table]:
    """The source rows with lower < timestamp <= upper, as Arrow tables in the extract schema."""
    engine = create_engine(url)
    try:
        source = _source_selectable(engine, src)
        stmt, ts = _select(source, src), source.c[src.timestamp]
        if engine.dialect.name == "sqlite":
            tables = _sqlalchemy_tables(engine, _where_sqlite(stmt, ts, lower, upper), src, batch_rows, stats)
        elif use_adbc(url):
            tables = _adbc_tables(url, _where_postgres(stmt, ts, lower, upper), src, batch_rows, stats)
        else:
            tables = _sqlalchemy_tables(engine, _where_native(stmt, ts, lower, upper), src, batch_rows, stats)
        with closing(tables):  # the database connection closes as soon as reading stops, however it stops
            for table in tables:
                yield _within(table, lower, upper)
    except (sa.exc.DBAPIError, AdbcError, OSError) as exc:  # OSError: the ADBC stream lost its connection
        error = _read_error(exc, src, url)
        if error is exc:
            raise
        raise error from exc
    finally:
        engine.dispose()


def _check_numeric(src: SourceConfig, stats: _ReadStats) -> None:
    for col, bad in stats.non_numeric.items():
        if bad and stats.numeric_seen.get(col, 0) == 0:
            raise TypeError(
                f"{src.label}: column {col!r} holds no numeric values (first value: {stats.first_bad[col]!r})"
            )


# ---------------------------------------------------------------------------------------------- writing


def _month_end(month: str) -> pd.Timestamp:
    """The first instant after `month` (files hold timestamps strictly before it)."""
    return pd.Timestamp(f"{month}-01", tz="UTC") + pd.offsets.MonthBegin(1)


# Dictionary-encode only the series ids: timestamps and values are nearly all distinct, and dictionary
# pages for them cost more time than they save space.
# Statistics only for the timestamps, which readers of a date range filter on; the files of a month are
# written in source order, so min/max of the series ids would select nothing and cost encoding time.
PARQUET_OPTIONS = {"compression": "snappy", "use_dictionary": ["series_id"], "write_statistics": ["ts"]}


def write_error(path: Path, exc: OSError) -> OSError:
    """`exc` restated with the file being written (pyarrow's messages name none); the errno is kept, so a
    full disk still reads as ENOSPC."""
    if exc.errno is None:
        return OSError(f"cannot write {path}: {exc}")
    return OSError(exc.errno, f"cannot write {path}: {os.strerror(exc.errno)}")


def _write_parquet(table: pa.Table, path: Path) -> None:
    try:
        pq.write_table(table, path, **PARQUET_OPTIONS)
    except OSError as exc:
        raise write_error(path, exc) from exc


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _months_between(first_us: int, last_us: int) -> tuple[list[str], np.ndarray]:
    """The UTC months from the one holding `first_us` to the one holding `last_us` (microseconds since
    the epoch), as "YYYY-MM" labels, and the instants (microseconds) where the second and later begin."""
    first = _EPOCH + datetime.timedelta(microseconds=first_us)
    last = _EPOCH + datetime.timedelta(microseconds=last_us)
    year, month = first.year, first.month
    labels, starts = [], []
    while (year, month) <= (last.year, last.month):
        labels.append(f"{year:04d}-{month:02d}")
        start = datetime.datetime(year, month, 1, tzinfo=datetime.UTC) - _EPOCH
        starts.append(start // datetime.timedelta(microseconds=1))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return labels, np.asarray(starts[1:], dtype=np.int64)


# Rows that arrive in runs of one month this long on average (sorted by time, or by series and then time)
# are copied out run by run; shorter runs are gathered by a sort. Both keep the rows' order within a month.
MIN_MEAN_RUN = 64


def _split_by_month(table: pa.Table) -> Iterator[tuple[str, pa.Table]]:
    """The rows of `table` grouped by UTC month, from month boundaries found by binary search (much
    cheaper than computing a calendar month for every row)."""
    micros = table.column("ts").cast(pa.int64()).to_numpy()
    labels, bounds = _months_between(int(micros.min()), int(micros.max()))
    if len(labels) == 1:
        yield labels[0], table
        return
    which = np.searchsorted(bounds, micros, side="right").astype(np.int16)
    starts = np.flatnonzero(which[1:] != which[:-1]) + 1
    if len(starts) < len(which) // MIN_MEAN_RUN:  # long runs of one month: copy them out in order
        starts = np.concatenate(([0], starts))
        ends = np.append(starts[1:], len(which))
        runs: dict[int, list[pa.Table]] = {}
        for start, end, k in zip(starts.tolist(), ends.tolist(), which[starts].tolist(), strict=True):
            runs.setdefault(k, []).append(table.slice(start, end - start))
        for k in sorted(runs):
            yield labels[k], pa.concat_tables(runs[k]).combine_chunks()
        return
    order = np.argsort(which, kind="stable")
    counts = np.bincount(which, minlength=len(labels))
    ordered = table.take(pa.array(order))
    start = 0
    for label, n in zip(labels, counts.tolist(), strict=True):
        if n:
            yield label, ordered.slice(start, n)
        start += n


class _MonthFiles:
    """One Parquet writer per month of the timestamp, each writing a hidden temp file in `folder`."""

    def __init__(self, folder: Path, schema: pa.Schema) -> None:
        self.folder, self.schema = folder, schema
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.paths: dict[str, Path] = {}

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        for month, part in _split_by_month(table):
            if month not in self.writers:
                self.paths[month] = self.folder / f".{month}.{uuid.uuid4().hex}.tmp"
            try:
                if month not in self.writers:
                    self.writers[month] = pq.ParquetWriter(self.paths[month], self.schema, **PARQUET_OPTIONS)
                self.writers[month].write_table(part)
            except OSError as exc:
                raise write_error(self.paths[month], exc) from exc

    def close(self) -> dict[str, Path]:
        writers, self.writers = self.writers, {}
        for month, writer in writers.items():
            try:
                writer.close()
            except OSError as exc:
                raise write_error(self.paths[month], exc) from exc
        return self.paths


def _null_future(table: pa.Table, src: SourceConfig, as_of: pd.Timestamp) -> pa.Table:
    """Rows after as_of keep only their known-in-advance covariates."""
    future = pc.greater(table.column("ts"), pa.scalar(as_of, pa.timestamp("us", tz="UTC")))
    if not pc.any(future).as_py():
        return table
    for col in (src.target, *src.covariates):
        i = table.schema.get_field_index(col)
        table = table.set_column(i, col, pc.if_else(future, pa.scalar(None, pa.float64()), table.column(col)))
    return table


@dataclass
class _Counts:
    rows: int = 0
    future_rows: int = 0
    series: set[str] = field(default_factory=set)

    def add(self, table: pa.Table, as_of: pd.Timestamp) -> None:
        future = pc.sum(
            pc.greater(table.column("ts"), pa.scalar(as_of, pa.timestamp("us", tz="UTC")))
        ).as_py()
        self.future_rows += future or 0
        self.rows += table.num_rows - (future or 0)
        self.series.update(pc.unique(table.column("series_id")).to_pylist())


def _swap_dir(tmp: Path, final: Path) -> None:
    """Put the finished folder `tmp` in place of `final` (a folder or a file from older versions)."""
    old = final.with_name(f".{final.name}.{uuid.uuid4().hex}.old")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.is_dir():
        shutil.rmtree(old)
    else:
        old.unlink(missing_ok=True)


def _publish_months(files: dict[str, Path], folder: Path) -> None:
    for month, path in files.items():
        os.replace(path, folder / f"{month}.parquet")


# ---------------------------------------------------------------------------------------------- watermark


def source_fingerprint(src: SourceConfig) -> str:
    """What the store was filled from: a different source or column set starts the store afresh."""
    identity = {
        "layout": STORE_LAYOUT,
        "url": safe_url(src.url),
        "table": src.table,
        "query": src.query,
        "columns": src.column_roles(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def read_watermark(cfg: PipelineConfig) -> Watermark | None:
    path = pipeline_dir(cfg) / WATERMARK_FILE
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return Watermark(source=data["source"], watermark=parse_as_of(data["watermark"]))


def _write_watermark(cfg: PipelineConfig, mark: Watermark) -> None:
    path = pipeline_dir(cfg) / WATERMARK_FILE
    tmp = path.with_name(f".{WATERMARK_FILE}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps({"source": mark.source, "watermark": mark.watermark.isoformat()}))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------- extract


def _full_extract(
    cfg: PipelineConfig, as_of: pd.Timestamp, upper: pd.Timestamp, batch_rows: int, work: Path
) -> tuple[_Counts, _ReadStats]:
    """Every source row up to `upper` straight into month files in `work`, future rows nulled."""
    stats, counts = _ReadStats(), _Counts()
    months = _MonthFiles(work, _schema(cfg.source))
    try:
        with closing(_read_source(cfg.source.url, cfg.source, None, upper, batch_rows, stats)) as tables:
            for table in tables:
                table = _null_future(table, cfg.source, as_of)
                counts.add(table, as_of)
                months.write(table)
    finally:
        files = months.close()
    _publish_months(files, work)
    return counts, stats


def _update_store(
    cfg: PipelineConfig,
    as_of: pd.Timestamp,
    upper: pd.Timestamp,
    lower: pd.Timestamp | None,
    batch_rows: int,
    store: Path,
) -> tuple[_ReadStats, pd.Timestamp | None]:
    """Read rows after `lower` into fresh month files, then replace that time range in the store.

    Returns the read statistics and the latest timestamp <= as_of that was read (None if none was).
    """
    src, stats = cfg.source, _ReadStats()
    fresh_dir = store / f".fresh.{uuid.uuid4().hex}"
    fresh_dir.mkdir(parents=True)
    latest: pd.Timestamp | None = None
    as_of_scalar = pa.scalar(as_of, pa.timestamp("us", tz="UTC"))
    try:
        months = _MonthFiles(fresh_dir, _schema(src))
        try:
            with closing(_read_source(src.url, src, lower, upper, batch_rows, stats)) as tables:
                for table in tables:
                    known = table.filter(pc.less_equal(table.column("ts"), as_of_scalar)).column("ts")
                    if len(known):
                        top = pd.Timestamp(pc.max(known).as_py())
                        latest = top if latest is None or top > latest else latest
                    months.write(table)
        finally:
            fresh = months.close()
        _check_numeric(src, stats)
        existing = {p.stem: p for p in store.glob("*.parquet")}
        for month in sorted(set(existing) | set(fresh)):
            if lower is not None and month not in fresh and _month_end(month) <= lower:
                continue  # entirely before the re-read window: untouched
            if month in fresh and (lower is None or month not in existing):
                os.replace(fresh[month], store / f"{month}.parquet")  # nothing to keep from before
                continue
            parts = []
            if lower is not None and month in existing:
                old = pq.read_table(existing[month], schema=_schema(src))
                parts.append(
                    old.filter(pc.less_equal(old.column("ts"), pa.scalar(lower, old.schema.field("ts").type)))
                )
            if month in fresh:
                parts.append(pq.read_table(fresh[month], schema=_schema(src)))
            merged = pa.concat_tables(parts) if parts else None
            if merged is None or merged.num_rows == 0:
                existing[month].unlink(missing_ok=True)
                continue
            tmp = store / f".{month}.{uuid.uuid4().hex}.tmp"
            _write_parquet(merged.sort_by([("ts", "ascending"), ("series_id", "ascending")]), tmp)
            os.replace(tmp, store / f"{month}.parquet")
    finally:
        shutil.rmtree(fresh_dir, ignore_errors=True)
    return stats, latest


def _snapshot(
    store: Path, work: Path, src: SourceConfig, as_of: pd.Timestamp, upper: pd.Timestamp
) -> _Counts:
    """The run's view of the store in `work`: months wholly before as_of are hard links (store files are
    never modified in place), the rest are rewritten with the rows after as_of nulled."""
    counts = _Counts()
    for path in sorted(store.glob("*.parquet")):
        month = path.stem
        target = work / path.name
        if _month_end(month) <= as_of:
            try:
                os.link(path, target)
            except OSError:  # file systems without hard links
                shutil.copyfile(path, target)
            counts.rows += pq.ParquetFile(path).metadata.num_rows
            counts.series.update(pc.unique(pq.read_table(path, columns=["series_id"]).column(0)).to_pylist())
            continue
        table = pq.read_table(path, schema=_schema(src))
        table = table.filter(
            pc.less_equal(table.column("ts"), pa.scalar(upper, table.schema.field("ts").type))
        )
        if table.num_rows == 0:
            continue
        table = _null_future(table, src, as_of)
        counts.add(table, as_of)
        tmp = work / f".{month}.{uuid.uuid4().hex}.tmp"
        _write_parquet(table, tmp)
        os.replace(tmp, target)
    return counts


def extract_to_parquet(
    cfg: PipelineConfig, as_of: pd.Timestamp, *, chunk_rows: int | None = None
) -> ExtractResult:
    """Write the source rows known at `as_of` (plus future covariates for the horizon) to
    `run_dir/extract.parquet`, a folder with one Parquet file per month that `pd.read_parquet` reads whole.

    Incremental (the default): new rows since the watermark, minus the re-read window, update the store and
    the run's files are taken from it. An as_of before the watermark (a backfill) and `incremental = false`
    read the source in full for that as_of and leave the store and watermark alone.
    """
    started = time.perf_counter()
    src = cfg.source
    batch_rows = chunk_rows or src.batch_rows
    future_end = as_of + cfg.forecast.horizon * pd.tseries.frequencies.to_offset(cfg.data.freq)
    upper = future_end if src.future_covariates else as_of
    out_dir = run_dir(cfg, as_of)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / "extract.parquet"
    work = out_dir / f".extract.parquet.{uuid.uuid4().hex}.tmp"
    work.mkdir()
    fingerprint = source_fingerprint(src)
    mark = read_watermark(cfg) if src.incremental else None
    if mark is not None and mark.source != fingerprint:
        mark = None  # the source changed: fill the store afresh
    watermark = mark.watermark if mark is not None else None
    try:
        if not src.incremental or (mark is not None and as_of < mark.watermark):
            mode = "backfill" if src.incremental else "full"
            counts, stats = _full_extract(cfg, as_of, upper, batch_rows, work)
            _check_numeric(src, stats)
        else:
            mode = "incremental" if mark is not None else "full"
            lower = mark.watermark - pd.Timedelta(src.reread_window) if mark is not None else None
            store = pipeline_dir(cfg) / STORE_DIR
            store.mkdir(parents=True, exist_ok=True)
            stats, latest = _update_store(cfg, as_of, upper, lower, batch_rows, store)
            if latest is not None and (watermark is None or latest > watermark):
                watermark = latest
            if watermark is not None:
                _write_watermark(cfg, Watermark(source=fingerprint, watermark=watermark))
            counts = _snapshot(store, work, src, as_of, upper)
        if counts.rows == 0:
            raise ValueError(f"{src.label} has no rows with {src.timestamp!r} <= {as_of.isoformat()}")
        _swap_dir(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ExtractResult(
        path=str(final),
        as_of=as_of.isoformat(),
        rows=counts.rows,
        future_rows=counts.future_rows,
        series=len(counts.series),
        dropped_without_key=stats.dropped,
        non_numeric={k: v for k, v in stats.non_numeric.items() if v},
        seconds=round(time.perf_counter() - started, 3),
        rows_read=stats.rows_read,
        mode=mode,
        watermark=watermark.isoformat() if watermark is not None else None,
    )


@task(
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_condition_fn=retry_if_transient,
)
def resolve_as_of(cfg: PipelineConfig, as_of: str | None) -> str:
    """The run's as-of timestamp in UTC ISO format: the given one, or the source's last timestamp."""
    return (
        parse_as_of(as_of) if as_of is not None else last_timestamp(cfg.source.url, cfg.source)
    ).isoformat()


@task(
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_condition_fn=retry_if_transient,
)
def extract(cfg: PipelineConfig, as_of: str) -> ExtractResult:
    return extract_to_parquet(cfg, parse_as_of(as_of))
