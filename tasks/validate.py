"""Validate: rolling-origin backtest of the LSTM against naive baselines on the same folds."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_table_artifact

from lstm_model.backtest import backtest, summarize
from lstm_model.panel import Panel
from tasks._log import stage_logger
from tasks.clean import write_parquet_atomic
from tasks.config import PipelineConfig

METRICS = ("mae", "rmse", "smape", "mase")


@dataclass(frozen=True)
class ValidateResult:
    path: str
    summary: dict[str, dict[str, float]]  # model -> metric -> mean over series and folds
    folds: int
    series: int
    seconds: float


def load_panel(cfg: PipelineConfig, history_path: str) -> Panel:
    frame = pd.read_parquet(history_path)
    return Panel.from_frame(
        frame, series_col="series_id", time_col="ts", target_col=cfg.source.target,
        past=cfg.source.covariates, future=cfg.source.future_covariates,
    )  # fmt: skip


def run_backtest(cfg: PipelineConfig, history_path: str) -> ValidateResult:
    started = time.perf_counter()
    log = stage_logger()
    panel = load_panel(cfg, history_path)
    folds = backtest(
        panel, cfg.model_config_for_lstm(), cfg.train_config(),
        n_folds=cfg.forecast.folds, season_length=cfg.data.season_length,
        on_fold=lambda i, n: log.info("backtest fold %d/%d", i, n),
    )  # fmt: skip
    path = Path(history_path).with_name("backtest.parquet")
    write_parquet_atomic(folds, path)
    table = summarize(folds)
    summary = {model: {m: float(row[m]) for m in METRICS} for model, row in table.iterrows()}
    return ValidateResult(
        path=str(path),
        summary=summary,
        folds=int(folds["fold"].nunique()),
        series=int(folds["series_id"].nunique()),
        seconds=round(time.perf_counter() - started, 3),
    )


def metrics_table(summary: dict[str, dict[str, float]]) -> list[dict[str, object]]:
    return [{"model": model, **{m: round(v, 4) for m, v in row.items()}} for model, row in summary.items()]


@task
def validate(cfg: PipelineConfig, history_path: str) -> ValidateResult:
    result = run_backtest(cfg, history_path)
    create_table_artifact(
        metrics_table(result.summary),
        key=f"{cfg.name}-backtest".lower().replace("_", "-").replace(".", "-"),
        description=f"Backtest over {result.folds} rolling-origin folds, mean over series and folds",
    )
    return result
