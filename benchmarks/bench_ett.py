"""The lstmcast LSTM on the ETTh1 standard protocol, next to Repeat and the published LSTM baselines.

Why: ETTh1 is the public benchmark with published LSTM figures (LSTMa, DeepAR in the Informer paper)
and strong linear ones (DLinear, NLinear), so it says where the model stands on real data.
Protocol, scaling and scoring live in benchmarks/ett.py.

Run (from the repository root):
    .venv/bin/python benchmarks/bench_ett.py                 # S and M, about 12 minutes on 2 cores
    .venv/bin/python benchmarks/bench_ett.py --quick         # smoke run, about 1 minute
    .venv/bin/python benchmarks/bench_ett.py --settings S --horizons 96 --budget 60
Writes benchmarks/results/ett.md (the --quick run writes nothing unless --out is given).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the project root, for lstm_model

from benchmarks import ett  # noqa: E402
from lstm_model import ModelConfig, Panel, TrainConfig, fit, predict_origins  # noqa: E402
from lstm_model.features import calendar_features  # noqa: E402
from lstm_model.windows import n_val_steps  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "ett.md"
PANEL_END = ett.VAL[1]  # the model is fitted on rows [0, 11520): train + validation, never a test row
VAL_FRACTION = (ett.VAL[1] - ett.VAL[0]) / PANEL_END  # fit's validation tail = the protocol's validation rows
DEFAULT_HORIZONS = {"S": (24, 48, 96, 168, 336, 720), "M": (96, 336), "S+cov": (96,)}
# The targets: stricter than the LSTM baselines of the Informer paper at every horizon they
# report, and at most DLinear's MSE at H=96.
MSE_CAPS = {("S", 96): 0.056, ("M", 96): 0.375}
LSTM_BASELINES = ("LSTMa", "DeepAR")


@dataclass(frozen=True)
class Run:
    """One fit: a setting, a horizon and the knobs that were tuned."""

    setting: str  # "S" (OT only), "M" (seven channel-independent series), "S+cov" (OT, six past covariates)
    horizon: int
    lookback: int
    patch_len: int
    hidden_size: int
    num_layers: int
    learning_rate: float
    budget_s: float
    batch_size: int
    steps_per_epoch: int
    patience: int
    instance_norm: bool
    calendar: bool
    embedding_dim: int
    quantiles: tuple[float, ...]
    seed: int


def default_lookback(horizon: int) -> int:
    """336 (the DLinear setting) for all horizons; a multiple of the default patch length 24."""
    return 336


def build_panel(df: pd.DataFrame, setting: str, end: int, calendar: bool) -> Panel:
    """Rows [0, end) as a panel: one series per forecast variable (channel independence for M).

    "S+cov" gives OT the six load sensors as past covariates (known only up to the forecast origin).
    """
    rows = df.iloc[:end]
    targets = ett.columns("S" if setting == "S+cov" else setting)
    past_names = tuple(v for v in ett.VARIABLES if v != ett.TARGET) if setting == "S+cov" else ()
    past = rows[list(past_names)].to_numpy(np.float32) if past_names else np.empty((end, 0), np.float32)
    fut_df = calendar_features(rows["date"], "h") if calendar else pd.DataFrame(index=rows.index)
    future = fut_df.to_numpy(np.float32).reshape(end, -1)
    return Panel(
        series_ids=targets,
        target=tuple(rows[v].to_numpy(np.float32) for v in targets),
        past_covariates=tuple(past for _ in targets),
        future_covariates=tuple(future for _ in targets),
        past_names=past_names,
        future_names=tuple(fut_df.columns),
    )


def run_one(df: pd.DataFrame, run: Run, threads: int | None, verbose: bool = False) -> dict[str, object]:
    """Fit on train (+ validation for early stopping), score P50 on every test window."""
    # Windows whose targets end in the last n_val rows of the panel are validation windows; every
    # training target then lies in the protocol's train rows.
    assert n_val_steps(PANEL_END, run.horizon, VAL_FRACTION) == ett.VAL[1] - ett.VAL[0]
    model_cfg = ModelConfig(
        lookback=run.lookback,
        horizon=run.horizon,
        hidden_size=run.hidden_size,
        num_layers=run.num_layers,
        patch_len=run.patch_len,
        instance_norm=run.instance_norm,
        embedding_dim=run.embedding_dim,
        quantiles=run.quantiles,
    )
    train_cfg = TrainConfig(
        max_epochs=1000,  # the time budget and early stopping end training
        steps_per_epoch=run.steps_per_epoch,
        batch_size=run.batch_size,
        learning_rate=run.learning_rate,
        patience=run.patience,
        val_fraction=VAL_FRACTION,
        max_val_windows=2048,
        time_budget_s=run.budget_s,
        seed=run.seed,
        threads=threads,
        calibrate=False,  # only the median is scored
    )
    t0 = time.perf_counter()

    def show(e: dict[str, object]) -> None:
        print(
            f"  {run.setting} H={run.horizon} epoch {e['epoch']}: train {e['train_loss']:.4f} "
            f"val {e['val_loss']:.4f} lr {e['lr']:.1e} {e['seconds']:.1f} s",
            flush=True,
        )

    panel = build_panel(df, run.setting, PANEL_END, run.calendar)
    result = fit(panel, model_cfg, train_cfg, on_epoch=show if verbose else None)
    fit_s = time.perf_counter() - t0

    origins = ett.test_origins(run.horizon)
    full = build_panel(df, run.setting, ett.TEST[1], run.calendar)  # test rows: inputs and truth only
    t1 = time.perf_counter()
    pred = predict_origins(result, full, origins)[..., model_cfg.median_index]  # (C, n, H), original units
    predict_s = time.perf_counter() - t1

    names = ett.columns("S" if run.setting == "S+cov" else run.setting)
    values = df[list(names)].to_numpy(np.float64)
    scaler = ett.TrainScaler.fit(values)
    scaled_pred = scaler.transform(np.moveaxis(pred, 0, -1))  # (n, H, C) standardized
    truth = ett.truth_windows(scaler.transform(values), origins, run.horizon)
    mse, mae = ett.evaluate(scaled_pred, truth)
    rep_mse, rep_mae = ett.evaluate(
        ett.repeat_forecast(scaler.transform(values), origins, run.horizon), truth
    )
    return {
        "mse": mse,
        "mae": mae,
        "repeat": (rep_mse, rep_mae),
        "fit_s": fit_s,
        "predict_s": predict_s,
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "stopped": result.stopped_reason,
        "n_windows": len(origins),
    }


def targets(setting: str, horizon: int, mse: float, mae: float) -> str:
    """Which of the issue's targets this row meets: beat LSTMa/DeepAR (MSE and MAE), MSE caps at H=96."""
    key = ("S" if setting == "S+cov" else setting, horizon)
    pub = ett.PUBLISHED.get(key, {})
    out = []
    for name in LSTM_BASELINES:
        if name in pub:
            ok = mse < pub[name][0] and mae < pub[name][1]
            out.append(f"< {name}: {'yes' if ok else 'NO'}")
    if key in MSE_CAPS:
        cap = MSE_CAPS[key]
        out.append(f"MSE <= {cap}: {'yes' if mse <= cap else 'NO'}")
    return "; ".join(out) or "-"


