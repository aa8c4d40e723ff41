"""The lstmcast LSTM on pasta_sales (fev-bench `hierarchical_sales_1D`), next to the published models.

Why: a retail panel of intermittent daily sales is the use case lstmcast is built for, and fev-bench
publishes DeepAR, TFT, PatchTST, LightGBM, Chronos-Bolt and statistical baselines on exactly this protocol.
Protocol and scoring live in benchmarks/pasta.py; Seasonal Naive and Naive are recomputed here and must
match the published values, which checks the windows and the metric before any model number.

Inputs: units sold (absent days forward-filled, as the published baselines saw them) and sin/cos
day-of-week and day-of-year as known-future inputs. The promotion flags are never used: they were
recorded from sales (on 27 of the 118 series the flag is 1 on exactly the days with sales), so a
window's flags would tell the model which days are zeros. The published models used no covariates.

Settings are chosen on a validation period before the test windows only (benchmarks/selection.py):
each candidate is fitted with every seed on the rows before VALIDATION_START (5 windows of 28 days
before the first test cutoff) and scored by MASE on those 5 windows from that one fit. Stage 2 compares
the stage-1 winner alone with an ensemble of ENSEMBLE seeds of it (forecasts averaged). The chosen
setting is then fitted on the rows before a test cutoff every `--refit-every` windows (1, the fev
protocol: a fit per window; a fit forecasts its window and the following ones up to the next refit, so it
never sees a later window's rows) and scored once; rows give the mean and std over seeds (seed
groups for an ensemble). Training stops by early stopping or the epoch cap, never by wall-clock time.

Run (from the repository root):
    .venv/bin/python -m benchmarks.bench_pasta --workers 2 --refit-every 5   # 45 fits: ~40 min on 2 cores
    .venv/bin/python -m benchmarks.bench_pasta            # a fit per test window: 117 fits, ~3 hours
    .venv/bin/python -m benchmarks.bench_pasta --quick    # smoke run: 2 candidates, 1 seed, 2 test windows
Writes benchmarks/results/pasta.md (not with --quick unless --out is given).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import multiprocessing
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks import pasta
from benchmarks.common import command_line, result_path, write_result
from benchmarks.selection import DEFAULT_SEEDS, choose, mean_std, selection_lines
from lstm_model import ModelConfig, Panel, TrainConfig, fit, predict_origins
from lstm_model.features import calendar_features, holiday_features

RESULTS = result_path("pasta.md")
TARGET_MASE = 0.68  # below the flat 84-day median (0.694), DeepAR (0.697) and Chronos-Bolt (0.686)
VALIDATION_WINDOWS = 5
ENSEMBLE = 3  # seeds averaged by the ensemble candidate of stage 2


@dataclass(frozen=True)
class Settings:
    """The knobs of one candidate (all printed with the results)."""

    lookback: int = 84
    patch_len: int = 7
    hidden_size: int = 64
    num_layers: int = 1
    embedding_dim: int = 8
    dropout: float = 0.1
    calendar: bool = True
    holidays: str | None = None  # a holidays-library calendar ("IT") as known-future inputs
    learning_rate: float = 3e-3
    batch_size: int = 256
    steps_per_epoch: int = 50
    max_epochs: int = 40
    patience: int = 6
    val_fraction: float = 0.1
    linear_init: bool = False
    ensemble: int = 1  # models per forecast, each with its own seed, medians averaged

    def describe(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.__dict__.items())


# Stage 1: the levers for intermittent sales, one at a time against the base: how recent the early-
# stopping tail is (the model never trains on its targets), the linear skip start, the series embedding,
# the lookback and the width.
BASE = Settings()
CANDIDATES = {
    "base": BASE,
    "recent-tail": replace(BASE, val_fraction=0.025),
    "linear-init": replace(BASE, linear_init=True),
    "no-embedding": replace(BASE, embedding_dim=0),
    "lookback-168": replace(BASE, lookback=168),
    "hidden-128": replace(BASE, hidden_size=128),
}


def future_covariates(s: Settings, data: pasta.PastaData) -> tuple[tuple[str, ...], np.ndarray]:
    """Known-in-advance inputs on the whole grid -> (names, (n_series, n_steps, F)): the calendar and the
    public holidays, the same for every series."""
    parts = []
    if s.calendar:
        parts.append(calendar_features(data.dates, pasta.FREQ))
    if s.holidays:
        parts.append(holiday_features(data.dates, s.holidays))
    if not parts:
        return (), np.empty((data.n_series, data.n_steps, 0))
    frame = pd.concat(parts, axis=1)
    known = frame.to_numpy(np.float64)  # (n_steps, F)
    return tuple(frame.columns), np.broadcast_to(known, (data.n_series, *known.shape))


def build_panel(data: pasta.PastaData, cut: int, names: tuple[str, ...], fut: np.ndarray) -> Panel:
    """Rows [0, cut) as an end-aligned panel: everything a forecast at `cut` may see."""
    target = pasta.fill_missing(data.qty[:, :cut])
    return Panel(
        series_ids=data.series_ids,
        target=tuple(target),
        past_covariates=tuple(np.empty((cut, 0), np.float32) for _ in data.series_ids),
        future_covariates=tuple(fut[:, :cut]),
        past_names=(),
        future_names=names,
    )


def configs(s: Settings, seed: int, threads: int | None) -> tuple[ModelConfig, TrainConfig]:
    model_cfg = ModelConfig(
        lookback=s.lookback, horizon=pasta.HORIZON, hidden_size=s.hidden_size, num_layers=s.num_layers,
        dropout=s.dropout, patch_len=s.patch_len, embedding_dim=s.embedding_dim, quantiles=(0.5,),
    )  # fmt: skip
    train_cfg = TrainConfig(
        max_epochs=s.max_epochs, steps_per_epoch=s.steps_per_epoch, batch_size=s.batch_size,
        learning_rate=s.learning_rate, patience=s.patience, val_fraction=s.val_fraction,
        time_budget_s=None, seed=seed, threads=threads, calibrate=False, linear_init=s.linear_init,
    )  # fmt: skip
    return model_cfg, train_cfg


@functools.cache
def load_data() -> pasta.PastaData:
    """The data set, read once per process: each fit (in this process or a worker) reads it from here."""
    return pasta.load()


def fit_predict(s: Settings, seed: int, fit_end: int, origins: tuple[int, ...], threads: int | None
                ) -> tuple[np.ndarray, float]:  # fmt: skip
    """One model fitted on rows [0, fit_end) with `seed` -> (median forecasts (n_series, len(origins), H),
    fit seconds). Inputs after `fit_end` are only ever the lookback of a later origin."""
    data = load_data()
    names, fut = future_covariates(s, data)
    train = build_panel(data, fit_end, names, fut)
    full = build_panel(data, max(origins) + pasta.HORIZON, names, fut)
    model_cfg, train_cfg = configs(s, seed, threads)
    t0 = time.perf_counter()
    result = fit(train, model_cfg, train_cfg)
    fit_s = time.perf_counter() - t0
    return predict_origins(result, full, np.asarray(origins))[..., 0], fit_s


Job = tuple[Settings, int, int, tuple[int, ...]]  # settings, seed, fit_end, origins


def run_jobs(jobs: list[Job], threads: int | None, workers: int, fit_s: list[float]) -> list[np.ndarray]:
    """Fit every job, `workers` processes at a time (each with `threads` torch threads); the fits are
    independent and seeded, so the results do not depend on `workers`."""
    if workers == 1:
        out = [fit_predict(*job, threads) for job in jobs]
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            out = list(pool.map(fit_predict, *zip(*jobs, strict=True), [threads] * len(jobs)))
    fit_s.extend(t for _, t in out)
    return [pred for pred, _ in out]


def seed_groups(seeds: list[int], size: int) -> list[list[int]]:
    """Seed lists of the independent runs: [s] per seed, or `size` consecutive seeds per ensemble run."""
    if size == 1:
        return [[s] for s in seeds]
    return [[s * size + k for k in range(size)] for s in seeds]


def validation_scores(data: pasta.PastaData, candidates: dict[str, Settings], seeds: list[int],
                      threads: int | None, workers: int) -> dict[str, list[float]]:  # fmt: skip
    """MASE on the validation windows, one value per seed group, for every candidate (all fits at once)."""
    start = pasta.cutoffs(data.n_steps)[0] - VALIDATION_WINDOWS * pasta.HORIZON
    origins = tuple(start + k * pasta.HORIZON for k in range(VALIDATION_WINDOWS))
    keys = [(name, g) for name, s in candidates.items() for g in seed_groups(seeds, s.ensemble)]
    jobs = [(candidates[name], seed, start, origins) for name, g in keys for seed in g]
    preds = iter(run_jobs(jobs, threads, workers, []))
    out: dict[str, list[float]] = {name: [] for name in candidates}
    for name, g in keys:
        pred = np.clip(np.mean([next(preds) for _ in g], axis=0), 0.0, None)  # ensemble: mean of medians
        out[name].append(float(np.mean([
            pasta.mase(data.qty[:, o : o + pasta.HORIZON], pred[:, k], data.qty[:, :o])
            for k, o in enumerate(origins)
        ])))  # fmt: skip
    return out


def test_scores(data: pasta.PastaData, s: Settings, seeds: list[int], cuts: list[int], refit_every: int,
                threads: int | None, workers: int, fit_s: list[float]) -> list[pasta.Score]:  # fmt: skip
    """Each seed group scored on the test windows: a fit on the rows before the cutoff of every
    `refit_every`-th window, forecasting that window and the next ones up to the following refit."""
    blocks = [tuple(cuts[k : k + refit_every]) for k in range(0, len(cuts), refit_every)]
    groups = seed_groups(seeds, s.ensemble)
    jobs = [(s, seed, block[0], block) for g in groups for block in blocks for seed in g]
    preds = iter(run_jobs(jobs, threads, workers, fit_s))
    scores = []
    for g in groups:
        by_cut: dict[int, np.ndarray] = {}
        for block in blocks:
            pred = np.clip(np.mean([next(preds) for _ in g], axis=0), 0.0, None)  # (n_series, len(block), H)
            by_cut.update({cut: pred[:, k] for k, cut in enumerate(block)})
        scores.append(pasta.evaluate(lambda _d, cut, by_cut=by_cut: by_cut[cut], data, cuts))
    return scores


def machine_line(threads: int | None) -> str:
    load = os.getloadavg()
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}, "
        f"torch {torch.__version__}, {threads or torch.get_num_threads()} torch thread(s) per fit, "
        f"cuda {torch.cuda.is_available()}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 2 candidates, 1 seed, 2 test windows")
    p.add_argument("--candidates", default=",".join(CANDIDATES), help="comma list of CANDIDATES names")
    p.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    p.add_argument("--no-ensemble-stage", action="store_true", help="skip stage 2 (the seed ensemble)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per fit")
    p.add_argument("--workers", type=int, default=1, help="fits run at once, each in its own process")
    p.add_argument(
        "--refit-every", type=int, default=1,
        help="test windows per fit (1: the fev protocol; 10: one fit per seed, as validation)",
    )  # fmt: skip
    p.add_argument(
        "--out", type=Path, default=None, help=f"results file (default {RESULTS}; not with --quick)"
    )
    return p.parse_args(argv)


def checked_args(args: argparse.Namespace) -> tuple[dict[str, Settings], list[int], list[int] | None]:
    """(candidates, seeds, test window indices or None for all) from the options, refusing bad ones."""
    names = [c.strip() for c in args.candidates.split(",") if c.strip()]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise SystemExit(f"unknown candidate {unknown[0]!r}; choose from {list(CANDIDATES)}")
    candidates = {n: CANDIDATES[n] for n in names}
    counts = {"--workers": args.workers, "--refit-every": args.refit_every, "--threads": args.threads}
    for flag, value in counts.items():
        if value < 1:
            raise SystemExit(f"{flag} must be at least 1, got {value}")
    if args.quick:
        candidates = {n: replace(CANDIDATES[n], max_epochs=3) for n in ("base", "recent-tail")}
        return candidates, [0], [0, 9]
    return candidates, args.seeds, None


def select(
    data: pasta.PastaData, candidates: dict[str, Settings], seeds: list[int], args: argparse.Namespace
) -> tuple[str, Settings, list[str]]:
    """Validation only: the candidates, then the winner alone against an ensemble of it ->
    (the chosen name, its settings, the selection log)."""
    log: list[str] = []
    val = validation_scores(data, candidates, seeds, args.threads, args.workers)
    for name in candidates:
        print(f"validation {name}: MASE {mean_std(val[name])}", flush=True)
    winner = choose(val)
    described = {n: s.describe() for n, s in candidates.items()}
    log += [*selection_lines("stage 1 (one model per seed)", val, "MASE", described), ""]
    final = {winner: candidates[winner]}
    if not args.no_ensemble_stage and not args.quick:
        ens = replace(candidates[winner], ensemble=ENSEMBLE)
        name = f"{winner} x{ENSEMBLE}"
        ens_val = validation_scores(data, {name: ens}, seeds, args.threads, args.workers)
        stage2 = {winner: val[winner], **ens_val}
        print(f"validation {name}: MASE {mean_std(stage2[name])}", flush=True)
        final = {winner: candidates[winner], name: ens}
        log += [*selection_lines(
            f"stage 2 (the stage-1 winner alone or as an ensemble of {ENSEMBLE} seeds; one value per seed "
            "group)", stage2, "MASE", {winner: described[winner], name: ens.describe()},
        ), ""]  # fmt: skip
        winner = choose(stage2)
    return winner, final[winner], log


Tables = tuple[list[str], list[str], list[str]]  # the test table, MASE per window, checks


def score_test_windows(
    data: pasta.PastaData, winner: str, chosen: Settings, seeds: list[int], cuts: list[int], full_run: bool,
    args: argparse.Namespace,
) -> Tables:  # fmt: skip
    """The baselines, then the chosen setting, scored once on the test windows -> (table lines, MASE per
    window of each seed group, checks against the published figures and the target)."""
    rows: list[tuple[str, str, str, str]] = []
    for name, fc in (
        ("Seasonal Naive", pasta.seasonal_naive_forecaster),
        ("Naive", pasta.naive_forecaster),
        ("Median of last 84 days", pasta.median_forecaster(84)),
    ):
        sc = pasta.evaluate(fc, data, cuts)
        rows.append((name, f"{sc.mase:.4f}", f"{sc.wape:.4f}", "-"))
    fit_s: list[float] = []
    scores = test_scores(data, chosen, seeds, cuts, args.refit_every, args.threads, args.workers, fit_s)
    mases = [s.mase for s in scores]
    rows.append((
        f"lstmcast LSTM ({winner})", mean_std(mases), mean_std([s.wape for s in scores]),
        f"{np.mean(fit_s):.0f} per fit, {len(fit_s)} fits",
    ))  # fmt: skip
    lines = ["| model | MASE | WAPE | published MASE | fit s |", "|---|---|---|---|---|"]
    for name, m, w, f in rows:
        pub = pasta.PUBLISHED_MASE.get(name)
        lines.append(f"| {name} | {m} | {w} | {f'{pub:.4f}' if pub else '-'} | {f} |")
    for name, value in pasta.PUBLISHED_MASE.items():
        if name not in ("Seasonal Naive", "Naive"):
            lines.append(f"| {name} (published) | - | - | {value:.4f} | - |")
    per_window = [
        f"seed group {k}: MASE per window " + ", ".join(f"{m:.3f}" for m in s.per_window)
        for k, s in enumerate(scores)
    ]
    checks = []
    if full_run:
        for name, m, _, _ in rows[:2]:
            ok = m == f"{pasta.PUBLISHED_MASE[name]:.4f}"
            checks.append(f"{name} reproduces the published {pasta.PUBLISHED_MASE[name]:.4f}: {ok}")
        mean = float(np.mean(mases))
        checks.append(f"mean MASE {mean:.4f} <= {TARGET_MASE}: {'met' if mean <= TARGET_MASE else 'NOT met'}")
    else:
        checks.append("subset of windows: published comparisons and the target apply to the full run only")
    return lines, per_window, checks


def report(
    data: pasta.PastaData, argv: list[str] | None, args: argparse.Namespace, seeds: list[int], winner: str,
    chosen: Settings, tables: Tables, log: list[str], total: float,
) -> list[str]:  # fmt: skip
    """The results file: how it was run, the test table with its checks, the selection log."""
    lines, per_window, checks = tables
    first_val = data.dates[pasta.cutoffs(data.n_steps)[0] - VALIDATION_WINDOWS * pasta.HORIZON].date()
    return [
        "# pasta_sales (fev-bench hierarchical_sales_1D): lstmcast LSTM vs published models",
        "",
        f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- command: `{command_line(__spec__.name, argv)}`",
        f"- machine: {machine_line(args.threads)}",
        f"- seeds: {seeds}; chosen: `{winner}` = `{chosen.describe()}`",
        "- protocol: benchmarks/pasta.py (daily grid, absent days missing, H=28, 10 windows every 28 days, "
        "last one ending at the last row, MASE with seasonality 7, missing targets skipped); a fit "
        f"every {args.refit_every} test window(s) on the rows before its cutoff; inputs: units sold "
        "and the calendar, no promotion flags "
        "(they leak the target), as the published models",
        "",
        "## Test (chosen setting only, scored once)",
        "",
        *lines,
        "",
        *[f"- {c}" for c in per_window + checks],
        f"- total wall time: {total:.0f} s",
        "",
        "## Validation-only selection log",
        "",
        f"Validation: one fit per candidate and seed on the rows before {first_val}, scored on the "
        f"{VALIDATION_WINDOWS} windows of 28 days that follow it (all before the first test cutoff).",
        "",
        *log,
    ]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    candidates, seeds, test_windows = checked_args(args)
    started = time.perf_counter()
    data = load_data()
    all_cuts = pasta.cutoffs(data.n_steps)
    cuts = [all_cuts[k] for k in test_windows] if test_windows else all_cuts
    print(f"machine: {machine_line(args.threads)}")
    first_val = data.dates[all_cuts[0] - VALIDATION_WINDOWS * pasta.HORIZON].date()
    print(
        f"data: {data.n_series} series, {data.n_steps} days {data.dates[0].date()}..{data.dates[-1].date()}; "
        f"validation windows from {first_val}, test windows from {data.dates[all_cuts[0]].date()}; "
        f"seeds {seeds}"
    )
    winner, chosen, log = select(data, candidates, seeds, args)
    print("\n".join(["", *log]), flush=True)
    tables = score_test_windows(data, winner, chosen, seeds, cuts, len(cuts) == len(all_cuts), args)
    lines, per_window, checks = tables
    total = time.perf_counter() - started
    print("\n".join(["", *lines, "", *per_window, *checks, f"total wall time: {total:.0f} s"]))

    out = args.out or (None if args.quick else RESULTS)
    if out is not None:
        write_result(out, report(data, argv, args, seeds, winner, chosen, tables, log, total))


if __name__ == "__main__":
    main()
