"""Publish: forecasts, the data-quality report and the run's metadata, written in one transaction.

On PostgreSQL a forecast table that lstmcast creates is partitioned by (pipeline, as_of), one partition per
publish: the forecasts are copied into a new table of their own (Arrow batches encoded by pgpq, binary COPY
over the transaction's own psycopg connection), keyed by one sorted index build, and attached as the
partition of their (pipeline, as_of), replacing the one a previous publish of that as-of left. A plain
forecast table (SQLite, other databases, a PostgreSQL table made unpartitioned) takes a first publish of
an as-of by COPY straight into it on PostgreSQL; otherwise the forecasts are bulk-loaded into a temporary
staging table (the same COPY on PostgreSQL, executemany elsewhere) and the rows of (pipeline, as_of) are
made equal to the staged set (rows dropped or changed are deleted, missing ones inserted from staging).
Then the quality rows of (pipeline, as_of) are replaced and the run record is written. Readers see either
the previous forecasts of an as-of or the new ones, never a mix, and a re-run of a date replaces its rows
instead of duplicating them.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from prefect import task
from prefect.tasks import exponential_backoff

from tasks.config import PIPELINE_NAME, PipelineConfig
from tasks.db import (
    add_columns,
    advisory_xact_lock,
    create_engine,
    missing_columns,
    retry_if_transient,
    split_table,
)
from tasks.extract import parse_as_of

STAGED = ["series_id", "ts", "yhat", "yhat_lower", "yhat_upper"]
ARROW_TYPES = {sa.Text: pa.large_string(), sa.DateTime: pa.timestamp("us", tz="UTC"), sa.Float: pa.float64()}
COPY_BATCH_ROWS = 32_768
FORECAST_KEY = ["as_of", "pipeline", "series_id", "ts"]
QUALITY_KEY = ["pipeline", "as_of", "series_id"]
QUALITY_TEXT = ["status", "reason"]
PARTITION_KEY = "RANGE (pipeline, as_of)"  # as pg_get_partkeydef prints it
PARTITION_NAME_BYTES = 58  # PostgreSQL's 63-byte identifiers, less the "_pkey" of the partition's key
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True)
class RunRecord:
    """What the runs table keeps about one run; built by the flow from the stages' results."""

    run_id: str
    pipeline: str
    as_of: str
    started_at: str
    model_version: str
    config_json: str
    metrics_json: str
    timings_json: str
    counts_json: str


@dataclass(frozen=True)
class PublishResult:
    table: str
    rows: int
    replaced: int  # rows the as-of had before
    seconds: float
    quality_rows: int = 0
    written: int = 0  # rows written: all of them into a partition; a plain table keeps unchanged ones


