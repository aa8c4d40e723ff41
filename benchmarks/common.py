"""What every benchmark shares: the databases it talks to, peak memory in one unit, where results go.

The benchmarks run as modules from the project root (`.venv/bin/python -m benchmarks.bench_ett`), so
`benchmarks` and the project's packages import without touching `sys.path`; a benchmark that measures a
step in a process of its own starts it the same way (`run_module`).
"""

from __future__ import annotations

import os
import resource
import shlex
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
PYTHON = ".venv/bin/python"  # as the commands in docs/BENCHMARKS.md spell the interpreter

PG_URL_ENV = "LSTMCAST_BENCH_PG_URL"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def pg_url() -> str:
    """SQLAlchemy URL of the PostgreSQL test database: $LSTMCAST_BENCH_PG_URL, else the local server."""
    return os.environ.get(PG_URL_ENV) or DEFAULT_PG_URL


def libpq_url(url: str | None = None) -> str:
    """The libpq form (`postgresql://...`) of a SQLAlchemy PostgreSQL URL, default `pg_url()`, for psycopg."""
    parsed = make_url(url or pg_url())
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)


def sqlite_url(path: Path) -> str:
    """SQLAlchemy URL of a SQLite file: the source of the benchmarks that need no server."""
    return f"sqlite:///{path}"


def peak_rss_mib(*, children: bool = False) -> float:
    """Peak resident set size in MiB of this process, or with `children` of its largest waited-for child.

    ru_maxrss is in KiB on Linux.
    """
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024


def result_path(name: str) -> Path:
    """A file under benchmarks/results/, where the docs point for each benchmark's written results."""
    return RESULTS_DIR / name


def write_result(path: str | Path, lines: Iterable[str]) -> Path:
    """Write `lines` to `path` (its folder created if needed) and say so on stdout."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    print(f"wrote {path}")
    return path


def command_line(module: str, argv: Sequence[str] | None = None) -> str:
    """The command that reruns `module` with `argv` (default this process's arguments), for a results file."""
    args = sys.argv[1:] if argv is None else argv
    return f"{PYTHON} -m {module}" + "".join(f" {shlex.quote(a)}" for a in args)


def run_module(
    module: str, *args: str, env: Mapping[str, str] | None = None, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run `python -m module args` from the project root in a fresh interpreter, its output captured as
    text: a step measured this way has its own peak RSS and pays its own imports."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, check=check, cwd=ROOT
    )
