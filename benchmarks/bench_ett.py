"""The lstmcast LSTM on the ETTh1 standard protocol, next to Repeat and the published models.

Why: ETTh1 is the public benchmark with published LSTM figures (LSTMa, DeepAR in the Informer paper)
and strong linear and transformer ones (DLinear, NLinear, PatchTST), so it says where the model stands
on real data. Protocol, scaling and scoring live in benchmarks/ett.py.

Settings are chosen on the protocol's validation rows only (benchmarks/selection.py): every candidate
in CANDIDATES is fitted with each seed on rows [0, 11520) (training targets in [0, 8640), early stopping
on windows ending in [8640, 11520)) and scored by MSE on every validation window; the candidate with
the lowest mean validation MSE is then scored on the test windows, once. Rows report the mean and std
over seeds. Training length is a step budget with early stopping, never a wall-clock limit, so the
figures do not depend on how busy the machine was.

Run (from the repository root):
    .venv/bin/python -m benchmarks.bench_ett                  # the target rows, 3 seeds, ~30 min on 2 cores
    .venv/bin/python -m benchmarks.bench_ett --quick          # smoke run: one setting, one seed, 2 candidates
    .venv/bin/python -m benchmarks.bench_ett --rows S96,S336,M96,S24 --seeds 0 1 2
Writes benchmarks/results/ett.md (the --quick run writes nothing unless --out is given).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from benchmarks import ett
from benchmarks.common import command_line, result_path, write_result
from benchmarks.selection import DEFAULT_SEEDS, choose, mean_std, selection_lines
from lstm_model import ModelConfig, Panel, TrainConfig, fit, predict_origins
from lstm_model.train import TrainResult
from lstm_model.windows import n_val_steps

RESULTS = result_path("ett.md")
PANEL_END = ett.VAL[1]  # the model is fitted on rows [0, 11520): train + validation, never a test row
VAL_FRACTION = (ett.VAL[1] - ett.VAL[0]) / PANEL_END  # fit's validation tail = the protocol's validation rows
DEFAULT_ROWS = ("S96", "S336", "M96")
# Targets, as means over seeds: the strongest published row of each (NLinear for S, PatchTST for M).
MSE_TARGETS = {("S", 96): 0.053, ("S", 336): 0.081, ("M", 96): 0.370}
LSTM_BASELINES = ("LSTMa", "DeepAR")


@dataclass(frozen=True)
class Candidate:
    """The knobs of one candidate setting (everything else is fixed for all of them)."""

    loss: str = "pinball"  # pinball on the median | mse (the protocol's metric)
    linear_init: bool = False  # the skip path starts at the least-squares linear forecaster
    lookback: int = 336  # the DLinear / PatchTST setting
    patch_len: int = 24
    hidden_size: int = 64
    num_layers: int = 1
    learning_rate: float = 5e-4
    batch_size: int = 256
    steps_per_epoch: int = 50
    max_epochs: int = 100
    patience: int = 10

    def describe(self) -> str:
        return (
            f"loss {self.loss}, linear_init {self.linear_init}, lookback {self.lookback}, patch_len "
            f"{self.patch_len}, hidden {self.hidden_size}, layers {self.num_layers}, "
            f"lr {self.learning_rate}, "
            f"batch {self.batch_size}, {self.steps_per_epoch} steps x <= {self.max_epochs} epochs, "
            f"patience {self.patience}"
        )


# The levers tried: the loss (the metric is MSE) and where the linear skip path starts.
CANDIDATES = {
    "pinball": Candidate(),
    "pinball+linear": Candidate(linear_init=True),
    "mse": Candidate(loss="mse"),
    "mse+linear": Candidate(loss="mse", linear_init=True),
}


def build_panel(df: pd.DataFrame, setting: str, end: int, future: pd.DataFrame | None = None) -> Panel:
    """Rows [0, end) as a panel: one series per forecast variable (channel independence for M), with the
    known-future columns of `future` (one row per row of `df`) shared by every series."""
    rows = df.iloc[:end]
    targets = ett.columns(setting)
    empty = np.empty((end, 0), np.float32)
    known = empty if future is None else future.iloc[:end].to_numpy(np.float32)
    return Panel(
        series_ids=targets,
        target=tuple(rows[v].to_numpy(np.float32) for v in targets),
        past_covariates=tuple(empty for _ in targets),
        future_covariates=tuple(known for _ in targets),
        future_names=() if future is None else tuple(future.columns),
    )


def fit_one(
    df: pd.DataFrame, setting: str, horizon: int, cand: Candidate, seed: int, threads: int | None,
    future: pd.DataFrame | None = None,
) -> tuple[TrainResult, float]:  # fmt: skip
    """Fit on rows [0, 11520) with the protocol's validation rows as the early-stopping tail."""
    # Windows whose targets end in the last n_val rows of the panel are validation windows; every
    # training target then lies in the protocol's train rows.
    assert n_val_steps(PANEL_END, horizon, VAL_FRACTION) == ett.VAL[1] - ett.VAL[0]
    model_cfg = ModelConfig(
        lookback=cand.lookback, horizon=horizon, hidden_size=cand.hidden_size, num_layers=cand.num_layers,
        patch_len=cand.patch_len, quantiles=(0.5,),
    )  # fmt: skip
    train_cfg = TrainConfig(
        max_epochs=cand.max_epochs, steps_per_epoch=cand.steps_per_epoch, batch_size=cand.batch_size,
        learning_rate=cand.learning_rate, patience=cand.patience, val_fraction=VAL_FRACTION,
        max_val_windows=2048, time_budget_s=None, seed=seed, threads=threads, calibrate=False,
        linear_init=cand.linear_init, loss=cand.loss,
    )  # fmt: skip
    t0 = time.perf_counter()
    result = fit(build_panel(df, setting, PANEL_END, future), model_cfg, train_cfg)
    return result, time.perf_counter() - t0


