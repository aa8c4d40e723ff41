"""The default settings on a heterogeneous hourly panel, as a new user runs them, against seasonal naive.

Why: a user who sets only the source, `freq = "h"`, `season_length = 24`, horizon 48 and lookback 168
gets the defaults, and on a panel of mixed domains those must beat seasonal naive clearly without any
tuning, within the nightly job's time on 2 cores.

Panel: benchmarks/hourly_panel.py (49 ETTh1 segments and 250 synthetic series of five kinds, 13 weeks
each). Two parts:

1. Validation-only selection of the default rules (benchmarks/selection.py): the lstm_model backtest
   (3 rolling-origin folds of 48 steps) at an as-of 144 steps before the end of the panel, so none of
   its test steps is one the nightly backtest below is judged on, for each candidate and seed.
   Candidates: single steps (patch_len 1: the earlier default, which the 120 s wall-clock limit it had
   then stopped), one season per segment (patch_len 24: the `auto` rule), and that with the linear
   skip path started at its least-squares solution.
2. The judged run: the nightly flow itself on a SQLite copy of the panel with the default config,
   once per seed: its own 3-fold backtest (held-back windows only) of the LSTM and every baseline, and
   the flow's wall time.

Run: .venv/bin/python -m benchmarks.bench_hourly_defaults [--seeds 0 1 2] [--selection-threads 1]
         [--skip-selection | --selection-only]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import sqlalchemy as sa  # noqa: E402
import torch  # noqa: E402

from benchmarks import hourly_panel  # noqa: E402
from benchmarks.common import peak_rss_mib, sqlite_url  # noqa: E402
from benchmarks.selection import DEFAULT_SEEDS, choose, mean_std, selection_lines  # noqa: E402
from lstm_model import ModelConfig, Panel, TrainConfig  # noqa: E402
from lstm_model.backtest import backtest, summarize  # noqa: E402
from lstm_model.features import calendar_features  # noqa: E402

HORIZON, LOOKBACK, SEASON, FOLDS = 48, 168, 24, 3
VALIDATION_SHIFT = FOLDS * HORIZON  # the validation as-of: this many steps before the panel's end

CONFIG = """
name = "hourly"

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

[training]
seed = {seed}

