"""Public holidays as known-future inputs (`data.holidays`) on pasta_sales, an Italian grocery panel.

Why: the 27 days absent from pasta_sales are all Italian public holidays (the shops were closed), and
sales move on the days around them; a calendar fixed years ahead is exactly the known-in-advance input a
forecast may use. This shows whether the holiday features (lstm_model.features.HOLIDAY_NAMES for the
holidays library's "IT" calendar) help, with the choice made on validation only.

Protocol: benchmarks/pasta.py (fev-bench hierarchical_sales_1D; promotion flags never used). Two arms,
identical but for the holiday inputs: the setting bench_pasta chose on validation (`hidden-128`, one
model per seed) with the calendar only, and the same plus the IT holidays. Each arm is fitted with every
seed on the rows before the validation period and scored on the 5 validation windows before the first
test cutoff; the arm with the lower mean validation MASE is the one lstmcast would use. Both arms are
then scored once on the 10 test windows (a fit every `--refit-every` windows), so the table shows the
effect of the holidays as well as the choice; rows give mean and std over seeds. MASE is also split into
the test cells within NEAR days of a holiday and the others, where the effect is expected.

Run (from the repository root):
    .venv/bin/python -m benchmarks.bench_holidays --workers 2 --refit-every 5   # 18 fits, ~15 min on 2 cores
    .venv/bin/python -m benchmarks.bench_holidays --quick                        # smoke run: 3 epochs, 1 seed
Writes benchmarks/results/holidays.md (not with --quick unless --out is given).
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from benchmarks import pasta
from benchmarks.bench_pasta import (
    CANDIDATES,
    VALIDATION_WINDOWS,
    Settings,
    load_data,
    machine_line,
    run_jobs,
)
from benchmarks.common import command_line, result_path, write_result
from benchmarks.selection import DEFAULT_SEEDS, arms_report, choose, mean_std, selection_lines
from lstm_model.features import NEAR_DAYS, holiday_features

RESULTS = result_path("holidays.md")
CALENDAR = "IT"
BASE = CANDIDATES["hidden-128"]  # bench_pasta's validation choice (benchmarks/results/pasta.md), one model
ARMS = {"calendar": BASE, f"calendar + {CALENDAR} holidays": replace(BASE, holidays=CALENDAR)}
NEAR = 3  # days from a holiday that count as "near" in the split score


def blocks(cuts: list[int], every: int) -> list[tuple[int, ...]]:
    """The test cutoffs grouped by fit: a fit on the rows before a block's first cutoff forecasts it."""
    return [tuple(cuts[k : k + every]) for k in range(0, len(cuts), every)]


def near_holiday(data: pasta.PastaData) -> np.ndarray:
    """(n_steps,) bool: the day is a holiday or within NEAR days of one."""
    marks = holiday_features(data.dates, CALENDAR).to_numpy()
    threshold = 1.0 - (NEAR - 1) / NEAR_DAYS  # the before/after value NEAR days away
    return (marks[:, 0] == 1.0) | (marks[:, 1] >= threshold - 1e-6) | (marks[:, 2] >= threshold - 1e-6)


def split_mase(data: pasta.PastaData, by_cut: dict[int, np.ndarray], near: np.ndarray) -> tuple[float, float]:
    """MASE pooled over the test cells near a holiday, and over the others (missing targets skipped)."""
    parts: dict[bool, list[np.ndarray]] = {True: [], False: []}
    for cut, pred in by_cut.items():
        y = data.qty[:, cut : cut + pasta.HORIZON]
        ratio = np.abs(y - pred) / pasta.seasonal_error(data.qty[:, :cut])[:, None]
        mask = np.broadcast_to(near[cut : cut + pasta.HORIZON], ratio.shape)
        for flag in (True, False):
            cells = ratio[mask == flag]
            parts[flag].append(cells[np.isfinite(cells)])
    return float(np.mean(np.concatenate(parts[True]))), float(np.mean(np.concatenate(parts[False])))