def forecasts(
    df: pd.DataFrame,
    setting: str,
    result: TrainResult,
    origins: np.ndarray,
    future: pd.DataFrame | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(median forecasts, truth), both (n_windows, H, C) and standardized with the train rows."""
    horizon = result.model_config.horizon
    end = int(origins.max()) + horizon
    panel = build_panel(df, setting, end, future)  # rows after an origin are truth only: never model inputs
    pred = predict_origins(result, panel, origins)[..., result.model_config.median_index]  # (C, n, H)
    values = df[list(ett.columns(setting))].to_numpy(np.float64)
    scaler = ett.TrainScaler.fit(values)
    truth = ett.truth_windows(scaler.transform(values), origins, horizon)
    return scaler.transform(np.moveaxis(pred, 0, -1)), truth


def score(
    df: pd.DataFrame,
    setting: str,
    result: TrainResult,
    origins: np.ndarray,
    future: pd.DataFrame | None = None,
) -> tuple[float, float]:
    """(MSE, MAE) of the median forecasts from `origins`, on values standardized with the train rows."""
    return ett.evaluate(*forecasts(df, setting, result, origins, future))


def val_origins(horizon: int) -> np.ndarray:
    """First forecast row of every validation window: the horizon lies inside the validation rows."""
    return np.arange(ett.VAL[0], ett.VAL[1] - horizon + 1, dtype=np.int64)


def parse_row(row: str) -> tuple[str, int]:
    setting, horizon = row[:1], row[1:]
    if setting not in ("S", "M") or not horizon.isdigit():
        raise SystemExit(f"a row is S or M and a horizon, e.g. S96 or M336; got {row!r}")
    return setting, int(horizon)


def published(setting: str, horizon: int, name: str) -> str:
    pub = ett.PUBLISHED.get((setting, horizon), {}).get(name)
    return f"{pub[0]:.3f} / {pub[1]:.3f}" if pub else ""


def verdict(setting: str, horizon: int, mse: float, mae: float) -> str:
    """The target of the row (a mean over seeds), or the comparison with the published LSTMs."""
    target = MSE_TARGETS.get((setting, horizon))
    if target is not None:
        return f"mean MSE <= {target}: {'met' if mse <= target else 'NOT met'}"
    pub = ett.PUBLISHED.get((setting, horizon), {})
    out = [
        f"< {name}: {'yes' if mse < pub[name][0] and mae < pub[name][1] else 'NO'}"
        for name in LSTM_BASELINES
        if name in pub
    ]
    return "; ".join(out) or "-"


def repeat_check(df: pd.DataFrame) -> list[str]:
    """Repeat, M, against the DLinear paper's table (dropping the last batch as the papers do)."""
    lines = [
        "| Repeat, M | H=96 | H=192 | H=336 | H=720 |",
        "|---|---|---|---|---|",
    ]
    for label, drop in (("all windows", False), ("last batch of 32 dropped (papers)", True)):
        cells = [ett.repeat_scores(df, "M", h, drop) for h in (96, 192, 336, 720)]
        lines.append(f"| {label} | " + " | ".join(f"{m:.3f} / {a:.3f}" for m, a in cells) + " |")
    pub = [ett.PUBLISHED[("M", h)]["Repeat"] for h in (96, 192, 336, 720)]
    lines.append("| published (DLinear paper) | " + " | ".join(f"{m:.3f} / {a:.3f}" for m, a in pub) + " |")
    s_cells = [ett.repeat_scores(df, "S", h) for h in (96, 336)]
    lines.append("")
    lines.append(
        "Repeat, S, all windows: "
        + ", ".join(f"H={h} {m:.4f} / {a:.4f}" for h, (m, a) in zip((96, 336), s_cells, strict=True))
        + " (shared data README: 0.0693 / 0.2033 and 0.1133 / 0.2652)"
    )
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default=",".join(DEFAULT_ROWS), help="comma list of S<H> / M<H> rows")
    p.add_argument("--candidates", default=",".join(CANDIDATES), help="comma list of CANDIDATES names")
    p.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads per fit")
    p.add_argument("--quick", action="store_true", help="smoke run: S96, seed 0, two candidates, 5 epochs")
    p.add_argument("--out", default="", help="markdown file (default benchmarks/results/ett.md)")
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.seeds, args.candidates = "S96", [0], "pinball,mse"
    return args


