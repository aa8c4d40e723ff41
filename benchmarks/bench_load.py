"""Load: the nightly flow on 1,000 hourly series x 1 year (8.76 M rows) in PostgreSQL, on this machine.

Builds (once; reused while it holds the right row count) a PostgreSQL table of synthetic but realistic
sensor readings (benchmarks/synthetic.py: per-series level, daily profile with its own phase, weekday
effect, AR(1) drift, heteroscedastic noise) with 0.3% of the rows missing at random, loaded through
ADBC. Then runs the nightly flow once with the default model and training settings (source, frequency,
horizon 48 and lookback 168 set; output tables in the same database) and prints the wall time of every
stage and the peak RSS of this process (the flow and its tasks; the Prefect server runs apart).

Target (issue 6): under 30 minutes on 2 CPU cores, peak RSS under 4 GB.

Run: .venv/bin/python -m benchmarks.bench_load [--series 1000] [--days 365] [--url postgresql+psycopg://...]
(default URL: $LSTMCAST_BENCH_PG_URL, else the local test database)
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import numpy as np  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from benchmarks.common import peak_rss_mib, pg_url  # noqa: E402
from benchmarks.synthetic import hourly_panel  # noqa: E402

TABLE = "bench_load_readings"
MISSING = 0.003

CONFIG = """
[source]
url = "{url}"
table = "{table}"

[data]
freq = "h"
season_length = 24
data_dir = "{work}"

[forecast]
horizon = 48
lookback = 168

[output]
url = "{url}"
table = "bench_load_forecasts"
runs_table = "bench_load_runs"
quality_table = "bench_load_quality"
accuracy_table = "bench_load_accuracy"

[registry]
table = "bench_load_models"
"""


def build_table(url: str, n_series: int, days: int) -> tuple[int, float]:
    """The source table, rebuilt only when missing or of another size; returns (rows, seconds spent)."""
    import adbc_driver_postgresql.dbapi as adbc
    import pyarrow as pa

    from tasks.db import libpq_uri

    engine = sa.create_engine(url)
    frame = None
    started = time.perf_counter()
    try:
        with engine.connect() as conn:
            if sa.inspect(conn).has_table(TABLE):
                rows = conn.execute(sa.text(f"select count(*) from {TABLE}")).scalar_one()
                expected = n_series * days * 24
                if abs(rows - expected * (1 - MISSING)) < expected * MISSING:
                    return rows, 0.0
        frame = hourly_panel(n_series, days)
        keep = np.random.default_rng(1).random(len(frame)) >= MISSING
        table = pa.Table.from_pandas(frame[keep], preserve_index=False)
        with adbc.connect(libpq_uri(url)) as conn, conn.cursor() as cur:
            cur.execute(f"drop table if exists {TABLE}")
            cur.adbc_ingest(TABLE, table, mode="create")
            conn.commit()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text(f"vacuum analyze {TABLE}"))
        return table.num_rows, time.perf_counter() - started
    finally:
        engine.dispose()


def drop_outputs(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for name in ("forecasts", "runs", "quality", "accuracy", "models"):
            conn.execute(sa.text(f"drop table if exists bench_load_{name}"))
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--url", default=pg_url())
    args = parser.parse_args()
    rows, built = build_table(args.url, args.series, args.days)
    drop_outputs(args.url)
    work = Path(tempfile.mkdtemp(prefix="lstmcast-load-"))
    config = work / "load.toml"
    config.write_text(CONFIG.format(url=args.url, table=TABLE, work=work / "data"))
    print(
        f"source: {TABLE}, {args.series} hourly series x {args.days} days, {rows:,} rows "
        f"({f'built in {built:.0f} s' if built else 'reused'}); {os.cpu_count()} CPUs, "
        f"load average before start {os.getloadavg()[0]:.2f}"
    )
    from flows.nightly import nightly_forecast

    started = time.perf_counter()
    result = nightly_forecast(str(config))
    wall = time.perf_counter() - started
    peak_gb = peak_rss_mib() / 1024
    print("stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result["timings"].items()))
    print(f"gate: {result['gate']}")
    print(f"training: {result['training']}")
    for model, m in result["backtest"].items():
        print(f"  {model}: MASE {m['mase']:.4f}, 80% interval coverage {m['coverage']:.3f}")
    print(
        f"nightly flow: {wall:.0f} s wall ({wall / 60:.1f} min; target < 30 min: "
        f"{'met' if wall < 1800 else 'NOT met'}), {result['rows_published']:,} rows published, "
        f"peak RSS {peak_gb:.2f} GB (target < 4 GB: {'met' if peak_gb < 4 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