def all_fits(
    arms: dict[str, Settings], seeds: list[int], val_origins: tuple[int, ...],
    test_blocks: list[tuple[int, ...]], args: argparse.Namespace, fit_s: list[float],
) -> dict[tuple[str, int, int], np.ndarray]:  # fmt: skip
    """Every fit of both arms at once -> {(arm, seed, fit_end): median forecasts (n_series, origins, H)}:
    the validation fit ends at the first validation origin, each test fit at its block's first cutoff."""
    keys = [(name, seed, val_origins[0], val_origins) for name in arms for seed in seeds]
    keys += [(name, seed, block[0], block) for name in arms for seed in seeds for block in test_blocks]
    preds = run_jobs([(arms[n], seed, end, origins) for n, seed, end, origins in keys], args.threads,
                     args.workers, fit_s)  # fmt: skip
    return {(n, seed, end): np.clip(p, 0.0, None) for (n, seed, end, _), p in zip(keys, preds, strict=True)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 3 epochs, 1 seed, 2 test windows")
    p.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    p.add_argument("--threads", type=int, default=1, help="torch threads per fit")
    p.add_argument("--workers", type=int, default=1, help="fits run at once, each in its own process")
    p.add_argument("--refit-every", type=int, default=5, help="test windows per fit")
    p.add_argument(
        "--out", type=Path, default=None, help=f"results file (default {RESULTS}; not with --quick)"
    )
    args = p.parse_args(argv)
    started = time.perf_counter()
    data = load_data()
    arms, seeds, cuts = ARMS, args.seeds, pasta.cutoffs(data.n_steps)
    if args.quick:
        arms = {n: replace(s, max_epochs=3) for n, s in ARMS.items()}
        seeds, cuts = seeds[:1], [cuts[0], cuts[-1]]
        args.refit_every = 1
    start = pasta.cutoffs(data.n_steps)[0] - VALIDATION_WINDOWS * pasta.HORIZON
    val_origins = tuple(start + k * pasta.HORIZON for k in range(VALIDATION_WINDOWS))
    test_blocks = blocks(cuts, args.refit_every)
    print(f"machine: {machine_line(args.threads)}", flush=True)
    print(
        f"validation from {data.dates[start].date()}, test from {data.dates[cuts[0]].date()}; seeds {seeds}"
    )
    fit_s: list[float] = []
    preds = all_fits(arms, seeds, val_origins, test_blocks, args, fit_s)

    val = {
        name: [float(np.mean([
            pasta.mase(data.qty[:, o : o + pasta.HORIZON], preds[name, seed, start][:, k], data.qty[:, :o])
            for k, o in enumerate(val_origins)
        ])) for seed in seeds]
        for name in arms
    }  # fmt: skip
    log = selection_lines("holidays or not (one model per seed)", val, "MASE",
                          {n: s.describe() for n, s in arms.items()})  # fmt: skip
    chosen = choose(val)
    near = near_holiday(data)
    rows = [
        "| arm | validation MASE | test MASE | test WAPE | test MASE near a holiday | elsewhere | chosen |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in arms:
        scores, splits = [], []
        for seed in seeds:
            by_cut = {c: preds[name, seed, b[0]][:, k] for b in test_blocks for k, c in enumerate(b)}
            scores.append(pasta.evaluate(lambda _d, cut, by_cut=by_cut: by_cut[cut], data, cuts))
            splits.append(split_mase(data, by_cut, near))
        rows.append(
            f"| {name} | {mean_std(val[name])} | {mean_std([s.mase for s in scores])} | "
            f"{mean_std([s.wape for s in scores])} | {mean_std([s[0] for s in splits])} | "
            f"{mean_std([s[1] for s in splits])} | {'**chosen**' if name == chosen else ''} |"
        )
    cells = int(sum(np.isfinite(data.qty[:, c : c + pasta.HORIZON])[:, near[c : c + pasta.HORIZON]].sum()
                    for c in cuts))  # fmt: skip
    total = time.perf_counter() - started
    facts = [
        f"near-holiday test cells (a holiday or within {NEAR} days of one, target present): {cells}",
        f"fits: {len(fit_s)}, {np.mean(fit_s):.0f} s each on average; total wall time {total:.0f} s",
    ]
    print("\n".join(["", *log, "", *rows, "", *facts]))
    out = args.out or (None if args.quick else RESULTS)
    if out is not None:
        write_result(out, arms_report(
            f"pasta_sales: public holidays ({CALENDAR}) as known-future inputs, chosen on validation",
            [f"date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
             f"command: `{command_line(__spec__.name, argv)}`",
             f"machine: {machine_line(args.threads)}",
             f"seeds: {seeds}; a test fit every {args.refit_every} window(s); protocol: benchmarks/pasta.py"],
            rows, facts, log,
        ))  # fmt: skip


if __name__ == "__main__":
    main()
