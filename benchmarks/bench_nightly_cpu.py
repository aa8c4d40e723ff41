"""The default nightly job on a CPU: a few hundred hourly series of a few months, end to end.

Builds a SQLite source with 300 synthetic hourly series x 90 days (benchmarks/synthetic.py), then
runs the nightly flow with the default model and training settings (only source, frequency, horizon
and lookback set) and prints the wall time of each stage and the peak RSS.

Run: .venv/bin/python -m benchmarks.bench_nightly_cpu [--series 300] [--days 90]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import sqlalchemy as sa  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import peak_rss_mib, sqlite_url  # noqa: E402
from benchmarks.synthetic import hourly_panel  # noqa: E402
from flows.nightly import nightly_forecast  # noqa: E402

CONFIG = """
[source]
url = "{url}"
table = "readings"

[data]
freq = "h"
season_length = 24
data_dir = "{work}"

[forecast]
horizon = 48
lookback = 168

[output]
url = "{url}"
table = "forecasts"
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=300)
    parser.add_argument("--days", type=int, default=90)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lstmcast-bench-"))
    url = sqlite_url(work / "source.db")
    frame = hourly_panel(args.series, args.days)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        frame.to_sql("readings", conn, index=False, chunksize=50_000)
    engine.dispose()
    config = work / "nightly.toml"
    config.write_text(CONFIG.format(url=url, work=work / "data"))
    print(
        f"{args.series} hourly series x {args.days} days = {len(frame):,} rows; "
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, load before start {os.getloadavg()[0]:.2f}"
    )
    started = time.perf_counter()
    result = nightly_forecast(str(config))
    wall = time.perf_counter() - started
    print("stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result["timings"].items()))
    print(f"gate: {result['gate']}")
    for model, m in result["backtest"].items():
        print(
            f"  {model}: MASE {m['mase']:.4f}, MAE {m['mae']:.4f}, 80% interval coverage {m['coverage']:.3f}"
        )
    peak = peak_rss_mib()
    print(
        f"nightly flow: {wall:.1f} s wall ({wall / 60:.1f} min), "
        f"{result['rows_published']:,} rows published, peak RSS {peak:.0f} MiB"
    )


if __name__ == "__main__":
    main()
