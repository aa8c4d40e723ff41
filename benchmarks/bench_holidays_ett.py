"""Public holidays as known-future inputs (`data.holidays`) on ETTh1, Chinese transformer sensors.

Why: ETTh1 is recorded in China, where the Spring Festival and the National Day week change how much
power is drawn, and so the load and the oil temperature (OT) of a transformer; the holidays library's
"CN" calendar knows those days years ahead. This shows whether the holiday features help on the
standard protocol (benchmarks/ett.py), with the choice made on validation only.

Protocol: for each row (setting and horizon), bench_ett's validation choice of candidate (ROWS) is fitted
in three arms that differ only in their known-future inputs: none (as bench_ett), the calendar
(hour of day, day of week, day of year, as the pipeline adds them), and the calendar plus the CN holiday
features. Each arm is fitted with every seed on rows [0, 11520) and scored by MSE on every validation
window; the arm with the lowest mean validation MSE is the one lstmcast would use. Every arm is then scored
once on the test windows, so the table shows the effect as well as the choice; rows give mean and std
over seeds. The test windows are also split into those whose horizon holds a holiday and the others.
Validation holds the 2017 National Day week; test holds New Year and the 2018 Spring Festival.

Run (from the repository root):
    .venv/bin/python -m benchmarks.bench_holidays_ett --workers 2   # S96 and S336, 3 seeds, ~15 min, 2 cores
    .venv/bin/python -m benchmarks.bench_holidays_ett --quick       # smoke run: S96, 1 seed, 3 epochs
Writes benchmarks/results/holidays_ett.md (not with --quick unless --out is given).
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks import ett
from benchmarks.bench_ett import CANDIDATES, fit_one, forecasts, parse_row, val_origins
from benchmarks.common import command_line, result_path, write_result
from benchmarks.selection import DEFAULT_SEEDS, arms_report, choose, mean_std, selection_lines
from lstm_model.features import calendar_features, holiday_features

RESULTS = result_path("holidays_ett.md")
CALENDAR = "CN"
# bench_ett's validation choice for each row (benchmarks/results/ett.md)
ROWS = {("S", 96): "mse+linear", ("S", 336): "pinball"}
ARMS = ("no calendar", "calendar", f"calendar + {CALENDAR} holidays")


def known_future(df: pd.DataFrame, arm: str) -> pd.DataFrame | None:
    """The arm's known-future columns, one row per row of `df` (None for no inputs)."""
    if arm == ARMS[0]:
        return None
    stamps = df["date"]
    frame = calendar_features(stamps, "h")
    if arm == ARMS[2]:
        frame = pd.concat([frame, holiday_features(stamps, CALENDAR)], axis=1)
    return frame.reset_index(drop=True)


def holiday_windows(df: pd.DataFrame, origins: np.ndarray, horizon: int) -> np.ndarray:
    """(n_windows,) bool: the window's horizon holds an hour of a holiday."""
    on = holiday_features(df["date"], CALENDAR)["holiday"].to_numpy() == 1.0
    return on[origins[:, None] + np.arange(horizon)].any(axis=1)


def run_fit(setting: str, horizon: int, arm: str, seed: int, threads: int, epochs: int | None) -> dict:
    """One fit of one arm, scored on validation and on test (overall and split by holiday windows)."""
    torch.set_num_threads(threads)
    df = ett.load_etth1()
    cand = CANDIDATES[ROWS[setting, horizon]]
    if epochs is not None:
        cand = replace(cand, max_epochs=epochs)
    future = known_future(df, arm)
    result, fit_s = fit_one(df, setting, horizon, cand, seed, threads, future)
    val_mse, _ = ett.evaluate(*forecasts(df, setting, result, val_origins(horizon), future))
    origins = ett.test_origins(horizon)
    pred, truth = forecasts(df, setting, result, origins, future)
    near = holiday_windows(df, origins, horizon)
    return {
        "val": val_mse,
        "test": ett.evaluate(pred, truth),
        "holiday": ett.evaluate(pred[near], truth[near])[0],
        "other": ett.evaluate(pred[~near], truth[~near])[0],
        "windows": int(near.sum()),
        "fit_s": fit_s,
        "epochs": (len(result.history) - 1, result.best_epoch),
    }


