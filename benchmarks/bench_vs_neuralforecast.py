"""lstmcast's LSTM next to neuralforecast's `LSTM` on the same data, protocol, horizon and lookback.

Why: neuralforecast is the obvious off-the-shelf alternative for a global LSTM, so lstmcast has to be
at least as accurate and cheaper to fit for its own existence to be worth it. Each (data set, model)
runs in its own subprocess, so the peak RSS reported is that model's alone (ru_maxrss of the worker,
which includes the interpreter and the libraries each one imports).

- pasta_sales (benchmarks/pasta.py, fev `hierarchical_sales_1D`): H=28, lookback 84, one fit per window
  on the rows before its cutoff; known-future inputs for both: the promotion flag and sin/cos
  day-of-week/day-of-year (neuralforecast `futr_exog_list`); absent days forward-filled in the inputs,
  skipped by the metric; median / MAE-trained point forecast clipped at 0; MASE and WAPE.
- ETTh1 (benchmarks/ett.py), setting S (OT in, OT out), H=96, lookback 336: both fit on the rows before
  the test part, with the protocol's validation rows held out for early stopping; both score the same
  test windows on standardized values (MSE / MAE); `--ett-stride k` keeps every k-th window.

Both use `--threads` torch threads (1 by default: on this shared 2-core machine two threads ran slower).
neuralforecast runs with its defaults except: max_steps (`--nf-steps`), scaler_type, early stopping on
ETTh1, and quiet Lightning trainer flags.

Run (from the repository root; needs the `bench` extra: pip install -e '.[bench]'):
    .venv/bin/python benchmarks/bench_vs_neuralforecast.py
    .venv/bin/python benchmarks/bench_vs_neuralforecast.py --quick     # smoke run, writes nothing
Writes benchmarks/results/vs_neuralforecast.md (not with --quick unless --out is given).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project root, for lstm_model and benchmarks

RESULTS = ROOT / "benchmarks" / "results" / "vs_neuralforecast.md"
ETT_HORIZON, ETT_LOOKBACK = 96, 336
PASTA_LOOKBACK = 84
MODELS = ("lstmcast", "neuralforecast")
DATASETS = ("pasta", "etth1")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def quiet_lightning() -> dict[str, Any]:
    """Trainer flags that keep Lightning from printing progress bars, summaries and log files."""
    for name in ("pytorch_lightning", "lightning_fabric", "lightning", "neuralforecast"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    return {
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": False,
        "enable_checkpointing": False,
        "accelerator": "cpu",
        "devices": 1,
    }


def trained_steps(nf: Any) -> int:
    """Optimizer steps neuralforecast's (only) model took, -1 if Lightning no longer exposes them."""
    trajectory = getattr(nf.models[0], "train_trajectories", None)  # [(step, loss), ...] per training step
    return int(trajectory[-1][0]) + 1 if trajectory else -1


