"""Reading the source, part one: what is checked before and while rows are read (the configured columns
exist and have usable types, timestamps parse), how a failed read is reported, and the source's latest
timestamp (a nightly run's default as-of)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from tasks.db import AdbcError, create_engine, db_message, is_transient, reflect_table, safe_url
from tasks.errors import DataError, SourceError, SourceTypeError, UserError
from tasks.parsing import NON_NUMERIC_COLUMN, ZONE_COLUMN, to_utc
from tasks.sections import SourceConfig


class SourceQueryError(UserError, RuntimeError):
    """The database refused the read (bad SQL, missing database, no permission): retrying will not help."""


class SourceUnavailable(ConnectionError):
    """The source database could not be reached or dropped the connection: a retry may succeed."""


@dataclass
class ReadStats:
    rows_read: int = 0
    dropped: int = 0
    non_numeric: dict[str, int] = field(default_factory=dict)
    numeric_seen: dict[str, int] = field(default_factory=dict)
    first_bad: dict[str, object] = field(default_factory=dict)


def source_selectable(engine: sa.Engine, src: SourceConfig) -> sa.FromClause:
    """The source as a FROM clause whose configured columns are checked to exist."""
    wanted = [name for _, name in src.column_roles()]
    if src.table is not None:
        table = reflect_table(engine, src.table)
        for role, name in src.column_roles():
            if name not in table.c:
                raise SourceError(
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
            raise SourceError(
                f"the source query returns no column {name!r} (configured as source.{role}); "
                f"it returns {present}"
            )
    return sa.text(src.query).columns(*(sa.column(n) for n in wanted)).subquery("lstmcast_source")


def show(value: object) -> str:
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
    wanted += [(c, _NUMERIC_TYPES, "a number") for c in numeric_columns(src)]
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
        example = f" (first value: {show(value)})" if value is not None else ""
        raise SourceTypeError(
            f"{src.label}: column {name!r} has database type {declared}, not {what}{example}"
        )


def parse_timestamps(values: pd.Series, src: SourceConfig) -> tuple[pd.Series, np.ndarray]:
    """UTC timestamps and each row's zone mark (text, or datetimes from the driver, row by row); a value
    that is no timestamp stops the read."""
    parsed, zone = to_utc(values)
    bad = parsed.isna() & values.notna()
    if bad.any():
        raise DataError(
            f"{src.label}: column {src.timestamp!r} has a value that is not a timestamp: "
            f"{values[bad].iloc[0]!r}"
        )
    return parsed, zone


def read_error(exc: Exception, src: SourceConfig, url: str) -> Exception:
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
        source = source_selectable(engine, src)
        stmt = sa.select(sa.func.max(source.c[src.timestamp])).where(source.c[src.target].is_not(None))
        with engine.connect() as conn:
            value = conn.execute(stmt).scalar()
    except sa.exc.DBAPIError as exc:
        raise read_error(exc, src, url) from exc
    finally:
        engine.dispose()
    if value is None:
        raise DataError(f"{src.label} has no rows with a value in column {src.target!r}")
    return parse_timestamps(pd.Series([value]), src)[0].iloc[0]


def numeric_columns(src: SourceConfig) -> list[str]:
    return [src.target, *src.covariates, *src.future_covariates]


def extract_schema(src: SourceConfig) -> pa.Schema:
    return pa.schema(
        [pa.field("series_id", pa.string()), pa.field("ts", pa.timestamp("us", tz="UTC"))]
        + [pa.field(c, pa.float64()) for c in numeric_columns(src)]
        + [pa.field(ZONE_COLUMN, pa.int8()), pa.field(NON_NUMERIC_COLUMN, pa.int16())]
    )


def is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def check_arrow_types(schema: pa.Schema, first: pa.RecordBatch | None, src: SourceConfig) -> None:
    """Column types the extract cannot turn into timestamps or numbers, named before anything is written."""

    def example(col: str) -> str:
        if first is None:
            return ""
        values = [v for v in first.column(col).to_pylist() if v is not None]
        return f" (first value: {show(values[0])})" if values else ""

    t = schema.field(src.timestamp).type
    if not (pa.types.is_timestamp(t) or pa.types.is_date(t) or is_text(t) or pa.types.is_null(t)):
        raise SourceTypeError(
            f"{src.label}: column {src.timestamp!r} has database type {t}, not a timestamp"
            f"{example(src.timestamp)}"
        )
    for col in numeric_columns(src):
        t = schema.field(col).type
        if not (
            pa.types.is_integer(t)
            or pa.types.is_floating(t)
            or pa.types.is_decimal(t)
            or pa.types.is_boolean(t)
            or is_text(t)
            or pa.types.is_null(t)
        ):
            raise SourceTypeError(
                f"{src.label}: column {col!r} has database type {t}, not a number{example(col)}"
            )


def check_numeric(src: SourceConfig, stats: ReadStats) -> None:
    for col, bad in stats.non_numeric.items():
        if bad and stats.numeric_seen.get(col, 0) == 0:
            raise SourceTypeError(
                f"{src.label}: column {col!r} holds no numeric values (first value: {stats.first_bad[col]!r})"
            )
