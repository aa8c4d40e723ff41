import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from tasks.db import create_engine, is_transient, libpq_uri, reflect_table


def op_error(message: str) -> sa.exc.OperationalError:
    return sa.exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError(message))


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (op_error("database is locked"), True),
        (op_error('connection to server at "127.0.0.1", port 5432 failed: Connection refused'), True),
        (op_error("terminating connection due to administrator command"), True),
        (op_error("deadlock detected\nDETAIL:  Process 1 waits for AccessExclusiveLock on relation 2"), True),
        (op_error("canceling statement due to lock timeout"), True),
        (ConnectionResetError("peer reset"), True),
        (TimeoutError(), True),
        (op_error("no such table: readings"), False),
        (sa.exc.ProgrammingError("SELECT", {}, Exception('column "x" does not exist')), False),
        (ValueError("bad data"), False),
    ],
)
def test_transient_errors_are_told_apart_from_permanent_ones(exc, expected):
    assert is_transient(exc) is expected


def test_the_retry_check_works_without_the_adbc_driver():
    """Without the postgres extra the ADBC import fails; the check must still triage errors, not raise."""
    script = textwrap.dedent("""
        import sys
        sys.modules["adbc_driver_manager"] = None  # the import now raises ImportError, as without the extra
        from tasks.retry import retry_if_transient

        class State:  # a failed task run's state, as Prefect hands it to the retry check
            def __init__(self, exc):
                self.exc = exc

            def result(self, raise_on_failure=True):
                return self.exc

        errors = [ValueError("bad data"), OSError("could not connect to server"), OSError("No space left")]
        print(*(retry_if_transient(None, None, State(exc)) for exc in errors))
    """)
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "False"]


def test_missing_table_names_table_and_database(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'sub' / 'x.db'}")
    with pytest.raises(LookupError, match=r"table 'readings' does not exist in sqlite:///.*x.db"):
        reflect_table(engine, "readings")
    assert (tmp_path / "sub").is_dir()


def test_libpq_uri_from_sqlalchemy_url():
    assert libpq_uri("postgresql+psycopg://u:p%40ss@db.example:5433/sales?sslmode=require") == (
        "postgresql://u:p%40ss@db.example:5433/sales?sslmode=require"
    )
    with pytest.raises(ValueError, match=r"^sqlite:///x.db is not a PostgreSQL URL$"):
        libpq_uri("sqlite:///x.db")


def test_unknown_dialect_is_a_one_line_error():
    with pytest.raises(ValueError) as err:
        create_engine("oracel://scott:tiger@host/db")
    assert (
        str(err.value)
        == "cannot open oracel://scott:***@host/db: no SQLAlchemy dialect 'oracel' is installed"
    )


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            'IO: [libpq] Failed to connect: connection to server at "127.0.0.1" failed: Connection refused',
            True,
        ),
        ('NOT_FOUND: Failed to prepare query: ERROR:  relation "x" does not exist', False),
    ],
)
def test_adbc_errors_are_triaged_by_message(message, expected):
    from adbc_driver_manager import AdbcStatusCode, OperationalError, ProgrammingError

    kind = OperationalError if expected else ProgrammingError
    assert is_transient(kind(message, status_code=AdbcStatusCode.IO)) is expected
