"""The ADBC PostgreSQL driver's own cost, release against release, on the extract's statement.

Each release is installed once with `pip install --no-deps --target` into `.bench-cache/` and put first on
PYTHONPATH of a child process, which reads the 5,000,000-row table of `bench_data_layer.py` (built there if
missing) with the extract's bounded SELECT and discards the batches. The releases run in turn, `--rounds`
times, so the machine's drift hits all of them alike; the child's CPU time is the driver's decode (plus
libpq), the wall time also waits for the server.

Run: .venv/bin/python -m benchmarks.adbc_driver_versions [--versions 1.8.0 1.13.0] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.bench_data_layer import BOUNDED_SELECT, ROWS, build_table
from benchmarks.common import ROOT, pg_url, run_module

CACHE = ROOT / ".bench-cache"


def install(version: str) -> Path:
    target = CACHE / f"adbc-driver-postgresql-{version}"
    if not (target / "adbc_driver_postgresql").is_dir():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
             f"adbc-driver-postgresql=={version}"],
            check=True,
        )  # fmt: skip
    return target


def child(uri: str) -> None:
    import adbc_driver_postgresql
    import adbc_driver_postgresql.dbapi as adbc

    started, cpu = time.perf_counter(), time.process_time()
    rows = 0
    with adbc.connect(uri) as conn, conn.cursor() as cur:
        cur.adbc_statement.set_options(**{"adbc.postgresql.batch_size_hint_bytes": str(4_000_000)})
        cur.execute(BOUNDED_SELECT)
        for batch in cur.fetch_record_batch():
            rows += batch.num_rows
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    loaded = Path(adbc_driver_postgresql.__file__).parent
    print(json.dumps({"rows": rows, "seconds": seconds, "cpu": cpu, "from": str(loaded)}))


def run(target: Path, uri: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    out = run_module(__spec__.name, "--child", uri, env=env, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["rows"] == ROWS, got
    assert Path(got["from"]).parent == target, got  # the release under test, not the installed one
    return got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=pg_url(), help="SQLAlchemy URL of the PostgreSQL database")
    parser.add_argument("--versions", nargs="+", default=["1.8.0", "1.13.0"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    from tasks.db import libpq_uri

    build_table(args.url)
    uri = libpq_uri(args.url)
    targets = {v: install(v) for v in args.versions}
    runs: dict[str, list[dict]] = {v: [] for v in args.versions}
    for _ in range(args.rounds):
        for version, target in targets.items():
            runs[version].append(run(target, uri))
    print(f"{ROWS:,} rows, the extract's bounded SELECT, batches discarded; {args.rounds} rounds in turn\n")
    header = "release | wall best / median s | client CPU best / median s | all wall s | all CPU s"
    print(f"| {header} |")
    print("|---|---|---|---|---|")
    for version, got in runs.items():
        wall, cpu = [r["seconds"] for r in got], [r["cpu"] for r in got]
        print(
            f"| {version} | {min(wall):.2f} / {statistics.median(wall):.2f} | {min(cpu):.2f} / "
            f"{statistics.median(cpu):.2f} | {', '.join(f'{w:.2f}' for w in wall)} | "
            f"{', '.join(f'{c:.2f}' for c in cpu)} |"
        )


if __name__ == "__main__":
    main()
