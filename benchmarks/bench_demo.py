"""Wall time, peak memory and backtest metrics of `lstmcast demo` (both pipelines), in one process.

Run: .venv/bin/python -m benchmarks.bench_demo   (from the repository root; writes data/demo.db)
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import torch  # noqa: E402

from benchmarks.common import peak_rss_mib  # noqa: E402
from flows.nightly import nightly_forecast  # noqa: E402
from lstmcast.demo import DEMO_RUNS, build_demo_db, demo_file  # noqa: E402


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # no options: --help only
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, cuda {torch.cuda.is_available()}"
    )
    started = time.perf_counter()
    build_demo_db()
    print(f"build demo db: {time.perf_counter() - started:.1f} s")
    for name, as_of in DEMO_RUNS:
        t0 = time.perf_counter()
        result = nightly_forecast(str(demo_file(name)), as_of)
        wall = time.perf_counter() - t0
        print(
            f"\n## {result['pipeline']} (as_of {result['as_of']}): {wall:.1f} s wall, "
            f"{result['series_forecast']} series, {result['rows_published']} rows"
        )
        print("stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result["timings"].items()))
        print(f"gate: {result['gate']}; published model {result['model_version']}")
        print("| model | MAE | RMSE | sMAPE % | MASE | 80% interval coverage |\n|---|---|---|---|---|---|")
        for model, m in result["backtest"].items():
            print(
                f"| {model} | {m['mae']:.4f} | {m['rmse']:.4f} | {m['smape']:.2f} | {m['mase']:.4f} "
                f"| {m['coverage']:.3f} |"
            )
    print(f"\ntotal wall time: {time.perf_counter() - started:.1f} s; peak RSS: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