def fmt_pub(setting: str, horizon: int, name: str) -> str:
    pub = ett.PUBLISHED.get(("S" if setting == "S+cov" else setting, horizon), {}).get(name)
    return f"{pub[0]:.3f} / {pub[1]:.3f}" if pub else ""


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
        + " (README: 0.0693 / 0.2033 and 0.1133 / 0.2652)"
    )
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", default="S,M", help="comma list of S, M, S+cov (default S,M)")
    p.add_argument("--horizons", default="", help="comma list; default S: 24,48,96,168,336,720, M: 96,336")
    p.add_argument("--lookback", type=int, default=0, help="0: per-horizon default (336)")
    p.add_argument("--patch-len", type=int, default=24)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--budget", type=float, default=150.0, help="training seconds per fit")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps-per-epoch", type=int, default=50)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--no-instance-norm", action="store_true")
    p.add_argument("--calendar", action="store_true", help="hour/day/year sin-cos as future covariates")
    p.add_argument("--embedding", type=int, default=0, help="per-series embedding width (M); 0: none")
    p.add_argument(
        "--quantiles", default="0.5", help="levels trained; only the median is scored: it gets all capacity"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (1: on a shared 2-core machine, 2 threads under load run ~10x slower)",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: S at 24 and 96, M at 96, 15 s fits")
    p.add_argument("--verbose", action="store_true", help="print every epoch's losses")
    p.add_argument(
        "--out", default="", help="markdown file (default benchmarks/results/ett.md; none with --quick)"
    )
    return p.parse_args(argv)