[output]
url = "{url}"
table = "forecasts"
"""


@dataclass(frozen=True)
class Candidate:
    patch_len: int
    linear_init: bool = False
    time_budget_s: float | None = None

    def describe(self) -> str:
        cap = f", {self.time_budget_s:.0f} s wall-clock limit" if self.time_budget_s else ""
        return f"patch_len {self.patch_len}, linear_init {self.linear_init}{cap}; other settings default"


SHIPPED = Candidate(patch_len=SEASON)  # what patch_len "auto" and the training defaults give this panel
CANDIDATES = {
    "single steps (earlier default)": Candidate(patch_len=1, time_budget_s=120.0),
    "segment = season (auto)": Candidate(patch_len=SEASON),
    "segment = season + linear start": Candidate(patch_len=SEASON, linear_init=True),
}


def to_panel(frame: pd.DataFrame) -> Panel:
    """The long frame with the default calendar features as known-future inputs, as the flow builds it."""
    frame = frame.reset_index(drop=True)
    frame = pd.concat([frame, calendar_features(frame["ts"], "h")], axis=1)
    future = tuple(c for c in frame.columns if c not in ("series_id", "ts", "value"))
    return Panel.from_frame(frame, series_col="series_id", time_col="ts", target_col="value", future=future)


def selection(
    frame: pd.DataFrame, seeds: list[int], threads: int | None
) -> tuple[list[str], dict[str, list[float]]]:
    cut = frame["ts"].max() - pd.Timedelta(hours=VALIDATION_SHIFT)
    panel = to_panel(frame[frame["ts"] <= cut])
    scores: dict[str, list[float]] = {}
    for name, cand in CANDIDATES.items():
        model_cfg = ModelConfig(lookback=LOOKBACK, horizon=HORIZON, patch_len=cand.patch_len)
        for seed in seeds:
            train_cfg = TrainConfig(
                seed=seed, linear_init=cand.linear_init, time_budget_s=cand.time_budget_s, threads=threads
            )
            t0 = time.perf_counter()
            rows = backtest(panel, model_cfg, train_cfg, n_folds=FOLDS, season_length=SEASON)
            table = summarize(rows)["mase"]
            gain = 1 - table["lstm"] / table["seasonal_naive"]
            scores.setdefault(name, []).append(float(table["lstm"]))
            print(
                f"validation {name}, seed {seed}: LSTM MASE {table['lstm']:.4f}, seasonal naive "
                f"{table['seasonal_naive']:.4f} ({gain:+.1%}), {time.perf_counter() - t0:.0f} s, stopped "
                f"{sorted(set(rows['stopped']))}",
                flush=True,
            )
    described = {n: c.describe() for n, c in CANDIDATES.items()}
    return selection_lines("default rules, validation backtest", scores, "LSTM MASE", described), scores


def nightly(frame: pd.DataFrame, seed: int) -> dict[str, object]:
    from flows.nightly import nightly_forecast

    work = Path(tempfile.mkdtemp(prefix="lstmcast-hourly-"))
    url = sqlite_url(work / "source.db")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        frame.to_sql("readings", conn, index=False, chunksize=50_000)
    engine.dispose()
    config = work / "hourly.toml"
    config.write_text(CONFIG.format(url=url, work=work / "data", seed=seed))
    started = time.perf_counter()
    state = nightly_forecast(str(config), return_state=True)
    wall = time.perf_counter() - started
    result = state.result()
    return {"wall": wall, "state": state.name, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    parser.add_argument("--skip-selection", action="store_true")
    parser.add_argument("--selection-only", action="store_true")
    parser.add_argument(
        "--selection-threads", type=int, default=None,
        help="torch threads of the selection fits (default: every core; 1 on a machine shared with other "
        "jobs); the nightly runs always use the default, every core",
    )  # fmt: skip
    args = parser.parse_args()
    frame = hourly_panel.panel()
    ids = pd.Series(frame["series_id"].unique())
    kinds = ids.str.split("_").str[0].value_counts().to_dict()  # series per kind
    print(
        f"panel: {frame['series_id'].nunique()} hourly series x {hourly_panel.STEPS} steps ({kinds}); "
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    if not args.skip_selection:
        lines, scores = selection(frame, args.seeds, args.selection_threads)
        shipped = next(n for n, c in CANDIDATES.items() if c == SHIPPED)
        print("\n".join(["", *lines, f"validation winner: {choose(scores)}; shipped default: {shipped}", ""]))

    runs = []
    if args.selection_only:
        return
    for seed in args.seeds:
        r = nightly(frame, seed)
        bt = r["backtest"]
        gain = 1 - bt["lstm"]["mase"] / bt["seasonal_naive"]["mase"]
        print(
            f"nightly flow, seed {seed}: {r['state']}, {r['wall']:.0f} s; backtest MASE "
            + ", ".join(f"{m} {v['mase']:.4f}" for m, v in bt.items())
            + f"; LSTM vs seasonal naive {gain:+.1%}; {r['reproducible']}; stages "
            + ", ".join(f"{k} {v:.0f}" for k, v in r["timings"].items()),
            flush=True,
        )
        runs.append((r, gain))
    models = list(runs[0][0]["backtest"])
    lines = ["| model | backtest MASE (mean ± std over seeds) | 80% interval coverage |", "|---|---|---|"]
    for m in models:
        mase = [r["backtest"][m]["mase"] for r, _ in runs]
        cov = [r["backtest"][m]["coverage"] for r, _ in runs]
        lines.append(f"| {m} | {mean_std(mase)} | {mean_std(cov, 3)} |")
    gains = [g for _, g in runs]
    walls = [r["wall"] for r, _ in runs]
    peak = peak_rss_mib()
    verdict = "met" if np.mean(gains) >= 0.10 else "NOT met"
    print("\n".join([
        "", *lines, "",
        f"LSTM better than seasonal naive by {mean_std([100 * g for g in gains], 1)} % "
        f"(target >= 10%: {verdict}); nightly flow {mean_std(walls, 0)} s wall; peak RSS {peak:.0f} MiB",
    ]))  # fmt: skip


if __name__ == "__main__":
    main()
