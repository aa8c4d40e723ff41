"""Shared fixtures: one Prefect test server per session, real SQLite databases from slices of real data."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# cached task results of the session's runs stay out of the user's ~/.prefect
os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", tempfile.mkdtemp(prefix="lstmcast-test-results-"))

from tasks.config import PipelineConfig, parse_config  # noqa: E402
from tests.helpers import (
    TINY_MODEL,
    TINY_TRAINING,
    sales_slice,
    sensor_config_dict,
    sensor_slice,
    write_table,
)  # noqa: E402

PG_URL = os.environ.get("LSTMCAST_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# The PostgreSQL tests are skipped where no server answers, except in CI: a skipped PostgreSQL test
# there would let the run pass without them, so CI fails instead (see `pytest_collection_finish`).
PG_MISSING_IN_CI = pytest.ExitCode.TESTS_FAILED


def in_ci() -> bool:
    """True under CI=true (or CI=1), as GitHub Actions, GitLab CI and most runners set it."""
    return os.environ.get("CI", "").lower() in {"true", "1"}


@pytest.fixture(scope="session", autouse=True)
def prefect_server():
    """A temporary Prefect server for the whole session: task wrappers and flows report to it."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture(autouse=True)
def _no_source_env(monkeypatch):
    monkeypatch.delenv("LSTMCAST_SOURCE_URL", raising=False)
    monkeypatch.delenv("LSTMCAST_OUTPUT_URL", raising=False)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'lstmcast.db'}"


@pytest.fixture
def sensor_db(sqlite_url: str) -> str:
    write_table(sqlite_url, "readings", sensor_slice())
    return sqlite_url


@pytest.fixture
def sensor_cfg(sensor_db: str, tmp_path: Path) -> Callable[..., PipelineConfig]:
    def make(**overrides) -> PipelineConfig:
        return parse_config(sensor_config_dict(sensor_db, tmp_path / "work", **overrides))

    return make


@pytest.fixture
def sales_cfg(sqlite_url: str, tmp_path: Path) -> PipelineConfig:
    write_table(sqlite_url, "sales", sales_slice())
    return parse_config({
        "name": "sales",
        "source": {"url": sqlite_url, "table": "sales", "series_id": "product", "timestamp": "day",
                   "target": "qty", "future_covariates": ["promo"],
                   # marked checked to test the future-covariate path, not a claim that promo is a plan:
                   # the file's flags were recorded from the sales (the leakage guard refuses them)
                   "checked_covariates": ["promo"]},
        "data": {"freq": "D", "season_length": 7, "max_gap": 7, "non_negative": True, "duplicates": "sum",
                 "data_dir": str(tmp_path / "work")},
        "forecast": {"horizon": 14, "lookback": 28, "folds": 2, "gate": "off"},
        "model": dict(TINY_MODEL),
        "training": dict(TINY_TRAINING),
        "output": {"url": sqlite_url, "table": "forecasts"},
    })  # fmt: skip


def shown_pg_url() -> str:
    """PG_URL as messages print it: a password given in LSTMCAST_TEST_PG_URL stays out of the CI log."""
    try:
        return sa.engine.make_url(PG_URL).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return PG_URL


def postgres_available() -> str | None:
    """None when the PostgreSQL test server answers, else why not (the driver's error, first line)."""
    try:
        url = sa.engine.make_url(PG_URL)
        # libpq waits for an unanswered SYN as long as the OS does; a CI run should fail in seconds
        connect_args = {"connect_timeout": 10} if url.get_driver_name() in {"psycopg", "psycopg2"} else {}
        engine = sa.create_engine(url, connect_args=connect_args)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("select 1"))
        finally:
            engine.dispose()
    except Exception as exc:  # whatever stops the connection is the reason to report
        cause = getattr(exc, "orig", None) or exc  # the driver's error, without SQLAlchemy's wrapping
        lines = str(cause).strip().splitlines()
        return f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__
    return None


def postgres_skip_reason(cause: str) -> str:
    return f"PostgreSQL test server not reachable at {shown_pg_url()}: {cause}"


def postgres_ci_failure(cause: str) -> str:
    return (
        f"CI={os.environ.get('CI', '')} but PostgreSQL at {shown_pg_url()} does not answer: {cause}; "
        "the PostgreSQL tests must run in CI"
    )


def needs_postgres(item: pytest.Item) -> bool:
    """Marked `postgres` or asks for `pg_url` by name (a fixture that asks for it at run time is
    caught by `pg_url` itself)."""
    return item.get_closest_marker("postgres") is not None or "pg_url" in getattr(item, "fixturenames", ())


def pytest_collection_finish(session: pytest.Session) -> None:
    """In CI, stop before any test (and before the Prefect server starts) when the selected tests need
    PostgreSQL and it does not answer."""
    if not in_ci() or not any(needs_postgres(item) for item in session.items):
        return
    cause = postgres_available()
    if cause:
        pytest.exit(postgres_ci_failure(cause), returncode=PG_MISSING_IN_CI)


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The PostgreSQL test server's URL; skips the test where none answers, stops the run in CI."""
    cause = postgres_available()
    if cause:
        if in_ci():
            pytest.exit(postgres_ci_failure(cause), returncode=PG_MISSING_IN_CI)
        pytest.skip(postgres_skip_reason(cause))
    return PG_URL