def forecast_table(
    name: str, metadata: sa.MetaData, keyed: bool = True, partitioned: bool = False
) -> sa.Table:
    """`keyed=False`: the same columns without the primary key, for a table whose key is built after its
    first load. `partitioned`: PostgreSQL's partitioned table with one partition per (pipeline, as_of)."""
    schema, table = split_table(name)
    return sa.Table(
        table, metadata,
        sa.Column("pipeline", sa.Text, nullable=False),
        sa.Column("series_id", sa.Text, nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("yhat", sa.Float(precision=53), nullable=False),
        sa.Column("yhat_lower", sa.Float(precision=53), nullable=True),
        sa.Column("yhat_upper", sa.Float(precision=53), nullable=True),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        # as_of first: a new as-of appends at the right edge of the key's index whichever pipeline writes
        # it, where (pipeline, as_of, ...) splits pages in half inside the index for every pipeline but
        # the last (two pipelines, four as-ofs: 220 MB of index instead of 287, measured by
        # benchmarks/publish_server_floor.py); the same index serves the replace of one (pipeline, as_of)
        *([sa.PrimaryKeyConstraint(*FORECAST_KEY)] if keyed else []),
        schema=schema,
        **({"postgresql_partition_by": PARTITION_KEY} if partitioned else {}),
    )  # fmt: skip


def runs_table(name: str, metadata: sa.MetaData) -> sa.Table:
    schema, table = split_table(name)
    return sa.Table(
        table, metadata,
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("pipeline", sa.Text, nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("metrics", sa.Text, nullable=False),
        sa.Column("timings", sa.Text, nullable=False),
        sa.Column("counts", sa.Text, nullable=False),
        schema=schema,
    )  # fmt: skip


def count_columns(quality: pd.DataFrame) -> list[str]:
    """The repair counts are every integer column of clean's quality frame: new counts need no change here."""
    if "series_id" not in quality.columns:
        raise ValueError(f"the quality frame has no series_id column (columns: {list(quality.columns)})")
    types = pd.api.types
    counts = [
        str(c) for c in quality.columns
        if c != "series_id" and types.is_integer_dtype(quality[c]) and not types.is_bool_dtype(quality[c])
    ]  # fmt: skip
    for name in counts:
        if not _IDENTIFIER.match(name) or name in {"pipeline", "as_of", "run_id", *QUALITY_TEXT}:
            raise ValueError(f"quality column {name!r} cannot be a column of the quality table")
    return counts


def quality_table(name: str, metadata: sa.MetaData, counts: list[str]) -> sa.Table:
    schema, table = split_table(name)
    return sa.Table(
        table, metadata,
        sa.Column("pipeline", sa.Text, primary_key=True),
        sa.Column("as_of", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("series_id", sa.Text, primary_key=True),
        sa.Column("run_id", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        *(sa.Column(c, sa.BigInteger, nullable=True) for c in counts),
        schema=schema,
    )  # fmt: skip


def _check_existing(conn: sa.Connection, table: sa.Table, addable: frozenset[str] = frozenset()) -> list[str]:
    """An existing table must have the columns lstmcast writes; say which are missing before writing.
    Columns in `addable` (new repair counts) are returned to be added instead."""
    missing = missing_columns(conn, table)
    fatal = [c for c in missing if c not in addable]
    if fatal:
        raise LookupError(f"output table {table.fullname!r} exists but lacks columns {fatal}")
    return missing


def _add_count_columns(conn: sa.Connection, table: sa.Table, names: list[str]) -> None:
    """A repair count that clean started counting becomes a new nullable column: NULL in older rows means
    'not counted then'. Names are validated identifiers, quoted by the dialect."""
    add_columns(conn, table, names)


def utc(ts: pd.Timestamp | str) -> datetime:
    return parse_as_of(ts).to_pydatetime()


def check_forecasts(forecasts: pd.DataFrame) -> None:
    """Refuse frames the upsert would silently mangle: NaN medians and repeated keys."""
    nan = forecasts["yhat"].isna()
    if nan.any():
        raise ValueError(
            f"{int(nan.sum())} forecasts have NaN yhat (first: series "
            f"{forecasts['series_id'][nan].iloc[0]!r}); nothing was published"
        )
    dup = forecasts.duplicated(["series_id", "ts"])
    if dup.any():
        first = forecasts[dup].iloc[0]
        raise ValueError(
            f"{int(dup.sum())} forecasts repeat a (series_id, ts) key (first: {first['series_id']!r} at "
            f"{first['ts']}); nothing was published"
        )


def _nullable(values: pd.Series) -> list[Any]:
    return values.astype(object).where(values.notna(), None).tolist()


def staged_columns(forecasts: pd.DataFrame) -> dict[str, list[Any]]:
    """The varying columns (STAGED) as Python values, for drivers without COPY; pipeline, as_of, run and
    timestamps are constants added when writing. A forecast frame repeats a few horizon timestamps many
    times: each distinct one becomes a Python datetime once."""
    codes, stamps = pd.factorize(pd.to_datetime(forecasts["ts"], utc=True))
    return {
        "series_id": forecasts["series_id"].astype(str).tolist(),
        "ts": np.array(stamps.to_pydatetime(), dtype=object)[codes].tolist(),
        "yhat": forecasts["yhat"].astype(float).tolist(),
        "yhat_lower": _nullable(forecasts["yhat_lower"].astype(float)),
        "yhat_upper": _nullable(forecasts["yhat_upper"].astype(float)),
    }


def staged_arrow(forecasts: pd.DataFrame) -> pa.Table:
    """The varying columns (STAGED) as Arrow arrays of the COPY's types: text, microsecond UTC timestamps,
    float8 with NaN intervals as NULL."""
    ts = pd.to_datetime(forecasts["ts"], utc=True).dt.as_unit("us")  # PostgreSQL keeps microseconds
    return pa.table(
        {
            "series_id": pa.array(forecasts["series_id"].astype(str), pa.string()),
            "ts": pa.array(ts, ARROW_TYPES[sa.DateTime]),
            "yhat": pa.array(forecasts["yhat"].astype(float), pa.float64()),
            "yhat_lower": pa.array(forecasts["yhat_lower"].astype(float), pa.float64(), from_pandas=True),
            "yhat_upper": pa.array(forecasts["yhat_upper"].astype(float), pa.float64(), from_pandas=True),
        }
    )


def _repeat(value: Any, n: int, kind: type) -> pa.Array:
    """`value` n times as one Arrow array; text is laid out directly (n copies of its bytes and their
    offsets), about 70x faster than filling a null array."""
    if kind is sa.Text:
        data = str(value).encode()
        offsets = np.arange(n + 1, dtype=np.int64) * len(data)
        return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data * n))
    return pa.nulls(n, ARROW_TYPES[kind]).fill_null(pa.scalar(value, ARROW_TYPES[kind]))


def lock_as_of(conn: sa.Connection, table: sa.Table, pipeline: str, as_of: datetime) -> None:
    """Two publishes of the same (pipeline, as_of) at once (a retry overlapping a manual re-run) take
    turns: the later one sees the earlier one's rows, so the final set is one run's. Taken first in the
    transaction, so the turn also covers looking for and creating the tables."""
    advisory_xact_lock(conn, table.fullname, pipeline, as_of.isoformat())


def staging_table(conn: sa.Connection) -> sa.Table:
    """A per-transaction temporary table; on PostgreSQL it also drops itself at commit or rollback."""
    stage = sa.Table(
        f"lstmcast_stage_{uuid.uuid4().hex[:12]}", sa.MetaData(),
        sa.Column("series_id", sa.Text, nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("yhat", sa.Float(precision=53), nullable=False),
        sa.Column("yhat_lower", sa.Float(precision=53), nullable=True),
        sa.Column("yhat_upper", sa.Float(precision=53), nullable=True),
        prefixes=["TEMPORARY"],
        postgresql_on_commit="DROP",
    )  # fmt: skip
    stage.create(conn)
    return stage


def _psycopg_connection(conn: sa.Connection) -> Any | None:
    try:
        import pgpq  # noqa: F401
        import psycopg
    except ImportError:  # the postgres extra is not installed: executemany it is
        return None
    raw = conn.connection.driver_connection
    return raw if isinstance(raw, psycopg.Connection) else None


def _copy_arrow(raw: Any, table: sa.Table, data: pa.Table, freeze: bool = False) -> None:
    """Binary COPY of `data` (its columns named as the table's) over the transaction's own psycopg
    connection, so it commits or rolls back with everything else. pgpq encodes the Arrow batches to
    PostgreSQL's binary COPY format in native code; the server starts on the first batch while the next is
    encoded. `freeze` (a table created in this transaction): rows are written frozen and their pages
    marked all-visible, so readers never rewrite them to set hint bits and VACUUM has nothing to freeze."""
    import psycopg
    from pgpq import ArrowToPostgresBinaryEncoder
    from psycopg import sql

    name = sql.Identifier(*([table.schema] if table.schema else []), table.name)
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in data.column_names)
    options = sql.SQL("FORMAT BINARY, FREEZE" if freeze else "FORMAT BINARY")
    statement = sql.SQL("COPY {} ({}) FROM STDIN ({})").format(name, columns, options)
    encoder = ArrowToPostgresBinaryEncoder(data.schema)
    try:
        with raw.cursor() as cur, cur.copy(statement) as copy:
            copy.write(encoder.write_header())
            for batch in data.to_batches(max_chunksize=COPY_BATCH_ROWS):
                copy.write(encoder.write_batch(batch))
            copy.write(encoder.finish())
    except psycopg.Error as exc:  # raised as every other statement's errors are: SQLAlchemy's classes
        raise sa.exc.DBAPIError.instance(statement.as_string(raw), None, exc, psycopg.Error) from None


def insert_rows(conn: sa.Connection, table: sa.Table, forecasts: pd.DataFrame, **constants: Any) -> None:
    """A batched executemany of the STAGED columns plus `constants`, for drivers without COPY."""
    if len(forecasts):
        columns = staged_columns(forecasts)
        rows = zip(*columns.values(), strict=True)
        conn.execute(sa.insert(table), [dict(zip(STAGED, row, strict=True)) | constants for row in rows])


def load_staging(conn: sa.Connection, stage: sa.Table, forecasts: pd.DataFrame) -> None:
    """Binary COPY on PostgreSQL; other drivers get a batched executemany."""
    raw = _psycopg_connection(conn) if conn.dialect.name == "postgresql" else None
    if raw is not None:
        _copy_arrow(raw, stage, staged_arrow(forecasts))
    else:
        insert_rows(conn, stage, forecasts)


def _constants(run: RunRecord, as_of: datetime, now: datetime) -> dict[str, Any]:
    """The columns every forecast row of one publish shares."""
    return {
        "pipeline": run.pipeline, "as_of": as_of, "model_version": run.model_version, "run_id": run.run_id,
        "created_at": now,
    }  # fmt: skip


def _qualified(conn: sa.Connection, table: sa.Table, name: str | None = None) -> str:
    """`table`'s name as SQL writes it, or that of table `name` in the same schema."""
    return conn.dialect.identifier_preparer.format_table(
        table if name is None else sa.Table(name, sa.MetaData(), schema=table.schema)
    )


def _string(value: str | datetime) -> str:
    """`value` (a datetime in ISO 8601 with its offset) as a PostgreSQL string constant, for DDL, which takes
    no bound parameters: E'' with quotes and backslashes escaped reads the same under any
    standard_conforming_strings."""
    text = value.isoformat() if isinstance(value, datetime) else value
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _ddl(conn: sa.Connection, statement: str) -> None:
    """A statement with constants written into it, sent as it is: no text parsed as a bound parameter, no
    percent sign doubled."""
    conn.exec_driver_sql(statement, execution_options={"no_parameters": True})


def copy_forecasts(
    conn: sa.Connection, table: sa.Table, forecasts: pd.DataFrame, run: RunRecord, as_of: datetime,
    now: datetime,
) -> bool:  # fmt: skip
    """Every column of the forecast rows by COPY straight into `table` (a first publish of an as-of into
    a plain table: half the cost of staging, then INSERT ... SELECT). Returns False where COPY does not
    apply (other drivers)."""
    raw = _psycopg_connection(conn) if conn.dialect.name == "postgresql" else None
    if raw is None:
        return False
    data = staged_arrow(forecasts)
    constants = _constants(run, as_of, now)
    for c in table.columns:
        if c.name in constants:
            data = data.append_column(c.name, _repeat(constants[c.name], data.num_rows, type(c.type)))
    _copy_arrow(raw, table, data.select([c.name for c in table.columns]))
    return True


def load_new_table(
    conn: sa.Connection, table: sa.Table, forecasts: pd.DataFrame, run: RunRecord, as_of: datetime,
    now: datetime,
) -> None:  # fmt: skip
    """The forecast rows into `table`, created empty in this transaction. On PostgreSQL the columns every
    row shares are the table's defaults while the STAGED ones are copied (less than half the bytes to
    encode, send and parse), frozen; other drivers insert every column."""
    raw = _psycopg_connection(conn) if conn.dialect.name == "postgresql" else None
    constants = _constants(run, as_of, now)
    if raw is None:
        insert_rows(conn, table, forecasts, **constants)
        return
    quote, name = conn.dialect.identifier_preparer.quote, _qualified(conn, table)
    defaults = ", ".join(f"ALTER {quote(c)} SET DEFAULT {_string(value)}" for c, value in constants.items())
    _ddl(conn, f"ALTER TABLE {name} {defaults}")
    _copy_arrow(raw, table, staged_arrow(forecasts), freeze=True)
    dropped = ", ".join(f"ALTER {quote(c)} DROP DEFAULT" for c in constants)
    _ddl(conn, f"ALTER TABLE {name} {dropped}")


def _same_key(table: sa.Table, stage: sa.Table) -> sa.ColumnElement[bool]:
    return (stage.c.series_id == table.c.series_id) & (stage.c.ts == table.c.ts)


def delete_replaced(
    conn: sa.Connection, table: sa.Table, stage: sa.Table, run: RunRecord, as_of: datetime
) -> int:
    """Delete the rows of (pipeline, as_of) that the new set drops or changes: keys not staged (a series
    dropped since), other values, another model version. Unchanged rows stay as they are."""
    unchanged = sa.select(sa.literal(1)).where(
        _same_key(table, stage),
        stage.c.yhat == table.c.yhat,
        stage.c.yhat_lower.is_not_distinct_from(table.c.yhat_lower),
        stage.c.yhat_upper.is_not_distinct_from(table.c.yhat_upper),
        table.c.model_version == run.model_version,
    )
    same_as_of = (table.c.pipeline == run.pipeline) & (table.c.as_of == as_of)
    return conn.execute(sa.delete(table).where(same_as_of, ~unchanged.exists())).rowcount


def _keyed(conn: sa.Connection, table: sa.Table) -> bool:
    """Whether the table's primary key makes (as_of, pipeline, series_id, ts) unique, in any column order:
    lstmcast's tables have it; a table made by hand may lack it and hold a key twice."""
    key = sa.inspect(conn).get_pk_constraint(table.name, schema=table.schema)["constrained_columns"]
    return bool(key) and set(key) <= set(FORECAST_KEY)


def upsert_forecasts(
    conn: sa.Connection, table: sa.Table, stage: sa.Table | None, run: RunRecord, as_of: datetime,
    now: datetime, staged: int, existing: int,
) -> int:  # fmt: skip
    """Make the rows of (pipeline, as_of) equal to the staged set; returns the rows written.

    `stage` None: the rows were copied straight into the table or its new partition. Otherwise a first
    publish of the as-of (`existing` == 0, counted under `lock_as_of`) is one INSERT ... SELECT, and a
    re-publish deletes the rows that were dropped or changed, then inserts the staged rows whose key is
    not there any more: unchanged rows are not rewritten and keep the run that first wrote them. On
    PostgreSQL this measured 2-4x faster than INSERT ... ON CONFLICT DO UPDATE of every row
    (docs/BENCHMARKS.md), and works the same on every dialect. A key that appeared anyway fails the
    primary key and the transaction; it never duplicates.
    """
    if stage is None:
        return staged
    constants = {
        "pipeline": sa.literal(run.pipeline, sa.Text),
        "as_of": sa.literal(as_of, sa.DateTime(timezone=True)),
        "model_version": sa.literal(run.model_version, sa.Text),
        "run_id": sa.literal(run.run_id, sa.Text),
        "created_at": sa.literal(now, sa.DateTime(timezone=True)),
    }
    columns = [c.name for c in table.columns]
    select = sa.select(*(constants.get(c, stage.c.get(c)) for c in columns))
    kept = 0
    if existing:
        kept = existing - delete_replaced(conn, table, stage, run, as_of)
    if kept == staged and _keyed(conn, table):  # each kept row matches its own staged key: none is missing
        return 0
    if kept:  # only then can a staged key still be there; probing for it costs more than the insert
        there = sa.select(sa.literal(1)).where(
            table.c.pipeline == run.pipeline, table.c.as_of == as_of, _same_key(table, stage)
        )
        select = select.where(~there.exists())
    conn.execute(sa.insert(table).from_select(columns, select))
    if not kept:
        return staged
    # SQLAlchemy reports no row count for INSERT ... SELECT on every driver: count what the as-of holds now
    now_there = sa.select(sa.func.count()).where(table.c.pipeline == run.pipeline, table.c.as_of == as_of)
    return conn.execute(now_there).scalar_one() - kept


@dataclass(frozen=True)
class Partition:
    """The new partition of one (pipeline, as_of): loaded and keyed as table `loaded_as`, then attached as
    `name` by `swap_partition` in place of `replaces`, the partition a previous publish of the as-of left
    (as SQL names it)."""

    name: str
    loaded_as: str
    replaces: str | None
    replaced: int  # the rows `replaces` holds
    bound: str  # FOR VALUES ...


def partition_name(table: str, pipeline: str, as_of: datetime) -> str:
    """`<table>_<pipeline>_<as-of>`, e.g. forecasts_sales_20240101_000000. A pipeline name with capitals
    or other characters SQL would need quotes for is lowered to [a-z0-9_] plus a hash of it, so two
    pipelines never share a name; a name too long for PostgreSQL keeps its start and the as-of around a
    hash of table and pipeline."""
    stamp = as_of.strftime("%Y%m%d_%H%M%S") + (f"_{as_of.microsecond:06d}" if as_of.microsecond else "")
    plain = re.sub(r"[^a-z0-9_]", "_", pipeline.lower())
    if plain != pipeline:
        plain += "_" + hashlib.sha1(pipeline.encode()).hexdigest()[:6]
    name = f"{table}_{plain}_{stamp}"
    if len(name.encode()) <= PARTITION_NAME_BYTES:
        return name
    digest = hashlib.sha1(f"{table}\0{pipeline}".encode()).hexdigest()[:8]
    room = PARTITION_NAME_BYTES - len(stamp) - len(digest) - 2
    return f"{name.encode()[:room].decode(errors='ignore')}_{digest}_{stamp}"


def is_partitioned(conn: sa.Connection, table: sa.Table) -> bool:
    """Whether `table` is partitioned by (pipeline, as_of) as lstmcast makes it; a table partitioned
    some other way is written like a plain one (rows routed by PostgreSQL)."""
    if conn.dialect.name != "postgresql":
        return False
    key = sa.func.pg_get_partkeydef(sa.func.to_regclass(_qualified(conn, table)))
    return conn.execute(sa.select(key)).scalar() == PARTITION_KEY


# the partition of (pipeline, as_of), found by its bounds whatever its name; the server formats both sides
_PARTITION_OF = sa.text(
    "select c.oid::regclass::text, c.oid = to_regclass(:name) from pg_inherits i "
    "join pg_class c on c.oid = i.inhrelid where i.inhparent = to_regclass(:parent) "
    "and pg_get_expr(c.relpartbound, c.oid) = "
    "format('FOR VALUES FROM (%L, %L) TO (%L, %L)', :pipeline, :start, :pipeline, :end)"
).bindparams(
    sa.bindparam("pipeline", type_=sa.Text),
    *(sa.bindparam(name, type_=sa.DateTime(timezone=True)) for name in ("start", "end")),
)


def load_partition(
    conn: sa.Connection, table: sa.Table, forecasts: pd.DataFrame, run: RunRecord, as_of: datetime,
    now: datetime,
) -> Partition:  # fmt: skip
    """The forecasts in a new table of their own: COPY, then the key in one sorted index build, with a
    check that it holds only (pipeline, as_of) so attaching it needs no scan. Nothing here locks `table`
    itself, so publishes of other as-ofs go on side by side until `swap_partition`."""
    name = partition_name(table.name, run.pipeline, as_of)
    qualified = _qualified(conn, table, name)
    end = as_of + timedelta(microseconds=1)
    params = {"name": qualified, "parent": _qualified(conn, table), "pipeline": run.pipeline}
    found = conn.execute(_PARTITION_OF, params | {"start": as_of, "end": end}).one_or_none()
    replaces, is_named = found if found is not None else (None, False)
    if not is_named and conn.execute(sa.select(sa.func.to_regclass(qualified))).scalar() is not None:
        raise LookupError(
            f"table {qualified!r} exists but is not the partition of {table.fullname!r} for pipeline "
            f"{run.pipeline!r}, as-of {as_of.isoformat()}, whose name it has: rename or drop it"
        )
    loaded_as = f"lstmcast_new_{uuid.uuid4().hex[:16]}"
    new = forecast_table(f"{table.schema}.{loaded_as}" if table.schema else loaded_as, sa.MetaData(), False)
    new.create(conn)
    pipeline, start = _string(run.pipeline), _string(as_of)
    _ddl(conn, f"ALTER TABLE {_qualified(conn, new)} ADD CONSTRAINT publish CHECK "
               f"(pipeline = {pipeline} AND as_of = {start})")  # fmt: skip
    load_new_table(conn, new, forecasts, run, as_of, now)
    key = sa.PrimaryKeyConstraint(*FORECAST_KEY, name=f"{loaded_as}_pkey")
    new.append_constraint(key)
    conn.execute(sa.schema.AddConstraint(key))
    replaced = conn.execute(sa.text(f"SELECT count(*) FROM {replaces}")).scalar_one() if replaces else 0
    bound = f"FOR VALUES FROM ({pipeline}, {start}) TO ({pipeline}, {_string(end)})"
    return Partition(name=name, loaded_as=loaded_as, replaces=replaces, replaced=replaced, bound=bound)


def swap_partition(conn: sa.Connection, table: sa.Table, part: Partition) -> None:
    """Put the new partition in place of the one it replaces, under the partition's name; last in the
    transaction, as the only statements that lock `table` itself. Attaching lets readers and other
    publishes on (a second attach waits for the commit); dropping a replaced partition makes readers wait
    for the commit too."""
    quote = conn.dialect.identifier_preparer.quote
    loaded = _qualified(conn, table, part.loaded_as)
    named = _qualified(conn, table, part.name)
    if part.replaces:
        conn.execute(sa.text(f"DROP TABLE {part.replaces}"))
    conn.execute(sa.text(f"ALTER TABLE {loaded} RENAME TO {quote(part.name)}"))
    conn.execute(
        sa.text(f"ALTER TABLE {named} RENAME CONSTRAINT {quote(part.loaded_as + '_pkey')} "
                f"TO {quote(part.name + '_pkey')}")
    )  # fmt: skip
    _ddl(conn, f"ALTER TABLE {_qualified(conn, table)} ATTACH PARTITION {named} {part.bound}")
    conn.execute(sa.text(f"ALTER TABLE {named} DROP CONSTRAINT publish"))  # the bound says it now


def write_plain(
    conn: sa.Connection, table: sa.Table, forecasts: pd.DataFrame, run: RunRecord, as_of: datetime,
    now: datetime, key_after_load: bool,
) -> tuple[int, int]:  # fmt: skip
    """The forecasts of (pipeline, as_of) into a plain table: the rows it held, and the rows written.
    `key_after_load`: the table was created here without its key, which is built after the load: one
    sorted index build instead of an index insert per row (PostgreSQL's advice for loading a fresh table)."""
    replaced = conn.execute(
        sa.select(sa.func.count()).select_from(table)
        .where(table.c.pipeline == run.pipeline, table.c.as_of == as_of)
    ).scalar_one()  # fmt: skip
    stage = None
    if key_after_load:
        load_new_table(conn, table, forecasts, run, as_of, now)
    elif not (replaced == 0 and copy_forecasts(conn, table, forecasts, run, as_of, now)):
        stage = staging_table(conn)
        load_staging(conn, stage, forecasts)
    written = upsert_forecasts(conn, table, stage, run, as_of, now, len(forecasts), replaced)
    if stage is not None:
        stage.drop(conn)
    if key_after_load:
        conn.execute(sa.schema.AddConstraint(table.primary_key))
    return replaced, written


def quality_rows(
    quality: pd.DataFrame, counts: list[str], run: RunRecord, as_of: datetime
) -> list[dict[str, Any]]:
    text = [c for c in QUALITY_TEXT if c in quality.columns]
    frame = quality[["series_id", *text, *counts]]
    rows = []
    for record in frame.astype(object).where(frame.notna(), None).to_dict("records"):
        record = {k: (int(v) if k in counts and v is not None else v) for k, v in record.items()}
        rows.append({"pipeline": run.pipeline, "as_of": as_of, "run_id": run.run_id, **record})
    return rows


def quality_totals(quality: pd.DataFrame, counts: list[str]) -> dict[str, int]:
    """What the run record keeps of the report: series per status and the total of every repair count."""
    totals = {"series": len(quality)}
    if "status" in quality.columns:
        totals |= {str(k): int(v) for k, v in quality["status"].value_counts().sort_index().items()}
    return totals | {c: int(quality[c].sum()) for c in counts}


def write_forecasts(
    url: str,
    table_name: str,
    runs_name: str,
    forecasts: pd.DataFrame,
    run: RunRecord,
    quality: pd.DataFrame | None = None,
    quality_name: str = "lstmcast_quality",
    partitioned: bool = True,
) -> PublishResult:
    """`partitioned`: a forecast table this publish creates on PostgreSQL gets a partition per (pipeline,
    as_of); an existing table keeps the layout it has."""
    started = time.perf_counter()
    if not PIPELINE_NAME.match(run.pipeline):
        raise ValueError(f"pipeline name {run.pipeline!r} must use letters, digits, '_', '-' or '.'")
    check_forecasts(forecasts)
    metadata = sa.MetaData()
    fc_table, run_table = forecast_table(table_name, metadata), runs_table(runs_name, metadata)
    counts = count_columns(quality) if quality is not None else []
    q_table = quality_table(quality_name, metadata, counts) if quality is not None else None
    as_of = utc(run.as_of)
    now = datetime.now(UTC)
    n_rows = len(forecasts)
    run_counts = json.loads(run.counts_json)
    if quality is not None:
        run_counts["quality"] = quality_totals(quality, counts)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            # first: a concurrent publish of the as-of waits here, before it looks for or creates tables
            lock_as_of(conn, fc_table, run.pipeline, as_of)
            inspector = sa.inspect(conn)
            if not all(inspector.has_table(t.name, schema=t.schema) for t in metadata.sorted_tables):
                # publishes of other as-ofs that would create the tables take turns: the later one finds
                # them instead of failing to create them again
                advisory_xact_lock(conn, fc_table.fullname, "create")
            for table in (fc_table, run_table):
                _check_existing(conn, table)
            new_counts = _check_existing(conn, q_table, frozenset(counts)) if q_table is not None else []
            created = conn.dialect.name == "postgresql" and not sa.inspect(conn).has_table(
                fc_table.name, schema=fc_table.schema
            )
            if created:
                made = forecast_table(table_name, sa.MetaData(), keyed=partitioned, partitioned=partitioned)
                made.create(conn)
            metadata.create_all(conn, checkfirst=True)
            if q_table is not None:
                _add_count_columns(conn, q_table, new_counts)
            if is_partitioned(conn, fc_table):
                part = load_partition(conn, fc_table, forecasts, run, as_of, now)
                replaced = part.replaced
                written = upsert_forecasts(conn, fc_table, None, run, as_of, now, n_rows, replaced)
            else:
                part = None
                replaced, written = write_plain(conn, fc_table, forecasts, run, as_of, now, created)
            written_quality = 0
            if q_table is not None and quality is not None:
                same = (q_table.c.pipeline == run.pipeline) & (q_table.c.as_of == as_of)
                conn.execute(sa.delete(q_table).where(same))
                q_rows = quality_rows(quality, counts, run, as_of)
                if q_rows:
                    conn.execute(sa.insert(q_table), q_rows)
                written_quality = len(q_rows)
            conn.execute(sa.delete(run_table).where(run_table.c.run_id == run.run_id))
            conn.execute(
                sa.insert(run_table),
                {
                    "run_id": run.run_id,
                    "pipeline": run.pipeline,
                    "as_of": as_of,
                    "started_at": utc(run.started_at),
                    "finished_at": now,
                    "model_version": run.model_version,
                    "config": run.config_json,
                    "metrics": run.metrics_json,
                    "timings": run.timings_json,
                    "counts": json.dumps(run_counts, sort_keys=True),
                },  # fmt: skip
            )
            if part is not None:
                swap_partition(conn, fc_table, part)
    finally:
        engine.dispose()
    return PublishResult(
        table=table_name,
        rows=n_rows,
        replaced=int(replaced),
        seconds=round(time.perf_counter() - started, 3),
        quality_rows=written_quality,
        written=int(written),
    )


def build_run_record(
    cfg: PipelineConfig, run_id: str, as_of: str, started_at: str, model_version: str,
    metrics: dict[str, Any], timings: dict[str, float], counts: dict[str, Any],
) -> RunRecord:  # fmt: skip
    return RunRecord(
        run_id=run_id,
        pipeline=cfg.name,
        as_of=as_of,
        started_at=started_at,
        model_version=model_version,
        config_json=json.dumps(cfg.redacted(), sort_keys=True),
        metrics_json=json.dumps(metrics, sort_keys=True),
        timings_json=json.dumps(timings, sort_keys=True),
        counts_json=json.dumps(counts, sort_keys=True),
    )


def publish_forecasts(
    cfg: PipelineConfig, forecast_path: str, run: RunRecord, quality_path: str | None = None
) -> PublishResult:
    forecasts = pd.read_parquet(forecast_path)
    if forecasts["yhat"].isna().any():
        raise ValueError(f"{forecast_path} holds NaN forecasts; nothing was published")
    quality = pd.read_parquet(quality_path) if quality_path is not None else None
    return write_forecasts(
        cfg.output.url, cfg.output.table, cfg.output.runs_table, forecasts, run,
        quality=quality, quality_name=cfg.output.quality_table, partitioned=cfg.output.partitioned,
    )  # fmt: skip


@task(
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_condition_fn=retry_if_transient,
)
def publish(
    cfg: PipelineConfig, forecast_path: str, run: RunRecord, quality_path: str | None = None
) -> PublishResult:
    return publish_forecasts(cfg, forecast_path, run, quality_path)
