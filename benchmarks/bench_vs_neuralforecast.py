"""lstmcast's LSTM next to neuralforecast's `LSTM`: same data, lookback, horizon, inputs and metric.

Why: neuralforecast is the obvious off-the-shelf alternative for a global LSTM, so lstmcast has to be at
least as accurate and cheaper to fit for its own existence to be worth it. Two comparisons:

- converged: each trained to its own stopping rule. lstmcast with the settings its benchmark chose on
  validation (bench_pasta.py, bench_ett.py: early stopping and an epoch cap); neuralforecast with its
  defaults (max_steps 1000, validation every 100 steps) plus early stopping (patience 5 validations) on
  the same validation tail, and no time limit.
- equal_time: neuralforecast again, stopped (`max_time`) after as many seconds as lstmcast's converged
  fit of the same seed and window took.

Data sets:
- pasta_sales (benchmarks/pasta.py, fev `hierarchical_sales_1D`): H=28, the lookback of the chosen
  lstmcast setting, one fit per scored window on the rows before its cutoff (windows 0, 4 and 9 of the
  10 by default); known-future inputs for both: sin/cos day-of-week and day-of-year (no promotion flags:
  they leak the target); absent days forward-filled in the inputs and skipped by the metric; median /
  MAE-trained point forecast clipped at 0; MASE and WAPE.
- ETTh1 (benchmarks/ett.py), setting S (OT in, OT out), H=96, lookback 336: both fit on the rows before
  the test part with the protocol's validation rows held out for early stopping, and score every test
  window on standardized values (MSE / MAE).

Every (data set, model, mode, seed) runs in its own subprocess with one torch thread; its result is
appended to benchmarks/results/vs_neuralforecast.jsonl as soon as it finishes, and a later invocation
skips the runs found there, so the long neuralforecast fits (tens of minutes each on 2 cores) can run in
the background across sessions. The report is rebuilt from that file every time.

Run (from the repository root; needs the `bench` extra: pip install -e '.[bench]'):
    .venv/bin/python -m benchmarks.bench_vs_neuralforecast                 # everything, resumable
    .venv/bin/python -m benchmarks.bench_vs_neuralforecast --report        # only rebuild the report
    .venv/bin/python -m benchmarks.bench_vs_neuralforecast --quick         # smoke run, writes nothing
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import ROOT, command_line, peak_rss_mib, result_path, run_module, write_result
from benchmarks.selection import DEFAULT_SEEDS, mean_std

RESULTS = result_path("vs_neuralforecast.md")
RUNS = result_path("vs_neuralforecast.jsonl")
ETT_HORIZON, ETT_LOOKBACK = 96, 336
PASTA_WINDOWS = (0, 4, 9)
NF_PATIENCE, NF_VAL_CHECK, NF_STEPS, NF_SCALER = 5, 100, 1000, "robust"
# lstmcast's settings: the candidates its own benchmarks chose on validation (benchmarks/results/): on
# pasta the 128-wide model as an ensemble of 3 seeds, on ETTh1 S H=96 the MSE loss with the linear start.
PASTA_CHOICE, PASTA_ENSEMBLE = "hidden-128", 3
ETT_CHOICE = "mse+linear"


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


def nf_lstm(h: int, input_size: int, seed: int, max_time: float | None, **extra: Any) -> Any:
    from neuralforecast.models import LSTM

    return LSTM(
        h=h, input_size=input_size, scaler_type=NF_SCALER, max_steps=NF_STEPS, val_check_steps=NF_VAL_CHECK,
        early_stop_patience_steps=NF_PATIENCE, random_seed=seed,
        max_time=dt.timedelta(seconds=max_time) if max_time else None, **extra, **quiet_lightning(),
    )  # fmt: skip


# --------------------------------------------------------------------------- pasta
def pasta_worker(model: str, seed: int, windows: list[int], budgets: list[float] | None) -> dict[str, Any]:
    from benchmarks import bench_pasta, pasta

    data = bench_pasta.load_data()
    cuts = [pasta.cutoffs(data.n_steps)[k] for k in windows]
    settings = replace(bench_pasta.CANDIDATES[PASTA_CHOICE], ensemble=PASTA_ENSEMBLE)
    fit_s: list[float] = []
    steps: list[int] = []
    if model == "lstmcast":
        group = bench_pasta.seed_groups([seed], settings.ensemble)[0]

        def forecast(_data: pasta.PastaData, cut: int) -> np.ndarray:
            parts: list[float] = []
            jobs = [(settings, s, cut, (cut,)) for s in group]
            preds = bench_pasta.run_jobs(jobs, 1, 1, parts)  # one torch thread, in this process
            fit_s.append(sum(parts))  # the ensemble's fits together are one forecast's fit time
            return np.clip(np.mean(preds, axis=0), 0.0, None)[:, 0]  # the mean of medians, clipped at 0

        score = pasta.evaluate(forecast, data, cuts)
        config = f"{PASTA_CHOICE} x{PASTA_ENSEMBLE} (seeds {group}): {settings.describe()}"
    else:
        from neuralforecast import NeuralForecast

        names, fut = bench_pasta.future_covariates(settings, data)
        ids = np.array(data.series_ids)

        def frame(start: int, stop: int, with_y: bool) -> pd.DataFrame:
            n, t = data.n_series, stop - start
            df = pd.DataFrame({"unique_id": np.repeat(ids, t), "ds": np.tile(data.dates[start:stop], n)})
            if with_y:
                df["y"] = pasta.fill_missing(data.qty[:, :stop])[:, start:].ravel()
            for j, col in enumerate(names):
                df[col] = fut[:, start:stop, j].ravel()
            return df

        def forecast(d: pasta.PastaData, cut: int) -> np.ndarray:
            budget = budgets[len(fit_s)] if budgets else None
            nf_model = nf_lstm(pasta.HORIZON, settings.lookback, seed, budget, futr_exog_list=list(names))
            nf = NeuralForecast(models=[nf_model], freq=pasta.FREQ)
            t0 = time.perf_counter()
            nf.fit(df=frame(0, cut, with_y=True), val_size=pasta.HORIZON)
            fit_s.append(time.perf_counter() - t0)
            steps.append(trained_steps(nf))
            out = nf.predict(futr_df=frame(cut, cut + pasta.HORIZON, with_y=False))
            wide = out.pivot(index="unique_id", columns="ds", values="LSTM").loc[ids]
            return np.clip(wide.to_numpy(np.float64), 0.0, None)

        score = pasta.evaluate(forecast, data, cuts)
        config = (
            f"LSTM defaults, input_size {settings.lookback}, max_steps {NF_STEPS}, scaler_type {NF_SCALER}, "
            f"val_size 28, early_stop_patience_steps {NF_PATIENCE} (val every {NF_VAL_CHECK} steps), "
            f"futr_exog_list {list(names)}"
        )
    return {"accuracy": {"MASE": score.mase, "WAPE": score.wape}, "fit_s": fit_s, "steps": steps,
            "config": config}  # fmt: skip


# --------------------------------------------------------------------------- ETTh1
def etth1_worker(model: str, seed: int, budgets: list[float] | None) -> dict[str, Any]:
    from benchmarks import bench_ett, ett

    df = ett.load_etth1()
    origins = ett.test_origins(ETT_HORIZON)
    cand = bench_ett.CANDIDATES[ETT_CHOICE]
    if model == "lstmcast":
        result, fit_s = bench_ett.fit_one(df, "S", ETT_HORIZON, cand, seed, 1)
        mse, mae = bench_ett.score(df, "S", result, origins)
        return {
            "accuracy": {"MSE": mse, "MAE": mae}, "fit_s": [fit_s],
            "steps": [(len(result.history) - 1) * cand.steps_per_epoch],
            "config": f"{ETT_CHOICE}: {cand.describe()}; {len(result.history) - 1} epochs, best epoch "
            f"{result.best_epoch} (0 = the linear skip path alone)",
        }  # fmt: skip
    from neuralforecast import NeuralForecast

    values = df[[ett.TARGET]].to_numpy(np.float64)
    scaled = ett.TrainScaler.fit(values).transform(values)[:, 0]  # standardized OT, all rows
    truth = ett.truth_windows(scaled[:, None], origins, ETT_HORIZON)  # (n, H, 1)
    end, n_val = ett.VAL[1], ett.VAL[1] - ett.VAL[0]
    dates = pd.DatetimeIndex(df["date"])
    nf = NeuralForecast(models=[nf_lstm(ETT_HORIZON, ETT_LOOKBACK, seed, budgets[0] if budgets else None)],
                        freq="h")  # fmt: skip
    t0 = time.perf_counter()
    nf.fit(df=pd.DataFrame({"unique_id": ett.TARGET, "ds": dates[:end], "y": scaled[:end]}), val_size=n_val)
    fit_s = time.perf_counter() - t0
    # Every test window as its own series holding the lookback before its origin: one batched predict.
    idx = origins[:, None] - ETT_LOOKBACK + np.arange(ETT_LOOKBACK)  # (n, lookback)
    wid = np.array([f"w{i:05d}" for i in range(len(origins))])
    test_df = pd.DataFrame(
        {"unique_id": np.repeat(wid, ETT_LOOKBACK), "ds": dates[idx.ravel()], "y": scaled[idx.ravel()]}
    )
    out = nf.predict(df=test_df).sort_values(["unique_id", "ds"])
    pred = out["LSTM"].to_numpy(np.float64).reshape(len(origins), ETT_HORIZON)
    mse, mae = ett.evaluate(pred[:, :, None], truth)
    return {
        "accuracy": {"MSE": mse, "MAE": mae}, "fit_s": [fit_s], "steps": [trained_steps(nf)],
        "config": f"LSTM defaults, input_size {ETT_LOOKBACK}, max_steps {NF_STEPS}, scaler_type {NF_SCALER}, "
        f"val_size {n_val}, early_stop_patience_steps {NF_PATIENCE} (val every {NF_VAL_CHECK} steps)",
    }  # fmt: skip


# --------------------------------------------------------------------------- driver
def key(run: dict[str, Any]) -> tuple:
    """What makes a run: a run recorded with another lstmcast choice is not this one."""
    return (run["dataset"], run["model"], run["mode"], run["seed"], tuple(run.get("windows", ())),
            run.get("choice"))  # fmt: skip


def choice(dataset: str) -> str:
    return f"{PASTA_CHOICE} x{PASTA_ENSEMBLE}" if dataset == "pasta" else ETT_CHOICE


def load_runs(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def spawn(job: dict[str, Any], budgets: list[float] | None) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    spec = json.dumps({**job, "budgets": budgets})
    proc = run_module(__spec__.name, "--worker", spec, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"worker {job} failed (exit {proc.returncode}):\n{tail}")
    return json.loads(lines[-1].removeprefix("RESULT "))


def run_worker(spec: str) -> None:
    import torch

    job = json.loads(spec)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if job["dataset"] == "pasta":
        out = pasta_worker(job["model"], job["seed"], job["windows"], job["budgets"])
    else:
        out = etth1_worker(job["model"], job["seed"], job["budgets"])
    out.update(wall_s=time.perf_counter() - t0, peak_rss_mib=peak_rss_mib())
    print("RESULT " + json.dumps(out), flush=True)


def report(runs: list[dict[str, Any]], datasets: list[str]) -> list[str]:
    lines = [
        "| data set | mode | model | accuracy (mean ± std over seeds) | seeds | fit s per fit (mean) | "
        "steps trained | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for dataset in datasets:
        rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in runs:
            if r["dataset"] == dataset and r.get("choice") == choice(dataset):
                rows.setdefault((r["mode"], r["model"]), []).append(r)
        for (mode, model), rs in sorted(rows.items()):
            metrics = list(rs[0]["accuracy"])
            acc = " / ".join(mean_std([r["accuracy"][m] for r in rs]) for m in metrics)
            fit = np.mean([np.mean(r["fit_s"]) for r in rs])
            steps = ", ".join(str(s) for r in rs for s in r["steps"])
            lines.append(
                f"| {dataset} ({' / '.join(metrics)}) | {mode} | {model} | {acc} | {len(rs)} | {fit:.1f} "
                f"| {steps} | {max(r['peak_rss_mib'] for r in rs):.0f} |"
            )
        ours, theirs = rows.get(("converged", "lstmcast")), rows.get(("converged", "neuralforecast"))
        if ours and theirs:
            metric = next(iter(ours[0]["accuracy"]))
            a = float(np.mean([r["accuracy"][metric] for r in ours]))
            b = float(np.mean([r["accuracy"][metric] for r in theirs]))
            ratio = np.mean([np.mean(r["fit_s"]) for r in ours]) / np.mean(
                [np.mean(r["fit_s"]) for r in theirs]
            )
            verdicts.append(
                f"- {dataset}, converged: lstmcast {metric} {a:.4f} vs neuralforecast {b:.4f} (at least as "
                f"accurate: {'met' if a <= b else 'NOT met'}); fit time ratio {ratio:.2f} (<= 0.5: "
                f"{'met' if ratio <= 0.5 else 'NOT met'}); seeds {len(ours)} and {len(theirs)}"
            )
    configs = sorted({f"- {r['dataset']} {r['model']}: {r['config']}" for r in runs})
    return [*lines, "", *verdicts, "", "Configurations:", "", *configs]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", choices=("etth1", "pasta"), default=["etth1", "pasta"])
    p.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS))
    p.add_argument("--pasta-windows", type=int, nargs="+", default=list(PASTA_WINDOWS))
    p.add_argument(
        "--modes", nargs="+", choices=("converged", "equal_time"), default=["converged", "equal_time"]
    )
    p.add_argument("--report", action="store_true", help="only rebuild the report from the runs file")
    p.add_argument("--quick", action="store_true", help="pasta window 9, seed 0, writes nothing")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def run_missing(args: argparse.Namespace, runs: list[dict[str, Any]], runs_file: Path) -> None:
    """Every requested run not in `runs` yet, each appended to `runs` and to `runs_file` as it finishes.
    An equal-time run needs lstmcast's converged fit times of its seed: recorded ones, else a fresh run."""
    done = {key(r) for r in runs}
    for seed in args.seeds:
        for dataset in args.datasets:
            windows = args.pasta_windows if dataset == "pasta" else []
            base = {"dataset": dataset, "seed": seed, "windows": windows, "choice": choice(dataset)}
            ours = {**base, "model": "lstmcast", "mode": "converged"}
            jobs = [ours] + [{**base, "model": "neuralforecast", "mode": m} for m in args.modes]
            for job in jobs:
                if key(job) in done:
                    continue
                budgets = None
                if job["mode"] == "equal_time":
                    mine = [r for r in runs if key(r) == key(ours)]
                    if not mine:
                        mine = [{**ours, **spawn(ours, None)}]
                    budgets = mine[0]["fit_s"]
                t0 = time.perf_counter()
                result = {**job, **spawn(job, budgets), "date": dt.datetime.now().astimezone().isoformat(
                    timespec="seconds"), "load_avg": os.getloadavg()[0]}  # fmt: skip
                runs.append(result)
                done.add(key(job))
                with runs_file.open("a") as f:
                    f.write(json.dumps(result) + "\n")
                acc = ", ".join(f"{k} {v:.4f}" for k, v in result["accuracy"].items())
                print(f"{dataset} {job['model']} {job['mode']} seed {seed}: {acc}, fit "
                      f"{sum(result['fit_s']):.0f} s, steps {result['steps']} "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        run_worker(args.worker)
        return
    import neuralforecast
    import torch

    runs_file = Path("/dev/null") if args.quick else RUNS
    if args.quick:
        args.datasets, args.seeds, args.pasta_windows, args.modes = ["pasta"], [0], [9], ["equal_time"]
    runs = [] if args.quick else load_runs(runs_file)
    started, load0 = time.perf_counter(), os.getloadavg()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load0[0]:.2f}, torch "
        f"{torch.__version__}, neuralforecast {neuralforecast.__version__}, 1 torch thread per run; "
        f"{len(runs)} runs already in {runs_file}",
        flush=True,
    )
    if not args.report:
        run_missing(args, runs, runs_file)
    lines = report(runs, args.datasets)
    total = time.perf_counter() - started
    print("\n".join(["", *lines, "", f"total wall time {total:.0f} s"]))
    if args.quick:
        return
    write_result(RESULTS, [
        "# lstmcast LSTM vs neuralforecast LSTM",
        "",
        f"- report built: {dt.datetime.now().astimezone().isoformat(timespec='seconds')} from "
        f"`{RUNS.relative_to(ROOT)}` ({len(runs)} runs; each run's date and load average are there)",
        f"- command: `{command_line(__spec__.name, [])}` (resumable)",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"neuralforecast {neuralforecast.__version__}, 1 torch thread per run, each run in its own "
        "subprocess (peak RSS = its ru_maxrss); other benchmarks shared the 2 cores during some runs, so "
        "fit seconds carry that noise; accuracy does not depend on it (no wall-clock stop in converged runs)",
        f"- pasta windows {args.pasta_windows} of the 10 (0 = oldest); ETTh1 S H={ETT_HORIZON}, "
        "all test windows",
        "",
        *lines,
        "",
    ])  # fmt: skip


if __name__ == "__main__":
    main()
