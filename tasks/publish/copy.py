"""Getting forecast rows into a table: binary COPY of Arrow batches encoded by pgpq over the transaction's
own psycopg connection on PostgreSQL, a batched executemany elsewhere (or without the postgres extra)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from tasks._log import warn_once
from tasks.publish.context import PublishContext
from tasks.publish.sql import ddl, qualified, string_literal

STAGED = ["series_id", "ts", "yhat", "yhat_lower", "yhat_upper"]

ARROW_TYPES = {sa.Text: pa.large_string(), sa.DateTime: pa.timestamp("us", tz="UTC"), sa.Float: pa.float64()}

COPY_BATCH_ROWS = 32_768


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
    offsets) instead of filling a null array, which costs a Python object per row."""
    if kind is sa.Text:
        data = str(value).encode()
        offsets = np.arange(n + 1, dtype=np.int64) * len(data)
        return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data * n))
    return pa.nulls(n, ARROW_TYPES[kind]).fill_null(pa.scalar(value, ARROW_TYPES[kind]))


def psycopg_connection(conn: sa.Connection) -> Any | None:
    try:
        import pgpq  # noqa: F401
        import psycopg
    except ImportError as exc:  # the postgres extra is not installed: executemany it is
        warn_once("pgpq", "no binary COPY (%s): forecasts are written with executemany, which is slower; "
                  "pip install 'lstmcast[postgres]'", exc)  # fmt: skip
        return None
    raw = conn.connection.driver_connection
    return raw if isinstance(raw, psycopg.Connection) else None


def copy_arrow(raw: Any, table: sa.Table, data: pa.Table, freeze: bool = False) -> None:
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
    raw = psycopg_connection(conn) if conn.dialect.name == "postgresql" else None
    if raw is not None:
        copy_arrow(raw, stage, staged_arrow(forecasts))
    else:
        insert_rows(conn, stage, forecasts)


def copy_forecasts(
    conn: sa.Connection, table: sa.Table, forecasts: pd.DataFrame, ctx: PublishContext
) -> bool:
    """Every column of the forecast rows by COPY straight into `table` (a first publish of an as-of into
    a plain table: one pass instead of staging, then INSERT ... SELECT). Returns False where COPY does not
    apply (other drivers)."""
    raw = psycopg_connection(conn) if conn.dialect.name == "postgresql" else None
    if raw is None:
        return False
    data = staged_arrow(forecasts)
    constants = ctx.constants()
    for c in table.columns:
        if c.name in constants:
            data = data.append_column(c.name, _repeat(constants[c.name], data.num_rows, type(c.type)))
    copy_arrow(raw, table, data.select([c.name for c in table.columns]))
    return True


def load_new_table(
    conn: sa.Connection, table: sa.Table, forecasts: pd.DataFrame, ctx: PublishContext
) -> None:
    """The forecast rows into `table`, created empty in this transaction. On PostgreSQL the columns every
    row shares are the table's defaults while the STAGED ones are copied (less than half the bytes to
    encode, send and parse), frozen; other drivers insert every column."""
    raw = psycopg_connection(conn) if conn.dialect.name == "postgresql" else None
    constants = ctx.constants()
    if raw is None:
        insert_rows(conn, table, forecasts, **constants)
        return
    quote, name = conn.dialect.identifier_preparer.quote, qualified(conn, table)
    defaults = ", ".join(
        f"ALTER {quote(c)} SET DEFAULT {string_literal(value)}" for c, value in constants.items()
    )
    ddl(conn, f"ALTER TABLE {name} {defaults}")
    copy_arrow(raw, table, staged_arrow(forecasts), freeze=True)
    dropped = ", ".join(f"ALTER {quote(c)} DROP DEFAULT" for c in constants)
    ddl(conn, f"ALTER TABLE {name} {dropped}")