def selected_candidates(args: argparse.Namespace) -> dict[str, Candidate]:
    """The candidates named by --candidates, cut to 5 epochs for --quick."""
    names = [c.strip() for c in args.candidates.split(",") if c.strip()]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise SystemExit(f"unknown candidate {unknown[0]!r}; choose from {list(CANDIDATES)}")
    candidates = {n: CANDIDATES[n] for n in names}
    if args.quick:
        candidates = {n: replace(c, max_epochs=5) for n, c in candidates.items()}
    return candidates


def run_row(
    df: pd.DataFrame, setting: str, horizon: int, candidates: dict[str, Candidate], seeds: list[int],
    threads: int | None,
) -> tuple[str, list[str]]:  # fmt: skip
    """One table row: every candidate and seed fitted and scored on validation, then the chosen candidate
    scored on the test windows, once -> (the row, its selection log)."""
    fits: dict[str, list[tuple[TrainResult, float]]] = {}
    val: dict[str, list[float]] = {}
    for name, cand in candidates.items():
        for seed in seeds:
            result, fit_s = fit_one(df, setting, horizon, cand, seed, threads)
            mse, _ = score(df, setting, result, val_origins(horizon))
            fits.setdefault(name, []).append((result, fit_s))
            val.setdefault(name, []).append(mse)
            print(
                f"{setting} H={horizon} {name} seed {seed}: validation MSE {mse:.4f}, "
                f"fit {fit_s:.0f} s, {len(result.history) - 1} epochs (best {result.best_epoch})",
                flush=True,
            )
    chosen = choose(val)
    lines = selection_lines(
        f"{setting} H={horizon}", val, "MSE", {n: c.describe() for n, c in candidates.items()}
    )
    print("\n".join(["", *lines, ""]), flush=True)
    # The test windows, scored once, for the chosen candidate only.
    test = [score(df, setting, r, ett.test_origins(horizon)) for r, _ in fits[chosen]]
    mses, maes = [t[0] for t in test], [t[1] for t in test]
    rep = ett.repeat_scores(df, setting, horizon)
    fit_cells = ", ".join(f"{s:.0f} ({len(r.history) - 1}, {r.best_epoch})" for r, s in fits[chosen])
    line = (
        f"| {setting} | {horizon} | {chosen} | {mean_std(mses)} / {mean_std(maes)} "
        f"| {', '.join(f'{m:.4f}' for m in mses)} | {rep[0]:.3f} / {rep[1]:.3f} "
        + "".join(f"| {published(setting, horizon, n)} " for n in ("LSTMa", "DeepAR", "DLinear"))
        + "".join(f"| {published(setting, horizon, n)} " for n in ("NLinear", "PatchTST"))
        + f"| {fit_cells} | {verdict(setting, horizon, float(np.mean(mses)), float(np.mean(maes)))} |"
    )
    print(line, flush=True)
    return line, [*lines, ""]


