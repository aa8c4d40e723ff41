"""SQL text for the statements that take no bound parameters (DDL): names quoted by the dialect and
constants written as PostgreSQL string literals."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa


def qualified(conn: sa.Connection, table: sa.Table, name: str | None = None) -> str:
    """`table`'s name as SQL writes it, or that of table `name` in the same schema."""
    return conn.dialect.identifier_preparer.format_table(
        table if name is None else sa.Table(name, sa.MetaData(), schema=table.schema)
    )


def string_literal(value: str | datetime) -> str:
    """`value` (a datetime in ISO 8601 with its offset) as a PostgreSQL string constant, for DDL, which takes
    no bound parameters: E'' with quotes and backslashes escaped reads the same under any
    standard_conforming_strings."""
    text = value.isoformat() if isinstance(value, datetime) else value
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def ddl(conn: sa.Connection, statement: str) -> None:
    """A statement with constants written into it, sent as it is: no text parsed as a bound parameter, no
    percent sign doubled."""
    conn.exec_driver_sql(statement, execution_options={"no_parameters": True})