# --------------------------------------------------------------------------- pasta
def pasta_worker(model: str, args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import bench_pasta, pasta

    data = pasta.load()
    cuts = pasta.cutoffs(data.n_steps)
    if args.pasta_windows:
        cuts = [cuts[k] for k in args.pasta_windows]
    if model == "lstmcast":
        settings = bench_pasta.settings_from(bench_pasta.parse_args(["--budget", str(args.lstm_budget)]))
        forecaster = bench_pasta.LSTMForecaster(settings, args.threads)
        score = pasta.evaluate(forecaster, data, cuts)
        return {
            "accuracy": {"MASE": score.mase, "WAPE": score.wape},
            "fit_s": float(np.sum(forecaster.fit_s)),
            "fit_cpu_s": float(np.sum(forecaster.fit_cpu_s)),
            "predict_s": float(np.sum(forecaster.predict_s)),
            "config": f"bench_pasta defaults, budget {args.lstm_budget:g} s/fit, "
            f"epochs {','.join(map(str, forecaster.epochs))}",
        }

    from neuralforecast import NeuralForecast
    from neuralforecast.models import LSTM

    trainer = quiet_lightning()
    names, fut = bench_pasta.future_covariates(data, calendar=True)
    exog = list(names)
    ids = np.array(data.series_ids)
    timing = {"fit": 0.0, "fit_cpu": 0.0, "predict": 0.0}
    steps: list[int] = []

    def frame(start: int, stop: int, with_y: bool) -> pd.DataFrame:
        n, t = data.n_series, stop - start
        df = pd.DataFrame({"unique_id": np.repeat(ids, t), "ds": np.tile(data.dates[start:stop], n)})
        if with_y:
            df["y"] = pasta.fill_missing(data.qty[:, :stop])[:, start:].ravel()
        for j, col in enumerate(exog):
            df[col] = fut[:, start:stop, j].ravel()
        return df

    def forecast(data_: pasta.PastaData, cut: int) -> np.ndarray:
        nf_model = LSTM(
            h=pasta.HORIZON,
            input_size=PASTA_LOOKBACK,
            futr_exog_list=exog,
            scaler_type=args.nf_scaler,
            max_steps=args.nf_steps,
            random_seed=1,
            max_time=dt.timedelta(seconds=args.nf_time_factor * args.lstm_budget),
            **trainer,
        )
        nf = NeuralForecast(models=[nf_model], freq=pasta.FREQ)
        t0, c0 = time.perf_counter(), time.process_time()
        nf.fit(df=frame(0, cut, with_y=True))
        t1 = time.perf_counter()
        timing["fit_cpu"] += time.process_time() - c0
        steps.append(trained_steps(nf))
        out = nf.predict(futr_df=frame(cut, cut + pasta.HORIZON, with_y=False))
        timing["predict"] += time.perf_counter() - t1
        timing["fit"] += t1 - t0
        wide = out.pivot(index="unique_id", columns="ds", values="LSTM").loc[ids]
        return np.clip(wide.to_numpy(np.float64), 0.0, None)

    score = pasta.evaluate(forecast, data, cuts)
    return {
        "accuracy": {"MASE": score.mase, "WAPE": score.wape},
        "fit_s": timing["fit"],
        "fit_cpu_s": timing["fit_cpu"],
        "predict_s": timing["predict"],
        "config": f"LSTM defaults, max_steps {args.nf_steps}, max_time {args.nf_time_factor:g} x lstmcast "
        f"budget, scaler_type {args.nf_scaler}, futr_exog_list {exog}; "
        f"steps trained {','.join(map(str, steps))}",
    }


# --------------------------------------------------------------------------- ETTh1
def etth1_worker(model: str, args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks import ett

    df = ett.load_etth1()
    values = df[[ett.TARGET]].to_numpy(np.float64)
    scaled = ett.TrainScaler.fit(values).transform(values)[:, 0]  # standardized OT, all rows
    origins = ett.test_origins(ETT_HORIZON)[:: args.ett_stride]
    truth = ett.truth_windows(scaled[:, None], origins, ETT_HORIZON)  # (n, H, 1)
    end = ett.VAL[1]  # fit on rows [0, 11520): train, plus validation rows for early stopping
    n_val = ett.VAL[1] - ett.VAL[0]

    if model == "lstmcast":
        from lstm_model import ModelConfig, Panel, TrainConfig, fit, predict_origins

        def panel(stop: int) -> Panel:
            return Panel(
                series_ids=(ett.TARGET,),
                target=(scaled[:stop],),
                past_covariates=(np.empty((stop, 0)),),
                future_covariates=(np.empty((stop, 0)),),
            )

        model_cfg = ModelConfig(
            lookback=ETT_LOOKBACK,
            horizon=ETT_HORIZON,
            hidden_size=64,
            num_layers=1,
            patch_len=24,
            quantiles=(0.5,),
        )
        train_cfg = TrainConfig(
            max_epochs=1000,
            steps_per_epoch=50,
            batch_size=128,
            learning_rate=1e-3,
            patience=6,
            val_fraction=n_val / end,
            time_budget_s=args.lstm_ett_budget,
            threads=args.threads,
            calibrate=False,
        )
        t0, c0 = time.perf_counter(), time.process_time()
        result = fit(panel(end), model_cfg, train_cfg)
        t1, fit_cpu_s = time.perf_counter(), time.process_time() - c0
        pred = predict_origins(result, panel(ett.TEST[1]), origins)[0, :, :, 0]  # (n, H)
        predict_s = time.perf_counter() - t1
        mse, mae = ett.evaluate(pred[:, :, None], truth)
        return {
            "accuracy": {"MSE": mse, "MAE": mae},
            "fit_s": t1 - t0,
            "fit_cpu_s": fit_cpu_s,
            "predict_s": predict_s,
            "config": f"lookback {ETT_LOOKBACK}, patch_len 24, hidden 64, 1 layer, lr 1e-3, batch 128, "
            f"patience 6, budget {args.lstm_ett_budget:g} s, median only; {len(result.history)} epochs "
            f"(best {result.best_epoch}, {result.stopped_reason})",
        }

    from neuralforecast import NeuralForecast
    from neuralforecast.models import LSTM

    trainer = quiet_lightning()
    dates = pd.DatetimeIndex(df["date"])
    train_df = pd.DataFrame({"unique_id": ett.TARGET, "ds": dates[:end], "y": scaled[:end]})
    nf_model = LSTM(
        h=ETT_HORIZON,
        input_size=ETT_LOOKBACK,
        scaler_type=args.nf_scaler,
        max_steps=args.nf_steps,
        val_check_steps=args.nf_val_check,
        early_stop_patience_steps=args.nf_patience,
        random_seed=1,
        max_time=dt.timedelta(seconds=args.nf_time_factor * args.lstm_ett_budget),
        **trainer,
    )
    nf = NeuralForecast(models=[nf_model], freq="h")
    t0, c0 = time.perf_counter(), time.process_time()
    nf.fit(df=train_df, val_size=n_val)
    t1, fit_cpu_s = time.perf_counter(), time.process_time() - c0
    # Every test window as its own series holding the lookback before its origin: one batched predict.
    idx = origins[:, None] - ETT_LOOKBACK + np.arange(ETT_LOOKBACK)  # (n, lookback)
    wid = np.array([f"w{i:05d}" for i in range(len(origins))])
    test_df = pd.DataFrame(
        {"unique_id": np.repeat(wid, ETT_LOOKBACK), "ds": dates[idx.ravel()], "y": scaled[idx.ravel()]}
    )
    out = nf.predict(df=test_df)
    predict_s = time.perf_counter() - t1
    out = out.sort_values(["unique_id", "ds"])
    pred = out["LSTM"].to_numpy(np.float64).reshape(len(origins), ETT_HORIZON)
    mse, mae = ett.evaluate(pred[:, :, None], truth)
    return {
        "accuracy": {"MSE": mse, "MAE": mae},
        "fit_s": t1 - t0,
        "fit_cpu_s": fit_cpu_s,
        "predict_s": predict_s,
        "config": f"LSTM defaults, input_size {ETT_LOOKBACK}, max_steps {args.nf_steps}, max_time "
        f"{args.nf_time_factor:g} x lstmcast budget, scaler_type {args.nf_scaler}, val_size {n_val}, "
        f"early_stop_patience_steps {args.nf_patience} (val every {args.nf_val_check} steps); "
        f"steps trained {trained_steps(nf)}",
    }


# --------------------------------------------------------------------------- driver
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--pasta-windows", type=int, nargs="*", help="window numbers (default: all 10)")
    p.add_argument("--ett-stride", type=int, default=1, help="score every k-th ETTh1 test window")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lstm-budget", type=float, default=60.0, help="lstmcast seconds per pasta fit")
    p.add_argument("--lstm-ett-budget", type=float, default=60.0, help="lstmcast seconds for the ETTh1 fit")
    p.add_argument("--nf-steps", type=int, default=1000, help="neuralforecast max_steps (its default: 1000)")
    p.add_argument(
        "--nf-time-factor",
        type=float,
        default=2.0,
        help="neuralforecast max_time = this x lstmcast's budget per fit (its max_steps cannot finish here)",
    )
    p.add_argument("--nf-scaler", default="robust", help="neuralforecast scaler_type (its default: robust)")
    p.add_argument("--nf-patience", type=int, default=5, help="ETTh1 early_stop_patience_steps (validations)")
    p.add_argument("--nf-val-check", type=int, default=100, help="ETTh1 val_check_steps")
    p.add_argument("--quick", action="store_true", help="1 pasta window, ETTh1 stride 16, short fits")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--worker", nargs=2, metavar=("DATASET", "MODEL"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.pasta_windows = args.pasta_windows or [9]
        args.ett_stride = max(args.ett_stride, 16)
        args.lstm_budget = min(args.lstm_budget, 15.0)
        args.lstm_ett_budget = min(args.lstm_ett_budget, 15.0)
        args.nf_steps = min(args.nf_steps, 100)
    return args


def run_worker(dataset: str, model: str, args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    rss_start = peak_rss_mib()
    t0 = time.perf_counter()
    out = (pasta_worker if dataset == "pasta" else etth1_worker)(model, args)
    out.update(wall_s=time.perf_counter() - t0, peak_rss_mib=peak_rss_mib(), rss_after_imports_mib=rss_start)
    print("RESULT " + json.dumps(out), flush=True)


def spawn(dataset: str, model: str, argv: list[str]) -> dict[str, Any]:
    threads = str(parse_args(argv).threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", dataset, model]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"worker {dataset}/{model} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def fmt_acc(acc: dict[str, float]) -> str:
    return " / ".join(f"{v:.4f}" for v in acc.values())


def verdicts(dataset: str, res: dict[str, dict[str, Any]]) -> str:
    if not all(m in res for m in MODELS):
        return ""
    ours, theirs = res["lstmcast"], res["neuralforecast"]
    key = next(iter(ours["accuracy"]))  # MASE or MSE: lower is better
    acc_ok = all(ours["accuracy"][k] <= theirs["accuracy"][k] for k in ours["accuracy"])
    ratio = ours["fit_s"] / theirs["fit_s"]
    cpu_ratio = ours["fit_cpu_s"] / theirs["fit_cpu_s"]
    return (
        f"- {dataset}: lstmcast at least as accurate on every metric ({key} {ours['accuracy'][key]:.4f} vs "
        f"{theirs['accuracy'][key]:.4f}): {acc_ok}; fit time ratio lstmcast/neuralforecast {ratio:.2f} wall, "
        f"{cpu_ratio:.2f} CPU (target <= 0.5): {ratio <= 0.5 and cpu_ratio <= 0.5}"
    )


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        run_worker(args.worker[0], args.worker[1], args)
        return
    import neuralforecast
    import torch

    started = time.perf_counter()
    load0 = os.getloadavg()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load0[0]:.2f}, torch "
        f"{torch.__version__}, neuralforecast {neuralforecast.__version__}, {args.threads} torch thread(s)"
    )
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for dataset in args.datasets:
        for model in args.models:
            t0 = time.perf_counter()
            res = spawn(dataset, model, argv)
            results.setdefault(dataset, {})[model] = res
            print(
                f"{dataset} {model}: {fmt_acc(res['accuracy'])}, fit {res['fit_s']:.1f} s "
                f"({res['fit_cpu_s']:.1f} CPU s), predict "
                f"{res['predict_s']:.2f} s, peak RSS {res['peak_rss_mib']:.0f} MiB "
                f"(subprocess {time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.2f})",
                flush=True,
            )
    n_pasta = len(args.pasta_windows) if args.pasta_windows else 10
    n_ett = len(range(0, 14400 - 11520 - ETT_HORIZON + 1, args.ett_stride))
    lines = [
        "| data set | model | accuracy | fit s wall (CPU) | predict s | peak RSS MiB (after imports) "
        "| configuration |",
        "|---|---|---|---|---|---|---|",
    ]
    for dataset, per_model in results.items():
        label = (
            f"pasta, {n_pasta} window(s), MASE / WAPE"
            if dataset == "pasta"
            else f"ETTh1 S H={ETT_HORIZON}, {n_ett} test windows, MSE / MAE"
        )
        for model, r in per_model.items():
            lines.append(
                f"| {label} | {model} | {fmt_acc(r['accuracy'])} | {r['fit_s']:.1f} ({r['fit_cpu_s']:.1f}) | "
                f"{r['predict_s']:.2f} | "
                f"{r['peak_rss_mib']:.0f} ({r['rss_after_imports_mib']:.0f}) | {r['config']} |"
            )
    checks = [v for d, per_model in results.items() if (v := verdicts(d, per_model))]
    total = time.perf_counter() - started
    load1 = os.getloadavg()
    print("\n".join(["", *lines, "", *checks, f"total wall time {total:.0f} s, load average {load1[0]:.2f}"]))

    out = args.out or (None if args.quick else RESULTS)
    if out is None:
        return
    body = [
        "# lstmcast LSTM vs neuralforecast LSTM",
        "",
        f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        "- command: `.venv/bin/python benchmarks/bench_vs_neuralforecast.py"
        + (f" {shlex.join(argv)}`" if argv else "`"),
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs (shared), torch {torch.__version__}, "
        f"neuralforecast {neuralforecast.__version__}, {args.threads} torch thread(s) per model; "
        f"load average {load0[0]:.2f} at start, {load1[0]:.2f} at end; total {total:.0f} s",
        "- each model in its own subprocess; peak RSS = ru_maxrss of that subprocess",
        "",
        *lines,
        "",
        *checks,
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(body))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