def run_all(jobs: list[tuple], workers: int) -> list[dict]:
    """Every fit, `workers` processes at a time; fits are seeded, so results do not depend on `workers`."""
    if workers == 1:
        return [run_fit(*job) for job in jobs]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return list(pool.map(run_fit, *zip(*jobs, strict=True)))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--rows", default="S96,S336", help=f"comma list of rows among {[f'{s}{h}' for s, h in ROWS]}"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    p.add_argument("--threads", type=int, default=1, help="torch threads per fit")
    p.add_argument("--workers", type=int, default=1, help="fits run at once, each in its own process")
    p.add_argument("--quick", action="store_true", help="smoke run: S96, 1 seed, 3 epochs")
    p.add_argument(
        "--out", type=Path, default=None, help=f"results file (default {RESULTS}; not with --quick)"
    )
    args = p.parse_args(argv)
    rows = [parse_row(r.strip()) for r in args.rows.split(",") if r.strip()]
    unknown = [f"{s}{h}" for s, h in rows if (s, h) not in ROWS]
    if unknown:
        raise SystemExit(
            f"no candidate is chosen for row {unknown[0]}; rows are {[f'{s}{h}' for s, h in ROWS]}"
        )
    seeds, epochs = args.seeds, None
    if args.quick:
        rows, seeds, epochs = [("S", 96)], seeds[:1], 3
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    machine = (
        f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} torch "
        f"thread(s) per fit, {args.workers} fit(s) at once, cuda {torch.cuda.is_available()}"
    )
    print(f"machine: {machine}; load average {load_start:.2f}; seeds {seeds}", flush=True)
    jobs = [(s, h, arm, seed, args.threads, epochs) for s, h in rows for arm in ARMS for seed in seeds]
    results = dict(zip([job[:4] for job in jobs], run_all(jobs, args.workers), strict=True))

    table = [
        "| row | candidate | arm | validation MSE | test MSE | test MAE | test MSE, windows with a holiday "
        "| other windows | fit s (epochs, best) | chosen |",
        "|" + "---|" * 10,
    ]
    log, facts = [], []
    for s, h in rows:
        runs = {arm: [results[s, h, arm, seed] for seed in seeds] for arm in ARMS}
        val = {arm: [r["val"] for r in runs[arm]] for arm in ARMS}
        chosen = choose(val)
        log += [*selection_lines(f"{s} H={h} ({ROWS[s, h]})", val, "MSE", {a: a for a in ARMS}), ""]
        for arm in ARMS:
            r = runs[arm]
            fits = ", ".join(f"{x['fit_s']:.0f} {x['epochs']}" for x in r)
            table.append(
                f"| {s}{h} | {ROWS[s, h]} | {arm} | {mean_std(val[arm])} "
                f"| {mean_std([x['test'][0] for x in r])} "
                f"| {mean_std([x['test'][1] for x in r])} | {mean_std([x['holiday'] for x in r])} "
                f"| {mean_std([x['other'] for x in r])} | {fits} | {'**chosen**' if arm == chosen else ''} |"
            )
        n = results[s, h, ARMS[0], seeds[0]]["windows"]
        facts.append(
            f"{s}{h}: {n} of {len(ett.test_origins(h))} test windows hold an hour of a {CALENDAR} holiday"
        )
    total = time.perf_counter() - started
    facts.append(f"total wall time {total:.0f} s; load average {load_start:.2f} at start, "
                 f"{os.getloadavg()[0]:.2f} at end")  # fmt: skip
    print("\n".join(["", *log, *table, "", *facts]))
    out = args.out or (None if args.quick else RESULTS)
    if out is not None:
        write_result(out, arms_report(
            f"ETTh1: public holidays ({CALENDAR}) as known-future inputs, chosen on validation",
            [f"date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
             f"command: `{command_line(__spec__.name, argv)}`",
             f"machine: {machine}, no GPU",
             f"seeds: {seeds}; protocol: benchmarks/ett.py (MSE / MAE on standardized values, every window)"],
            table, facts, log,
        ))  # fmt: skip


if __name__ == "__main__":
    main()
