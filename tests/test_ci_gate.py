"""CI cannot pass by not running tests: without PostgreSQL, or with nothing collected, a CI run fails.

Each case runs pytest (or scripts/test.sh) in a subprocess on a few tests written to tmp_path, with the
suite's conftest loaded as a plugin (`-p tests.conftest`) and its Prefect server replaced by a no-op, so
no case starts a server or runs the suite. PostgreSQL is pointed at a port that refuses connections.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

PG_TESTS = '''
import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_server():
    """Replaces the suite's Prefect test server: these tests report to nothing."""
    yield


def test_needs_postgres(pg_url):
    pass


def test_asks_for_postgres_at_run_time(request):
    request.getfixturevalue("pg_url")


def test_plain():
    pass
'''


@pytest.fixture(scope="module", autouse=True)
def prefect_server():
    """Overrides the suite-wide Prefect test server: these tests only start subprocesses."""
    yield


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port bound but not listening: connecting to it is refused at once, for as long as the test runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def child_env(tmp_path: Path, ci: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"CI", "LSTMCAST_TEST_PG_URL"}}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    env["PREFECT_LOCAL_STORAGE_PATH"] = str(tmp_path / "results")  # not a new folder in /tmp per run
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the conftest needs no installed plugin; saves ~1.5 s
    return env | extra


def run_pytest(tmp_path: Path, port: int, ci: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    """pytest on PG_TESTS with the suite's conftest, its own empty config and no cache folder."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_pg.py").write_text(PG_TESTS)
    url = f"postgresql+psycopg://postgres:secret@127.0.0.1:{port}/test"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.conftest", "-q", "-rs",
         "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), str(tmp_path / "test_pg.py"),
         *args],
        cwd=REPO, env=child_env(tmp_path, ci, LSTMCAST_TEST_PG_URL=url), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def masked_url(port: int) -> str:
    return f"postgresql+psycopg://postgres:***@127.0.0.1:{port}/test"


def refused(port: int) -> str:
    """psycopg's first line for the refused port (its version is pinned in constraints.txt)."""
    return (
        f'OperationalError: connection failed: connection to server at "127.0.0.1", port {port} failed: '
        "Connection refused"
    )


def exit_message(stdout: str) -> str:
    """The reason pytest.exit gave, from the `!!! _pytest.outcomes.Exit: ... !!!` line."""
    [line] = [line for line in stdout.splitlines() if "_pytest.outcomes.Exit: " in line]
    return line.strip("! ").removeprefix("_pytest.outcomes.Exit: ")


def test_in_ci_an_unanswered_postgres_fails_the_run_before_any_test(tmp_path, refused_port):
    out = run_pytest(tmp_path, refused_port, "true")
    assert out.returncode == 1, out.stdout + out.stderr
    message = (
        f"CI=true but PostgreSQL at {masked_url(refused_port)} does not answer: {refused(refused_port)}; "
        "the PostgreSQL tests must run in CI"
    )
    assert exit_message(out.stdout) == message
    assert "no tests ran" in out.stdout and "passed" not in out.stdout and "skipped" not in out.stdout
    assert "secret" not in out.stdout + out.stderr


def test_in_ci_a_test_that_asks_for_postgres_at_run_time_stops_the_run(tmp_path, refused_port):
    """Not marked and not a parameter by name, so the collection check misses it; the fixture does not."""
    out = run_pytest(tmp_path, refused_port, "1", "-k", "run_time")
    assert out.returncode == 1, out.stdout + out.stderr
    message = (
        f"CI=1 but PostgreSQL at {masked_url(refused_port)} does not answer: {refused(refused_port)}; "
        "the PostgreSQL tests must run in CI"
    )
    assert exit_message(out.stdout) == message
    assert "skipped" not in out.stdout


def test_in_ci_tests_that_do_not_need_postgres_run_without_it(tmp_path, refused_port):
    out = run_pytest(tmp_path, refused_port, "true", "-k", "plain")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[-1].startswith("1 passed, 2 deselected in ")


def test_outside_ci_postgres_tests_are_skipped_and_say_why(tmp_path, refused_port):
    out = run_pytest(tmp_path, refused_port, None)
    assert out.returncode == 0, out.stdout + out.stderr
    reason = f"PostgreSQL test server not reachable at {masked_url(refused_port)}: {refused(refused_port)}"
    skipped = sorted(line for line in out.stdout.splitlines() if line.startswith("SKIPPED [1] "))
    assert [line.split(": ", 1)[1] for line in skipped] == [reason, reason]
    assert out.stdout.splitlines()[-1].startswith("1 passed, 2 skipped in ")


def run_test_sh(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    """The real scripts/test.sh in a scratch copy of the repository's layout: set-up and lint are stubs
    (this checks how the script maps pytest's exit status, not the repository's lint), pytest is real
    and collects nothing from an empty folder."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / "empty").mkdir()
    shutil.copy(REPO / "scripts" / "test.sh", root / "scripts" / "test.sh")
    stubs = {
        "scripts/setup.sh": "exit 0\n",
        ".venv/bin/ruff": "#!/bin/sh\nexit 0\n",
        ".venv/bin/python": f'#!/bin/sh\nexec "{sys.executable}" "$@"\n',
    }
    for name, text in stubs.items():
        (root / name).write_text(text)
        (root / name).chmod(0o755)
    return subprocess.run(
        ["bash", "scripts/test.sh", "-p", "no:cacheprovider", "-q", "empty"],
        cwd=root, env=child_env(tmp_path, ci), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_in_ci_test_sh_fails_when_pytest_collects_no_tests(tmp_path):
    out = run_test_sh(tmp_path, "true")
    assert "no tests ran in " in out.stdout
    assert out.returncode == 5
    assert out.stderr.splitlines()[-1] == (
        "scripts/test.sh: pytest collected no tests (exit 5); under CI=true that fails the run"
    )


def test_outside_ci_test_sh_passes_when_pytest_collects_no_tests(tmp_path):
    out = run_test_sh(tmp_path, None)
    assert "no tests ran in " in out.stdout
    assert out.returncode == 0
    assert out.stderr.splitlines()[-1] == (
        "scripts/test.sh: pytest collected no tests (exit 5); treated as success outside CI"
    )
