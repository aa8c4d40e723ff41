"""Database plumbing shared by the I/O stages: engines from URLs, table references, transient-error triage."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from tasks.errors import SourceError

try:  # the ADBC driver ships with the postgres extra; without it PostgreSQL is read through SQLAlchemy
    from adbc_driver_manager import Error as AdbcError
except ImportError:  # pragma: no cover - depends on the extras; tests/tasks/test_db.py runs it apart

    class AdbcError(Exception):  # type: ignore[no-redef]
        """Stands in for ADBC's error type when the driver is absent: nothing raises it."""


_TRANSIENT_MESSAGES = re.compile(
    r"database is locked|could not connect|connection refused|server closed the connection|"
    r"terminating connection|connection reset|timeout expired|timed out|connection is closed|"
    r"the database system is (starting up|shutting down)|too many connections|deadlock detected|"
    r"canceling statement due to lock timeout",
    re.IGNORECASE,
)


def create_engine(url: str) -> Engine:
    """An engine for `url`; SQLite files get their parent directory created so the demo runs anywhere."""
    parsed = make_url(url)
    uri = parsed.query.get("uri") == "true" or str(parsed.database or "").startswith("file:")
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:") and not uri:
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    try:
        return sa.create_engine(parsed, pool_pre_ping=True)
    except sa.exc.NoSuchModuleError:
        raise ValueError(
            f"cannot open {safe_url(url)}: no SQLAlchemy dialect {parsed.drivername!r} is installed"
        ) from None


def advisory_xact_lock(conn: sa.Connection, *parts: str) -> None:
    """Writers of the same key `parts` take turns until commit or rollback; call it first in the
    transaction, so the turn also covers looking for and creating tables. PostgreSQL: a transaction-level
    advisory lock on the key hashed to 64 bits. SQLite: the database's write lock, taken at once with
    BEGIN IMMEDIATE (pysqlite would begin only at the first INSERT or DELETE, leaving CREATE TABLE out)."""
    if conn.dialect.name == "sqlite":
        if not getattr(conn.connection.driver_connection, "in_transaction", True):
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        return
    if conn.dialect.name != "postgresql":
        return
    digest = hashlib.sha1("\0".join(parts).encode()).digest()
    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(int.from_bytes(digest[:8], "big", signed=True))))


def is_postgres(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


def libpq_uri(url: str) -> str:
    """The libpq connection URI for a SQLAlchemy PostgreSQL URL (`postgresql+psycopg://...`), for ADBC."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"{safe_url(url)} is not a PostgreSQL URL")
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def db_message(exc: BaseException) -> str:
    """The database's own message, first line only, without the SQLAlchemy wrapper text."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return lines[0] if lines else type(orig).__name__


def safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def split_table(name: str) -> tuple[str | None, str]:
    schema, _, table = name.rpartition(".")
    return (schema or None), table


def add_columns(conn: sa.Connection, table: sa.Table, names: list[str]) -> None:
    """Add the columns `names` of `table`'s definition to the existing table, with their types; they must
    be nullable, so older rows read NULL ("not recorded then"). Names are quoted by the dialect."""
    preparer = conn.dialect.identifier_preparer
    # Two writers may find the same column missing: on PostgreSQL the later ALTER then does nothing (it
    # waits for the earlier one's lock); SQLite lets one writer at a time into the transaction.
    guard = "IF NOT EXISTS " if conn.dialect.name == "postgresql" else ""
    for name in names:
        kind = table.c[name].type.compile(dialect=conn.dialect)
        conn.execute(
            sa.text(
                f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {guard}{preparer.quote(name)} {kind}"
            )
        )


def missing_columns(conn: sa.Connection, table: sa.Table) -> list[str]:
    """Columns of `table`'s definition that the existing table lacks ([] when there is no table)."""
    inspector = sa.inspect(conn)
    if not inspector.has_table(table.name, schema=table.schema):
        return []
    present = {c["name"] for c in inspector.get_columns(table.name, schema=table.schema)}
    return [c.name for c in table.columns if c.name not in present]


def reflect_table(engine: Engine, name: str) -> sa.Table:
    """`name` with its columns and their declared types (no keys or indexes: two catalog queries instead
    of full reflection's many); a missing table is reported with the database it was looked for in."""
    schema, table = split_table(name)
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        if not inspector.has_table(table, schema=schema):
            raise SourceError(f"table {name!r} does not exist in {safe_url(str(engine.url))}")
        columns = inspector.get_columns(table, schema=schema)
    return sa.Table(table, sa.MetaData(), *(sa.Column(c["name"], c["type"]) for c in columns), schema=schema)


def is_transient(exc: BaseException) -> bool:
    """True for errors a retry can fix (lost connection, lock, timeout); False for bad SQL, tables or data."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        return bool(_TRANSIENT_MESSAGES.search(str(exc.orig)))
    if isinstance(exc, sa.exc.TimeoutError):  # connection pool exhausted
        return True
    if isinstance(exc, AdbcError | OSError):  # the ADBC stream reports a connection lost mid-read as OSError
        return bool(_TRANSIENT_MESSAGES.search(str(exc)))
    return False