def report(
    df: pd.DataFrame, args: argparse.Namespace, argv: list[str] | None, table: list[str], log: list[str],
    loads: tuple[float, float], total: float,
) -> list[str]:  # fmt: skip
    """The results file: how it was run, the test table, the selection log and the protocol check."""
    return [
        "# ETTh1, standard protocol (Informer / DLinear)",
        "",
        f"- date: {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- command: `{command_line(__spec__.name, argv)}`",
        f"- machine: {platform.machine()}, {os.cpu_count()} vCPU, torch {torch.__version__}, "
        f"{args.threads} thread(s) per fit, no GPU; load average {loads[0]:.2f} at start, "
        f"{loads[1]:.2f} at end; total {total:.0f} s",
        f"- seeds: {args.seeds}; every candidate: quantiles [0.5], instance normalisation, no calendar, "
        "no covariates; training stops by early stopping or the epoch cap, never by wall-clock time",
        "- protocol: fit on rows [0, 11520) with val_fraction 0.25, so training targets are rows [0, 8640) "
        "and early stopping uses windows ending in [8640, 11520); the candidate is chosen by the MSE of the "
        "median over every validation window (origins 8640 .. 11520 - H); the chosen one's median is then "
        "scored on every test window (stride 1, origins 11520 .. 14400 - H), MSE / MAE on values "
        "standardized with the train rows' mean and population std. M: the seven variables are seven "
        "series of one channel-independent model.",
        "- published figures: Informer paper (LSTMa, DeepAR), DLinear paper (DLinear, NLinear, "
        "look-back 336), PatchTST paper (PatchTST/64); see the shared data README.",
        "",
        "## Test (chosen candidate only)",
        "",
        *table,
        "",
        "## Validation-only selection log",
        "",
        *log,
        "## Protocol check",
        "",
        *repeat_check(df),
        "",
    ]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows = [parse_row(r.strip()) for r in args.rows.split(",") if r.strip()]
    candidates = selected_candidates(args)
    started, load_start = time.perf_counter(), os.getloadavg()
    df = ett.load_etth1()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{args.threads} thread(s) per fit, load average {load_start[0]:.2f}; seeds {args.seeds}"
    )

    log: list[str] = []
    table = [
        "| setting | H | chosen | lstmcast MSE / MAE (mean ± std over seeds) | per seed MSE | Repeat | LSTMa "
        "| DeepAR | DLinear | NLinear | PatchTST | fit s per seed (epochs, best) | target |",
        "|" + "---|" * 13,
    ]
    for setting, horizon in rows:
        line, lines = run_row(df, setting, horizon, candidates, args.seeds, args.threads)
        log += lines
        table.append(line)
    total = time.perf_counter() - started
    load_end = os.getloadavg()
    print("\n".join(["", *table, "", f"total {total:.0f} s; load average {load_start[0]:.2f} at start, "
                     f"{load_end[0]:.2f} at end"]))  # fmt: skip

    out = args.out or ("" if args.quick else str(RESULTS))
    if out:
        write_result(out, report(df, args, argv, table, log, (load_start[0], load_end[0]), total))


if __name__ == "__main__":
    main()