def plan(args: argparse.Namespace) -> list[Run]:
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    for s in settings:
        if s not in DEFAULT_HORIZONS:
            raise SystemExit(f"unknown setting {s!r}; choose from {sorted(DEFAULT_HORIZONS)}")
    chosen = tuple(int(h) for h in args.horizons.split(",") if h.strip())
    base = Run(
        setting="S",
        horizon=1,
        lookback=0,
        patch_len=args.patch_len,
        hidden_size=args.hidden,
        num_layers=args.layers,
        learning_rate=args.lr,
        budget_s=args.budget,
        batch_size=args.batch_size,
        steps_per_epoch=args.steps_per_epoch,
        patience=args.patience,
        instance_norm=not args.no_instance_norm,
        calendar=args.calendar,
        embedding_dim=args.embedding,
        quantiles=tuple(float(q) for q in args.quantiles.split(",")),
        seed=args.seed,
    )
    runs = []
    for s in settings:
        horizons = chosen or DEFAULT_HORIZONS[s]
        if args.quick and not chosen:
            horizons = {"S": (24, 96), "M": (96,), "S+cov": (96,)}[s]
        for h in horizons:
            lookback = args.lookback or default_lookback(h)
            runs.append(replace(base, setting=s, horizon=h, lookback=lookback))
    if args.quick:
        runs = [replace(r, budget_s=min(r.budget_s, 15.0)) for r in runs]
    return runs


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    runs = plan(args)
    threads = args.threads or None
    started = time.perf_counter()
    load_start = os.getloadavg()
    df = ett.load_etth1()

    header = (
        "| setting | H | lookback | lstmcast MSE / MAE | Repeat MSE / MAE | LSTMa | DeepAR | DLinear "
        "| NLinear | PatchTST | fit s (epochs, best, stop) | targets |"
    )
    lines = [header, "|" + "---|" * 12]
    print(header)
    print(lines[1])
    for run in runs:
        r = run_one(df, run, threads, args.verbose)
        line = (
            f"| {run.setting} | {run.horizon} | {run.lookback} | {r['mse']:.3f} / {r['mae']:.3f} "
            f"| {r['repeat'][0]:.3f} / {r['repeat'][1]:.3f} "
            + "".join(f"| {fmt_pub(run.setting, run.horizon, n)} " for n in ("LSTMa", "DeepAR", "DLinear"))
            + "".join(f"| {fmt_pub(run.setting, run.horizon, n)} " for n in ("NLinear", "PatchTST"))
            + f"| {r['fit_s']:.0f} ({r['epochs']}, {r['best_epoch']}, {r['stopped']}) "
            f"| {targets(run.setting, run.horizon, r['mse'], r['mae'])} |"
        )
        lines.append(line)
        print(line, flush=True)
    total = time.perf_counter() - started
    load_end = os.getloadavg()
    print(f"\ntotal {total:.0f} s; load average {load_start[0]:.2f} at start, {load_end[0]:.2f} at end")

    out = args.out or ("" if args.quick else str(RESULTS))
    if not out:
        return
    r0 = runs[0]
    command = "python benchmarks/bench_ett.py" + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:]))
    doc = [
        "# ETTh1, standard protocol (Informer / DLinear)",
        "",
        f"- date: {dt.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}",
        f"- command: `{command}`",
        f"- machine: {platform.machine()}, {os.cpu_count()} vCPU, torch {torch.__version__}, "
        f"threads {threads or torch.get_num_threads()}, no GPU; load average {load_start[0]:.2f} at start, "
        f"{load_end[0]:.2f} at end (shared machine); total {total:.0f} s",
        f"- model: patch_len {r0.patch_len}, hidden {r0.hidden_size}, layers {r0.num_layers}, "
        f"lr {r0.learning_rate}, batch {r0.batch_size}, {r0.steps_per_epoch} steps/epoch, "
        f"patience {r0.patience}, "
        f"instance_norm {r0.instance_norm}, calendar {r0.calendar}, quantiles {list(r0.quantiles)}, "
        f"seed {r0.seed}, time budget {r0.budget_s:.0f} s per fit",
        "- protocol: fit on rows [0, 11520) with val_fraction 0.25, so training targets are rows [0, 8640) "
        "and early stopping uses windows ending in [8640, 11520); P50 scored on every test window (stride 1, "
        "origins 11520 .. 14400 - H), MSE / MAE on values standardized with the train rows' mean and "
        "population std. M: the seven variables are seven series of one channel-independent model.",
        "- published figures: Informer paper (LSTMa, DeepAR), DLinear paper (DLinear, NLinear, "
        "look-back 336), PatchTST paper (PatchTST/64); see /work/shared/data/README.md.",
        "",
        *lines,
        "",
        "## Protocol check",
        "",
        *repeat_check(df),
        "",
    ]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("\n".join(doc))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
